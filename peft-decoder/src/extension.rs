//! What this crate's backend extensions ([`crate::fused_attention`], [`crate::fused_layers`],
//! [`crate::fused_adamw`]) share: the backends they are built for, and how their CPU
//! kernels read and write tensors.

use burn::backend::{Backend, DispatchDevice, TensorMetadata, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType, TensorData, read_sync};

/// Whether the fused operations run on `device`'s backend (with or without autodiff): flex,
/// ndarray and LibTorch where compiled in. Elsewhere (CubeCL: Vulkan, CUDA) callers keep the
/// decomposed form.
pub fn runs_on(device: &Device) -> bool {
    match device.clone().inner().as_dispatch() {
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => true,
        #[cfg(feature = "ndarray")]
        DispatchDevice::NdArray(_) => true,
        #[cfg(feature = "tch")]
        DispatchDevice::LibTorch(_) => true,
        _ => false,
    }
}

/// A CPU tensor's values as f32, in row-major order (half types are widened: the kernels
/// accumulate in f32). An f32 tensor whose storage is not shared gives its buffer up without
/// a copy (on flex), so a kernel can update it in place.
pub(crate) fn f32_values<B: Backend>(tensor: FloatTensor<B>) -> Vec<f32> {
    let tensor = match tensor.dtype() {
        DType::F32 => tensor,
        _ => B::float_cast(tensor, FloatDType::F32),
    };
    let data = read_sync(B::float_into_data(tensor)).expect("a CPU backend reads its own tensor");
    data.try_into_vec::<f32>()
        .expect("the tensor was cast to f32 above")
}

/// `values` of `shape` as a tensor of `dtype` on `device`.
pub(crate) fn tensor_of<B: Backend>(
    values: Vec<f32>,
    shape: Shape,
    dtype: DType,
    device: &B::Device,
) -> FloatTensor<B> {
    let tensor = B::float_from_data(TensorData::new(values, shape), device);
    match dtype {
        DType::F32 => tensor,
        other => B::float_cast(tensor, FloatDType::from(other)),
    }
}

/// The gradients of `sum(output_grad ∘ forward(inputs))` with respect to each input, by
/// PyTorch's autograd: how the LibTorch extensions reach PyTorch's fused backward kernels,
/// which tch does not expose as functions. `forward` runs again on copies of the inputs that
/// track gradients (the forward is the cheaper half).
#[cfg(feature = "tch")]
#[allow(deprecated)] // burn-tch is deprecated upstream but still one of this project's backends
pub(crate) fn torch_gradients<const N: usize>(
    inputs: [&tch::Tensor; N],
    output_grad: &tch::Tensor,
    forward: impl FnOnce(&[tch::Tensor; N]) -> tch::Tensor,
) -> [burn::backend::libtorch::TchTensor; N] {
    let grads = tch::with_grad(|| {
        let inputs = inputs.map(|tensor| tensor.detach().set_requires_grad(true));
        let output = forward(&inputs);
        let objective = (&output * output_grad).sum(output.kind());
        tch::Tensor::run_backward(&[objective], &inputs, false, false)
    });
    let grads: [tch::Tensor; N] = grads
        .try_into()
        .unwrap_or_else(|_| unreachable!("autograd returns one gradient per input"));
    grads.map(burn::backend::libtorch::TchTensor::new)
}
