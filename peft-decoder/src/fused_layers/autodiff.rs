//! The fused normalisations and activations as autodiff nodes: the forward runs the inner
//! backend's kernel and keeps only its input (and a norm's gamma); the backward asks the same
//! backend for the gradients.

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{AutodiffBackend, Backend, tensor::FloatTensor};

use super::FusedLayerOps;
use crate::extension::register_gradient as register;

#[derive(Debug)]
struct LayerNormBackward;

impl<B: Backend + FusedLayerOps> Backward<B, 3> for LayerNormBackward {
    /// Input, gamma and epsilon: the backward recomputes the row statistics from them.
    type State = (FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let output_grad = grads.consume::<B>(&ops.node);
        let (input, gamma, epsilon) = ops.state;
        let [input_node, gamma_node, beta_node] = ops.parents.map(|node| node.map(|node| node.id));
        let affine = gamma_node.is_some() || beta_node.is_some();
        let (d_input, d_affine) =
            B::fused_layer_norm_backward(input, gamma, output_grad, epsilon, affine);
        register::<B>(grads, input_node, Some(d_input));
        let (d_gamma, d_beta) = d_affine.unzip();
        register::<B>(grads, gamma_node, d_gamma);
        register::<B>(grads, beta_node, d_beta);
    }
}

#[derive(Debug)]
struct RmsNormBackward;

impl<B: Backend + FusedLayerOps> Backward<B, 2> for RmsNormBackward {
    /// Input, gamma and epsilon: the backward recomputes the row norms from them.
    type State = (FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let output_grad = grads.consume::<B>(&ops.node);
        let (input, gamma, epsilon) = ops.state;
        let [input_node, gamma_node] = ops.parents.map(|node| node.map(|node| node.id));
        let (d_input, d_gamma) =
            B::fused_rms_norm_backward(input, gamma, output_grad, epsilon, gamma_node.is_some());
        register::<B>(grads, input_node, Some(d_input));
        register::<B>(grads, gamma_node, d_gamma);
    }
}

/// The input gradient of an element-wise activation, from its input and output gradient.
type ActivationGradient<B> = fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>;

/// An element-wise activation's node; the state is its input.
#[derive(Debug)]
struct ActivationBackward<B: Backend>(ActivationGradient<B>);

impl<B: Backend> Backward<B, 1> for ActivationBackward<B> {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let output_grad = grads.consume::<B>(&ops.node);
        let [input_node] = ops.parents;
        if let Some(node) = input_node {
            grads.register::<B>(node.id, (self.0)(ops.state, output_grad));
        }
    }
}

/// `forward` of a tracked input as one node whose backward is `gradient`.
fn activation<B: Backend, C: CheckpointStrategy>(
    input: FloatTensor<Autodiff<B, C>>,
    forward: fn(FloatTensor<B>) -> FloatTensor<B>,
    gradient: ActivationGradient<B>,
) -> FloatTensor<Autodiff<B, C>> {
    let nodes = [input.node()];
    let input = input.into_primitive();
    let output = forward(input.clone());
    match ActivationBackward(gradient)
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(input, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

impl<B: Backend + FusedLayerOps, C: CheckpointStrategy> FusedLayerOps for Autodiff<B, C> {
    fn fused_layer_norm(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let nodes = [input.node(), gamma.node(), beta.node()];
        let (input, gamma, beta) = (
            input.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
        );
        let output = B::fused_layer_norm(input.clone(), gamma.clone(), beta, epsilon);
        match LayerNormBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((input, gamma, epsilon), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    /// Gradients as constants (no graph of their own): the node above calls the inner
    /// backend's, so this is only reached by code that asks for them directly.
    fn fused_layer_norm_backward(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        epsilon: f64,
        affine: bool,
    ) -> (
        FloatTensor<Self>,
        Option<(FloatTensor<Self>, FloatTensor<Self>)>,
    ) {
        let (d_input, d_affine) = B::fused_layer_norm_backward(
            input.into_primitive(),
            gamma.into_primitive(),
            output_grad.into_primitive(),
            epsilon,
            affine,
        );
        let d_affine =
            d_affine.map(|(d_gamma, d_beta)| (Self::from_inner(d_gamma), Self::from_inner(d_beta)));
        (Self::from_inner(d_input), d_affine)
    }

    fn fused_gelu_tanh(input: FloatTensor<Self>) -> FloatTensor<Self> {
        activation::<B, C>(input, B::fused_gelu_tanh, B::fused_gelu_tanh_backward)
    }

    /// A constant, as for LayerNorm above.
    fn fused_gelu_tanh_backward(
        input: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::fused_gelu_tanh_backward(
            input.into_primitive(),
            output_grad.into_primitive(),
        ))
    }

    fn fused_rms_norm(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let nodes = [input.node(), gamma.node()];
        let (input, gamma) = (input.into_primitive(), gamma.into_primitive());
        let output = B::fused_rms_norm(input.clone(), gamma.clone(), epsilon);
        match RmsNormBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((input, gamma, epsilon), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    /// A constant, as for LayerNorm above.
    fn fused_rms_norm_backward(
        input: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        epsilon: f64,
        affine: bool,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        let (d_input, d_gamma) = B::fused_rms_norm_backward(
            input.into_primitive(),
            gamma.into_primitive(),
            output_grad.into_primitive(),
            epsilon,
            affine,
        );
        (Self::from_inner(d_input), d_gamma.map(Self::from_inner))
    }

    fn fused_silu(input: FloatTensor<Self>) -> FloatTensor<Self> {
        activation::<B, C>(input, B::fused_silu, B::fused_silu_backward)
    }

    /// A constant, as for LayerNorm above.
    fn fused_silu_backward(
        input: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::fused_silu_backward(
            input.into_primitive(),
            output_grad.into_primitive(),
        ))
    }
}
