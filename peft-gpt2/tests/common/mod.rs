//! Shared by the integration tests: fixture paths, the recorded Hugging Face outputs, and the
//! list of backends to run every check on.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use burn::prelude::*;
use peft_runtime::ComputeBackend;
use safetensors::{Dtype, SafeTensors};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Every CPU backend compiled into this test binary (flex always; ndarray and tch by feature).
pub fn devices() -> Vec<(ComputeBackend, Device)> {
    ComputeBackend::compiled_cpu()
        .into_iter()
        .map(|backend| (backend, backend.device().expect("compiled in")))
        .collect()
}

/// A tensor recorded by `scripts/reference/make_fixtures.py`.
pub struct Recorded {
    pub shape: Vec<usize>,
    pub floats: Vec<f32>,
    pub ints: Vec<i64>,
}

/// The `reference.safetensors` of one fixture model.
pub struct Reference {
    pub tensors: HashMap<String, Recorded>,
    pub metadata: HashMap<String, String>,
}

impl Reference {
    pub fn load(model: &str) -> Self {
        Self::load_path(&fixtures().join(model).join("reference.safetensors"))
    }

    pub fn load_path(path: &std::path::Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let metadata = meta.metadata().clone().unwrap_or_default();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let tensors = file
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let data = view.data();
                let (floats, ints) = match view.dtype() {
                    Dtype::F32 => (
                        data.chunks_exact(4)
                            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                            .collect(),
                        Vec::new(),
                    ),
                    Dtype::I64 => (
                        Vec::new(),
                        data.chunks_exact(8)
                            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                            .collect(),
                    ),
                    other => panic!("{name}: unexpected dtype {other:?}"),
                };
                let recorded = Recorded {
                    shape: view.shape().to_vec(),
                    floats,
                    ints,
                };
                (name, recorded)
            })
            .collect();
        Self { tensors, metadata }
    }

    pub fn get(&self, key: &str) -> &Recorded {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("reference has no `{key}`"))
    }

    /// Rows of token ids (all columns).
    pub fn rows(&self, key: &str) -> Vec<Vec<i64>> {
        let t = self.get(key);
        t.ints.chunks(t.shape[1]).map(<[i64]>::to_vec).collect()
    }

    pub fn int_tensor(&self, key: &str, device: &Device) -> Tensor<2, Int> {
        let t = self.get(key);
        Tensor::<1, Int>::from_data(TensorData::new(t.ints.clone(), [t.ints.len()]), device)
            .reshape([t.shape[0], t.shape[1]])
    }

    pub fn mask_tensor(&self, key: &str, device: &Device) -> Tensor<2, Bool> {
        self.int_tensor(key, device).equal_elem(1)
    }
}

pub fn to_vec(tensor: Tensor<3>) -> Vec<f32> {
    tensor.into_data().try_into_vec_as::<f32>().unwrap()
}

pub fn to_vec1(tensor: Tensor<1>) -> Vec<f32> {
    tensor.into_data().try_into_vec_as::<f32>().unwrap()
}

/// Largest |a - b| over the positions where `keep` is true (all when `keep` is None).
pub fn max_abs_diff(actual: &[f32], expected: &[f32], keep: Option<&[bool]>) -> f32 {
    assert_eq!(actual.len(), expected.len(), "sizes differ");
    actual
        .iter()
        .zip(expected)
        .enumerate()
        .filter(|(i, _)| keep.is_none_or(|k| k[*i]))
        .map(|(_, (a, b))| (a - b).abs())
        .fold(0.0, f32::max)
}

/// Expands a `[B, T]` mask to `[B, T, V]` (one flag per logit).
pub fn per_logit(mask: &[i64], vocab: usize) -> Vec<bool> {
    mask.iter()
        .flat_map(|&m| std::iter::repeat_n(m == 1, vocab))
        .collect()
}
