//! What this crate's backend extensions ([`crate::fused_attention`], [`crate::fused_layers`],
//! [`crate::fused_adamw`]) share: the backends they are built for, and how their CPU
//! kernels read and write tensors.

use burn::backend::autodiff::{NodeId, grads::Gradients};
use burn::backend::{Backend, DispatchDevice, TensorMetadata, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType, Slice, TensorData, read_sync};
use rayon::prelude::*;

/// Where a device computes, as this crate's operations tell backends apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The host's processor through flex, ndarray or LibTorch's CPU device: the fused
    /// operations run, with this crate's CPU kernels or PyTorch's.
    HostCpu,
    /// An accelerator through LibTorch (CUDA): the fused operations run, with PyTorch's kernels.
    LibTorchGpu,
    /// Any other backend (CubeCL: Vulkan, CUDA): Burn's own tensor operations.
    Other,
}

/// The [`Engine`] of `device` (with or without autodiff).
// LibTorch is deprecated upstream but still one of this project's backends.
#[allow(deprecated)]
pub fn engine(device: &Device) -> Engine {
    match device.clone().inner().as_dispatch() {
        #[cfg(feature = "flex")]
        DispatchDevice::Flex(_) => Engine::HostCpu,
        #[cfg(feature = "ndarray")]
        DispatchDevice::NdArray(_) => Engine::HostCpu,
        #[cfg(feature = "tch")]
        DispatchDevice::LibTorch(burn::backend::libtorch::LibTorchDevice::Cpu) => Engine::HostCpu,
        #[cfg(feature = "tch")]
        DispatchDevice::LibTorch(_) => Engine::LibTorchGpu,
        _ => Engine::Other,
    }
}

/// Whether `device` is LibTorch's (CPU or CUDA; with or without autodiff).
#[allow(deprecated)]
pub fn is_libtorch(device: &Device) -> bool {
    #[cfg(feature = "tch")]
    if let DispatchDevice::LibTorch(_) = device.clone().inner().as_dispatch() {
        return true;
    }
    let _ = device;
    false
}

/// `tensor`'s elements `start..end` along `dim` (a view where the backend makes one): the
/// narrowing Burn's `Tensor::narrow` does, for a backend's own tensors.
pub(crate) fn narrow<B: Backend>(
    tensor: FloatTensor<B>,
    dim: usize,
    start: usize,
    end: usize,
) -> FloatTensor<B> {
    let mut slices = vec![Slice::full(); tensor.shape().num_dims()];
    slices[dim] = Slice::new(start as isize, Some(end as isize), 1);
    B::float_slice(tensor, &slices)
}

/// Adds `grad` to the gradient of the autodiff node `id`, when the node is tracked and the
/// gradient was taken: how this crate's autodiff nodes hand their inputs' gradients back.
pub(crate) fn register_gradient<B: Backend>(
    grads: &mut Gradients,
    id: Option<NodeId>,
    grad: Option<FloatTensor<B>>,
) {
    if let (Some(id), Some(grad)) = (id, grad) {
        grads.register::<B>(id, grad);
    }
}

/// Whether the fused operations run on `device`'s backend (with or without autodiff): flex,
/// ndarray and LibTorch where compiled in. Elsewhere (CubeCL: Vulkan, CUDA) callers keep the
/// decomposed form.
pub fn runs_on(device: &Device) -> bool {
    engine(device) != Engine::Other
}

/// A CPU tensor's values as f32, in row-major order (half types are widened: the kernels
/// accumulate in f32), copied out of the tensor ([`WritableF32`] says why; it avoids the copy
/// where it can).
pub(crate) fn f32_values<B: Backend>(tensor: FloatTensor<B>) -> Vec<f32> {
    let tensor = match tensor.dtype() {
        DType::F32 => tensor,
        _ => B::float_cast(tensor, FloatDType::F32),
    };
    let data = read_sync(B::float_into_data(tensor)).expect("a CPU backend reads its own tensor");
    data.try_into_vec::<f32>()
        .expect("the tensor was cast to f32 above")
}

/// A CPU tensor's f32 values for a kernel to update in place and hand back as a tensor: a flex
/// f32 tensor that is contiguous is written where it lies — after one copy of its buffer if
/// another tensor shares it (flex's copy-on-write), as Burn's `Learner` shares every parameter
/// with the model it is replacing while AdamW updates it; any other tensor is copied out first
/// ([`f32_values`]) and comes back as a new f32 tensor.
///
/// Why: `TensorData::try_into_vec` cannot take over a flex buffer (its allocation is aligned
/// beyond `f32`'s), so [`f32_values`] copies every tensor it reads, and making a flex tensor of
/// the result copies it again — for the loss, a 51 MB chunk of logits; for full fine-tuning's
/// AdamW, every parameter, each step.
pub(crate) struct WritableF32<B: Backend> {
    storage: Writable<B>,
}

enum Writable<B: Backend> {
    Copied {
        values: Vec<f32>,
        shape: Shape,
        device: B::Device,
    },
    #[cfg(feature = "flex")]
    Flex(burn::backend::flex::FlexTensor),
}

impl<B: Backend> WritableF32<B> {
    pub(crate) fn of(tensor: FloatTensor<B>) -> Self {
        #[cfg(feature = "flex")]
        let tensor = match Self::writable_flex(tensor) {
            Ok(flex) => {
                return Self {
                    storage: Writable::Flex(flex),
                };
            }
            Err(tensor) => tensor,
        };
        let (shape, device) = (tensor.shape(), tensor.device());
        Self {
            storage: Writable::Copied {
                values: f32_values::<B>(tensor),
                shape,
                device,
            },
        }
    }

    /// `tensor` as a flex tensor if it is one that can be written in place, else back as it was.
    #[cfg(feature = "flex")]
    fn writable_flex(
        tensor: FloatTensor<B>,
    ) -> Result<burn::backend::flex::FlexTensor, FloatTensor<B>> {
        use burn::backend::flex::FlexTensor;
        let writable = |flex: &FlexTensor| {
            let layout = flex.layout();
            flex.dtype() == DType::F32
                && layout.is_contiguous()
                && layout.start_offset() == 0
                && flex.bytes().len() == layout.num_elements() * size_of::<f32>()
        };
        let any: Box<dyn std::any::Any> = Box::new(tensor);
        match any.downcast::<FlexTensor>() {
            Ok(flex) if writable(&flex) => Ok(*flex),
            Ok(flex) => Err(Self::from_flex(*flex)),
            Err(any) => Err(*any
                .downcast::<FloatTensor<B>>()
                .unwrap_or_else(|_| unreachable!("boxed as this type just above"))),
        }
    }

    /// A flex tensor as `B`'s, which it is whenever it was made from one.
    #[cfg(feature = "flex")]
    fn from_flex(flex: burn::backend::flex::FlexTensor) -> FloatTensor<B> {
        let any: Box<dyn std::any::Any> = Box::new(flex);
        *any.downcast::<FloatTensor<B>>()
            .unwrap_or_else(|_| unreachable!("only made from a FloatTensor<B> that was flex's"))
    }

    /// The values, row-major.
    pub(crate) fn values(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Writable::Copied { values, .. } => values,
            // Copies the buffer first if it is shared, once: the copy is then unique.
            #[cfg(feature = "flex")]
            Writable::Flex(flex) => flex.storage_mut::<f32>(),
        }
    }

    /// The values as a tensor of the original shape, in `dtype`.
    pub(crate) fn into_tensor(self, dtype: DType) -> FloatTensor<B> {
        match self.storage {
            Writable::Copied {
                values,
                shape,
                device,
            } => tensor_of::<B>(values, shape, dtype, &device),
            // A tensor written in place is f32: cast only when another type is asked for.
            #[cfg(feature = "flex")]
            Writable::Flex(flex) => match dtype {
                DType::F32 => Self::from_flex(flex),
                other => B::float_cast(Self::from_flex(flex), FloatDType::from(other)),
            },
        }
    }
}

/// Elements per task of the CPU kernels' element-wise passes: enough to amortise scheduling,
/// few enough to share between cores.
pub(crate) const ELEMENTS_PER_TASK: usize = 64 * 1024;

/// A CPU tensor rewritten element by element, split across cores in tasks of
/// `elements_per_task`: `update` gets each task's values and the row-major index of its first.
/// Written in place where the tensor allows ([`WritableF32`]); returned in its own type.
pub(crate) fn update_elements<B: Backend>(
    tensor: FloatTensor<B>,
    elements_per_task: usize,
    update: impl Fn(u64, &mut [f32]) + Sync,
) -> FloatTensor<B> {
    let dtype = tensor.dtype();
    let mut values = WritableF32::<B>::of(tensor);
    values
        .values()
        .par_chunks_mut(elements_per_task)
        .enumerate()
        .for_each(|(task, chunk)| update((task * elements_per_task) as u64, chunk));
    values.into_tensor(dtype)
}

/// A `[B, heads, rows, cols]` tensor's values for a kernel that works on one (batch, head) pair
/// at a time: pair `i`'s `rows × cols` values, row-major. A flex f32 tensor whose pairs already
/// lie so in its buffer (a contiguous tensor, or the held positions of the KV cache's larger
/// buffer, see [`crate::LayerCache`]) is read where it is, without a copy; any other tensor is
/// copied out contiguously.
pub(crate) struct HeadBlocks {
    storage: BlockStorage,
    /// Where pair 0 starts, and the distance from one pair to the next.
    offset: usize,
    stride: usize,
    len: usize,
}

enum BlockStorage {
    Copied(Vec<f32>),
    #[cfg(feature = "flex")]
    Flex(burn::backend::flex::FlexTensor),
}

impl HeadBlocks {
    pub(crate) fn of<B: Backend>(tensor: FloatTensor<B>) -> Self {
        let shape = tensor.shape();
        let len = shape[2] * shape[3];
        #[cfg(feature = "flex")]
        if let Some(blocks) = Self::in_place(&tensor, len) {
            return blocks;
        }
        Self {
            storage: BlockStorage::Copied(f32_values::<B>(tensor)),
            offset: 0,
            stride: len,
            len,
        }
    }

    /// The blocks of a flex f32 tensor whose rows of a pair are contiguous and whose pairs are
    /// evenly spaced without overlapping.
    #[cfg(feature = "flex")]
    fn in_place<T: 'static>(tensor: &T, len: usize) -> Option<Self> {
        let flex =
            (tensor as &dyn std::any::Any).downcast_ref::<burn::backend::flex::FlexTensor>()?;
        let layout = flex.layout();
        let (shape, strides) = (layout.shape(), layout.strides());
        let (heads, cols) = (shape[1], shape[3]);
        let stride = usize::try_from(strides[1]).ok()?;
        let dense_pairs = strides[3] == 1
            && strides[2] == cols as isize
            && strides[0] == (heads * stride) as isize
            && stride >= len
            && (len == 0 || stride > 0);
        (flex.dtype() == DType::F32 && dense_pairs).then(|| Self {
            storage: BlockStorage::Flex(flex.clone()),
            offset: layout.start_offset(),
            stride,
            len,
        })
    }

    /// The values of (batch, head) pair `pair`.
    pub(crate) fn pair(&self, pair: usize) -> &[f32] {
        let values: &[f32] = match &self.storage {
            BlockStorage::Copied(values) => values,
            #[cfg(feature = "flex")]
            BlockStorage::Flex(tensor) => tensor.storage::<f32>(),
        };
        &values[self.offset + pair * self.stride..][..self.len]
    }
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
    tch::with_grad(|| {
        let inputs = inputs.map(|tensor| tensor.detach().set_requires_grad(true));
        let output = forward(&inputs);
        graph_gradients(&output, output_grad, inputs.each_ref())
    })
}

/// The gradients of `sum(output_grad ∘ output)` with respect to `inputs`, through the autograd
/// graph `output` carries from them (which this releases): PyTorch's backward seeded with
/// `output_grad` itself (`csrc/autograd.cpp`, since tch's seeds with ones and takes none).
#[cfg(feature = "tch")]
#[allow(deprecated)] // as above
pub(crate) fn graph_gradients<const N: usize>(
    output: &tch::Tensor,
    output_grad: &tch::Tensor,
    inputs: [&tch::Tensor; N],
) -> [burn::backend::libtorch::TchTensor; N] {
    // Autograd takes the seed in the output's type (a no-op where they agree).
    let output_grad = output_grad.to_kind(output.kind());
    let inputs = inputs.map(|input| input.as_ptr());
    let mut grads = [std::ptr::null_mut(); N];
    let failure = unsafe {
        // SAFETY: every pointer is a live `at::Tensor` held by the caller or here until the call
        // returns; on success each of `grads` is a tensor the callee allocated for us to own, as
        // tch owns its own.
        peft_autograd_grad(
            output.as_ptr(),
            output_grad.as_ptr(),
            inputs.as_ptr(),
            N,
            grads.as_mut_ptr(),
        )
    };
    check_csrc_call(failure, "autograd");
    // SAFETY: each pointer is a tensor the call above allocated and no one else holds.
    grads
        .map(|grad| burn::backend::libtorch::TchTensor::new(unsafe { tch::Tensor::from_ptr(grad) }))
}

/// Panics with PyTorch's message where a call into `csrc/` returned one (`failure` not null).
/// Those calls get tensors this crate made, of the shapes and types they take, so PyTorch
/// refusing them is a bug here, reported as tch reports its own failures.
#[cfg(feature = "tch")]
pub(crate) fn check_csrc_call(failure: *const std::ffi::c_char, what: &str) {
    if !failure.is_null() {
        // SAFETY: a failure is a NUL-terminated message the callee keeps until the next failure
        // on this thread (`csrc/failure.h`).
        let message = unsafe { std::ffi::CStr::from_ptr(failure) }.to_string_lossy();
        panic!("libtorch's {what} failed: {message}");
    }
}

#[cfg(feature = "tch")]
unsafe extern "C" {
    /// `csrc/autograd.cpp`: `torch::autograd::grad` of `output` seeded with `output_grad`; null,
    /// or PyTorch's message.
    fn peft_autograd_grad(
        output: *const torch_sys::C_tensor,
        output_grad: *const torch_sys::C_tensor,
        inputs: *const *const torch_sys::C_tensor,
        count: usize,
        grads: *mut *mut torch_sys::C_tensor,
    ) -> *const std::ffi::c_char;
}

#[cfg(all(test, feature = "tch"))]
#[allow(deprecated)] // burn-tch is deprecated upstream but still one of this project's backends
mod tests {
    use super::graph_gradients;

    /// The gradients come back seeded with the given output gradient, not with ones.
    #[test]
    fn graph_gradients_are_seeded_with_the_output_gradient() {
        let x = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]).set_requires_grad(true);
        let output = tch::with_grad(|| &x * &x);
        let seed = tch::Tensor::from_slice(&[1.0f32, 10.0, 100.0]);
        let [grad] = graph_gradients(&output, &seed, [&x]);
        let expected = tch::Tensor::from_slice(&[2.0f32, 40.0, 600.0]);
        assert!(grad.tensor.allclose(&expected, 0.0, 0.0, false));
    }

    /// PyTorch refusing a call (here: an input the output does not depend on) is a panic with
    /// its message, not an exception crossing into Rust (which would abort the process).
    #[test]
    #[should_panic(expected = "libtorch's autograd failed")]
    fn a_refused_backward_is_a_panic_with_pytorchs_message() {
        let x = tch::Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let unrelated = tch::Tensor::from_slice(&[3.0f32]).set_requires_grad(true);
        let output = tch::with_grad(|| &x * 2.0);
        let seed = tch::Tensor::from_slice(&[1.0f32, 1.0]);
        let _ = graph_gradients(&output, &seed, [&unrelated]);
    }
}
