//! peft-rs's per-layer prefix projection: one shared embedding, one linear map per layer to that
//! layer's keys and values. Its table must sit where PEFT's layout reads each layer's keys and
//! values, it must save as a plain PEFT prefix plus a native file that resumes it exactly, and
//! without (or with a stale) native file it must load as the table PEFT holds.

use std::path::Path;

use burn::module::Module;
use burn::nn::Linear;
use burn::prelude::*;
use peft_core::adapter::{CONFIG_FILE, NATIVE_FILE, PEFT_TENSOR, WEIGHTS_FILE};
use peft_core::{
    Adapter, KindConfig, ModelShape, PeftAdapter, PeftConfig, PrefixEncoder, PrefixLayerProjection,
    PrefixReparameterisation, PrefixTuningConfig, PromptLearningConfig,
};
use peft_runtime::ComputeBackend;
use safetensors::tensor::TensorView;
use serde_json::Value;

/// The tiny fixture model's shape.
const SHAPE: ModelShape = ModelShape {
    d_model: 32,
    n_layer: 2,
    n_head: 4,
};

fn device() -> Device {
    let device = ComputeBackend::Flex.device().unwrap();
    device.seed(5);
    device
}

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().try_to_vec::<f32>().unwrap()
}

/// A row-major `[rows, in] x [in, out] + bias` in plain Rust, independent of Burn's `Linear`.
fn linear(x: &[f32], rows: usize, layer: &Linear) -> Vec<f32> {
    let [d_in, d_out] = layer.weight.dims();
    let weight = values(layer.weight.val());
    let bias = values(layer.bias.as_ref().unwrap().val());
    let mut out = vec![0.0; rows * d_out];
    for r in 0..rows {
        for o in 0..d_out {
            out[r * d_out + o] = bias[o]
                + (0..d_in)
                    .map(|i| x[r * d_in + i] * weight[i * d_out + o])
                    .sum::<f32>();
        }
    }
    out
}

fn per_layer(encoder: &PrefixEncoder) -> &PrefixLayerProjection {
    match encoder {
        PrefixEncoder::PerLayer(projection) => projection,
        other => panic!("expected a per-layer projection, got {other:?}"),
    }
}

fn new_adapter(p: usize, shape: ModelShape, width: usize, device: &Device) -> PeftAdapter {
    PeftAdapter::prefix_tuning(
        PromptLearningConfig::new(p, shape),
        PrefixReparameterisation::PerLayer { width },
        device,
    )
}

fn encoder(adapter: &PeftAdapter) -> &PrefixEncoder {
    match &adapter.module {
        peft_core::AdapterModule::Prefix(encoder) => encoder,
        other => panic!("expected a prefix, got {other:?}"),
    }
}

fn prefix_config(adapter: &PeftAdapter) -> &PrefixTuningConfig {
    match &adapter.config {
        PeftConfig::PrefixTuning(config) => config,
        other => panic!("expected a prefix config, got {other:?}"),
    }
}

/// What the native file of a per-layer projection holds, counted by hand.
fn expected_values(p: usize, shape: ModelShape, width: usize) -> usize {
    let d = shape.d_model;
    let up = if width == d { 0 } else { width * d + d };
    p * width + up + shape.n_layer * (d * 2 * d + 2 * d)
}

#[test]
fn each_layer_reads_its_own_keys_and_values_from_the_shared_embedding() {
    let device = device();
    // Several layers and heads, so a wrong column offset or key/value order shows.
    let shape = ModelShape {
        d_model: 8,
        n_layer: 3,
        n_head: 2,
    };
    let (p, width, d) = (5, 4, shape.d_model);
    let encoder = PrefixEncoder::per_layer(p, shape, width, &device);
    let projection = per_layer(&encoder);

    // By hand: embedding -> up -> layer l, first d outputs keys, next d values.
    let shared = linear(
        &values(projection.embedding.val()),
        p,
        projection.up.as_ref().unwrap(),
    );
    let table = values(encoder.table());
    assert_eq!(encoder.table().dims(), [p, shape.n_layer * 2 * d]);
    let kv = encoder.forward(shape);
    let head_dim = d / shape.n_head;
    for (l, layer) in projection.layers.iter().enumerate() {
        let out = linear(&shared, p, layer);
        let key = values(kv.layers[l].key.clone());
        let value = values(kv.layers[l].value.clone());
        for t in 0..p {
            for c in 0..d {
                let (k, v) = (out[t * 2 * d + c], out[t * 2 * d + d + c]);
                let row = t * shape.n_layer * 2 * d;
                // PEFT's table: [K_0 | V_0 | K_1 | V_1 | ...] along each virtual token's row.
                assert!(
                    (table[row + l * 2 * d + c] - k).abs() < 1e-5,
                    "key l{l} t{t} c{c}"
                );
                assert!(
                    (table[row + l * 2 * d + d + c] - v).abs() < 1e-5,
                    "value l{l} t{t} c{c}"
                );
                // And what attention gets, [1, heads, p, head_dim], is the same numbers.
                let (h, j) = (c / head_dim, c % head_dim);
                let at = (h * p + t) * head_dim + j;
                assert!((key[at] - k).abs() < 1e-5, "attention key l{l} t{t} c{c}");
                assert!(
                    (value[at] - v).abs() < 1e-5,
                    "attention value l{l} t{t} c{c}"
                );
            }
        }
    }
}

#[test]
fn only_a_narrower_embedding_is_projected_up() {
    let device = device();
    let d = SHAPE.d_model;

    let half = PrefixEncoder::per_layer(3, SHAPE, d / 2, &device);
    let projection = per_layer(&half);
    assert_eq!(projection.embedding.dims(), [3, d / 2]);
    assert_eq!(projection.up.as_ref().unwrap().weight.dims(), [d / 2, d]);
    assert_eq!(projection.layers.len(), SHAPE.n_layer);
    for layer in &projection.layers {
        assert_eq!(layer.weight.dims(), [d, 2 * d]);
    }
    assert_eq!(half.num_params(), expected_values(3, SHAPE, d / 2));

    let full = PrefixEncoder::per_layer(3, SHAPE, d, &device);
    let projection = per_layer(&full);
    assert!(
        projection.up.is_none(),
        "a full-width embedding needs no `up`"
    );
    assert_eq!(
        values(projection.shared()),
        values(projection.embedding.val())
    );
    assert_eq!(full.num_params(), expected_values(3, SHAPE, d));
    assert_eq!(
        full.reparameterisation(),
        PrefixReparameterisation::PerLayer { width: d }
    );
}

#[test]
fn the_trainable_count_is_what_the_native_file_holds() {
    let device = device();
    for width in [1, 7, 16, 32] {
        let adapter = new_adapter(4, SHAPE, width, &device);
        let expected = expected_values(4, SHAPE, width);
        assert_eq!(adapter.num_trainable_params(), expected, "width {width}");
        assert_eq!(
            prefix_config(&adapter).native_values(),
            Some(expected),
            "width {width}"
        );
    }
}

/// Reads `adapter_config.json` of a saved adapter.
fn saved_config(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap()).unwrap()
}

fn write_config(dir: &Path, config: &Value) {
    std::fs::write(dir.join(CONFIG_FILE), config.to_string()).unwrap();
}

#[test]
fn saves_as_a_plain_peft_prefix_and_resumes_from_the_native_file() {
    let device = device();
    let (p, width) = (4, SHAPE.d_model / 2);
    let adapter = new_adapter(p, SHAPE, width, &device);
    let dir = tempfile::tempdir().unwrap();
    adapter.save(dir.path()).unwrap();

    // What Python's `peft` reads: a plain prefix and its table.
    let config = saved_config(dir.path());
    assert_eq!(config["peft_type"], "PREFIX_TUNING");
    assert_eq!(config["prefix_projection"], false);
    assert_eq!(config["peft_rs_layer_projection"], width);
    let bytes = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
    let weights = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(weights.names(), [PEFT_TENSOR]);
    assert_eq!(
        weights.tensor(PEFT_TENSOR).unwrap().shape(),
        [p, SHAPE.n_layer * 2 * SHAPE.d_model]
    );
    assert!(dir.path().join(NATIVE_FILE).is_file());

    let resumed = PeftAdapter::load(dir.path(), SHAPE, &device).unwrap();
    assert!(resumed.has_reparameterisation());
    assert_eq!(
        resumed.num_trainable_params(),
        adapter.num_trainable_params()
    );
    assert_eq!(values(resumed.peft_table()), values(adapter.peft_table()));
    let (before, after) = (per_layer(encoder(&adapter)), per_layer(encoder(&resumed)));
    assert_eq!(
        values(after.embedding.val()),
        values(before.embedding.val())
    );
    let (up_before, up_after) = (before.up.as_ref().unwrap(), after.up.as_ref().unwrap());
    assert_eq!(
        values(up_after.weight.val()),
        values(up_before.weight.val())
    );
    for (l, (a, b)) in after.layers.iter().zip(&before.layers).enumerate() {
        assert_eq!(values(a.weight.val()), values(b.weight.val()), "layer {l}");
        assert_eq!(
            values(a.bias.as_ref().unwrap().val()),
            values(b.bias.as_ref().unwrap().val()),
            "layer {l}"
        );
    }
    assert_eq!(
        prefix_config(&resumed).reparameterisation(),
        PrefixReparameterisation::PerLayer { width }
    );

    // Saved again, it is the same files' worth of adapter.
    let again = tempfile::tempdir().unwrap();
    resumed.save(again.path()).unwrap();
    assert_eq!(saved_config(again.path()), config);
}

#[test]
fn without_the_native_file_it_loads_as_a_direct_prefix_with_the_same_table() {
    let device = device();
    let adapter = new_adapter(3, SHAPE, SHAPE.d_model, &device);
    let dir = tempfile::tempdir().unwrap();
    adapter.save(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join(NATIVE_FILE)).unwrap();

    let loaded = PeftAdapter::load(dir.path(), SHAPE, &device).unwrap();
    assert!(!loaded.has_reparameterisation());
    assert!(matches!(encoder(&loaded), PrefixEncoder::Direct(_)));
    assert_eq!(values(loaded.peft_table()), values(adapter.peft_table()));
    assert_eq!(
        loaded.num_trainable_params(),
        3 * SHAPE.n_layer * 2 * SHAPE.d_model
    );
}

#[test]
fn a_config_python_saved_again_loads_as_a_direct_prefix() {
    // PEFT drops the key it does not know when it saves the config again; the native file
    // beside it then belongs to nothing and is not read.
    let device = device();
    let adapter = new_adapter(3, SHAPE, 8, &device);
    let dir = tempfile::tempdir().unwrap();
    adapter.save(dir.path()).unwrap();
    let mut config = saved_config(dir.path());
    config
        .as_object_mut()
        .unwrap()
        .remove("peft_rs_layer_projection");
    write_config(dir.path(), &config);

    let loaded = PeftAdapter::load(dir.path(), SHAPE, &device).unwrap();
    assert!(matches!(encoder(&loaded), PrefixEncoder::Direct(_)));
    assert_eq!(values(loaded.peft_table()), values(adapter.peft_table()));
}

#[test]
fn a_re_saved_peft_table_wins_over_a_stale_native_file() {
    let device = device();
    let adapter = new_adapter(4, SHAPE, 16, &device);
    let dir = tempfile::tempdir().unwrap();
    adapter.save(dir.path()).unwrap();

    // The table changed after the native file was written (here: plus 0.5 everywhere).
    let shifted: Vec<f32> = values(adapter.peft_table())
        .iter()
        .map(|v| v + 0.5)
        .collect();
    let bytes: Vec<u8> = shifted.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(
        safetensors::Dtype::F32,
        adapter.peft_table().dims().to_vec(),
        &bytes,
    )
    .unwrap();
    std::fs::write(
        dir.path().join(WEIGHTS_FILE),
        safetensors::serialize([(PEFT_TENSOR, view)], None).unwrap(),
    )
    .unwrap();

    let reloaded = PeftAdapter::load(dir.path(), SHAPE, &device).unwrap();
    assert!(!reloaded.has_reparameterisation());
    assert_eq!(values(reloaded.peft_table()), shifted);
}

#[test]
fn a_native_file_of_another_width_is_an_error() {
    let device = device();
    let dir = tempfile::tempdir().unwrap();
    new_adapter(4, SHAPE, 16, &device).save(dir.path()).unwrap();
    let mut config = saved_config(dir.path());
    config["peft_rs_layer_projection"] = 8.into();
    write_config(dir.path(), &config);

    let message = PeftAdapter::load(dir.path(), SHAPE, &device)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(NATIVE_FILE) && message.contains("values"),
        "{message}"
    );
}

#[test]
fn nonsense_widths_are_refused() {
    let config = |width, projection: Option<usize>| PrefixTuningConfig {
        encoder_hidden_size: projection,
        prefix_projection: projection.is_some(),
        peft_rs_layer_projection: width,
        ..PrefixTuningConfig::new(
            PromptLearningConfig::new(4, SHAPE),
            PrefixReparameterisation::Direct,
        )
    };
    let refused = |width, projection| config(width, projection).check().unwrap_err();

    assert!(refused(Some(0), None).contains("positive"));
    let both = refused(Some(16), Some(16));
    assert!(
        both.contains("prefix_projection") && both.contains("peft_rs_layer_projection"),
        "{both}"
    );
    let wide = refused(Some(33), None);
    assert!(
        wide.contains("33") && wide.contains("token_dim 32"),
        "{wide}"
    );
    for width in [1, 16, 32] {
        assert_eq!(config(Some(width), None).check(), Ok(()), "width {width}");
    }

    // Counting what a native file of absurd sizes would hold overflows to `None`, not a panic.
    let mut huge = config(Some(1 << 40), None);
    huge.base.token_dim = 1 << 40;
    huge.base.num_virtual_tokens = 1 << 40;
    assert_eq!(huge.native_values(), None);
}

#[test]
fn a_hand_edited_width_is_an_error_naming_the_key() {
    let device = device();
    for (width, words) in [
        (Value::from(0), "positive"),
        (Value::from(1u64 << 40), "wider"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        new_adapter(4, SHAPE, 16, &device).save(dir.path()).unwrap();
        let mut config = saved_config(dir.path());
        config["peft_rs_layer_projection"] = width;
        write_config(dir.path(), &config);
        let message = PeftAdapter::load(dir.path(), SHAPE, &device)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("peft_rs_layer_projection") && message.contains(words),
            "{message}"
        );
    }
}
