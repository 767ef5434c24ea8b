//! The fused LayerNorm and GELU on LibTorch: PyTorch's own kernels (`layer_norm`, which
//! accumulates half types in f32, and `gelu` with `approximate="tanh"`) and their backward.

use burn::backend::libtorch::{LibTorch, TchTensor};
use burn::backend::tensor::FloatTensor;

use super::FusedLayerOps;

/// The normalised (last) dimension, as `layer_norm` takes it.
fn last_dimension(tensor: &tch::Tensor) -> Vec<i64> {
    tensor.size().last().copied().into_iter().collect()
}

impl FusedLayerOps for LibTorch {
    fn fused_layer_norm(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let input = &input.tensor;
        let output = tch::no_grad(|| {
            input.layer_norm(
                last_dimension(input),
                Some(&gamma.tensor),
                Some(&beta.tensor),
                epsilon,
                true,
            )
        });
        TchTensor::new(output)
    }

    /// PyTorch's backward of the same call (tch does not expose `native_layer_norm_backward`):
    /// the forward is run again on inputs that track gradients and autograd runs the fused
    /// backward kernel. Beta's gradient is the output gradient summed over the rows.
    fn fused_layer_norm_backward(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let output_grad = &output_grad.tensor;
        let mut grads = tch::with_grad(|| {
            let inputs = [&input.tensor, &gamma.tensor]
                .map(|tensor| tensor.detach().set_requires_grad(true));
            let output = inputs[0].layer_norm(
                last_dimension(&inputs[0]),
                Some(&inputs[1]),
                None::<&tch::Tensor>,
                epsilon,
                true,
            );
            let objective = (&output * output_grad).sum(output.kind());
            tch::Tensor::run_backward(&[objective], &inputs, false, false)
        })
        .into_iter()
        .map(TchTensor::new);
        let mut next = || {
            grads
                .next()
                .expect("autograd returns one gradient per input")
        };
        let (d_input, d_gamma) = (next(), next());
        let width = *output_grad.size().last().unwrap_or(&0);
        let d_beta = output_grad.reshape([-1, width]).sum_dim_intlist(
            [0i64].as_slice(),
            false,
            output_grad.kind(),
        );
        (d_input, d_gamma, TchTensor::new(d_beta))
    }

    fn fused_gelu_tanh(input: FloatTensor<Self>) -> FloatTensor<Self> {
        TchTensor::new(tch::no_grad(|| input.tensor.gelu("tanh")))
    }

    fn fused_gelu_tanh_backward(
        input: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        TchTensor::new(tch::no_grad(|| {
            input.tensor.gelu_backward(&output_grad.tensor, "tanh")
        }))
    }
}
