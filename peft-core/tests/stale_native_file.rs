//! A projected prefix keeps its MLP in `peft_rs_adapter.safetensors` beside PEFT's table. When
//! Python's `peft` re-saves the table (after training further, say), the native file is stale:
//! loading must give the PEFT table, not silently the old MLP's projection.

use std::path::{Path, PathBuf};

use peft_core::{ModelShape, PeftAdapter};
use peft_runtime::ComputeBackend;
use safetensors::tensor::TensorView;

const SHAPE: ModelShape = ModelShape {
    d_model: 32,
    n_layer: 2,
    n_head: 4,
};

fn copy_fixture(dir: &Path) {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/rust-adapters/prefix-projection");
    for entry in std::fs::read_dir(fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
}

fn table(adapter: &PeftAdapter) -> Vec<f32> {
    adapter
        .peft_table()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn a_re_saved_peft_table_wins_over_a_stale_native_file() {
    let device = ComputeBackend::Flex.device().unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let intact = PeftAdapter::load(dir.path(), SHAPE, &device).unwrap();
    assert!(
        intact.has_reparameterisation(),
        "the MLP loads for resuming"
    );

    // PEFT writes a different table (here: the old one plus 0.5 everywhere).
    let shifted: Vec<f32> = table(&intact).iter().map(|v| v + 0.5).collect();
    let bytes: Vec<u8> = shifted.iter().flat_map(|v| v.to_le_bytes()).collect();
    let shape = intact.peft_table().dims().to_vec();
    let view = TensorView::new(safetensors::Dtype::F32, shape, &bytes).unwrap();
    std::fs::write(
        dir.path().join("adapter_model.safetensors"),
        safetensors::serialize([("prompt_embeddings", view)], None).unwrap(),
    )
    .unwrap();

    let reloaded = PeftAdapter::load(dir.path(), SHAPE, &device).unwrap();
    assert!(!reloaded.has_reparameterisation());
    assert_eq!(table(&reloaded), shifted);
}

/// The native file rewritten in half precision (by a tool that halves every safetensors file it
/// finds, say): the MLP still loads for resuming, in f32 as the trainable parameters always
/// are, and its table is the saved one within f16's rounding.
#[test]
fn a_native_file_in_half_precision_loads_in_f32() {
    let device = ComputeBackend::Flex.device().unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    let intact = PeftAdapter::load(dir.path(), SHAPE, &device).unwrap();

    let native = dir.path().join(peft_core::adapter::NATIVE_FILE);
    let bytes = std::fs::read(&native).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let halved: Vec<(String, Vec<u8>, Vec<usize>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32);
            let halves = view
                .data()
                .chunks_exact(4)
                .flat_map(|b| {
                    let value = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    burn::tensor::f16::from_f32(value).to_le_bytes()
                })
                .collect();
            (name, halves, view.shape().to_vec())
        })
        .collect();
    let views = halved.iter().map(|(name, data, shape)| {
        let view = TensorView::new(safetensors::Dtype::F16, shape.clone(), data).unwrap();
        (name.clone(), view)
    });
    std::fs::write(&native, safetensors::serialize(views, None).unwrap()).unwrap();

    let reloaded = PeftAdapter::load(dir.path(), SHAPE, &device).unwrap();
    assert!(
        reloaded.has_reparameterisation(),
        "the halved MLP still projects to the saved table, within f16's rounding"
    );
    assert_eq!(reloaded.peft_table().dtype(), burn::tensor::DType::F32);
    let (before, after) = (table(&intact), table(&reloaded));
    let worst = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst > 0.0 && worst < 1e-2, "table moved by {worst}");
}
