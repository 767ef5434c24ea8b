//! The fused attention as one autodiff node: the forward runs the inner backend's kernel and
//! keeps only its inputs; the backward asks the same backend for all three gradients at once.

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{AutodiffBackend, Backend, tensor::FloatTensor};

use super::FusedAttentionOps;

#[derive(Debug)]
struct FusedAttentionBackward;

impl<B: Backend + FusedAttentionOps> Backward<B, 3> for FusedAttentionBackward {
    /// Query, key, value, bias and scale: the backward recomputes the probabilities from them.
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        f64,
    );

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let output_grad = grads.consume::<B>(&ops.node);
        let (query, key, value, bias, scale) = ops.state;
        let (d_query, d_key, d_value) =
            B::fused_attention_backward(query, key, value, bias, output_grad, scale);
        let [query_node, key_node, value_node] = ops.parents;
        for (node, grad) in [
            (query_node, d_query),
            (key_node, d_key),
            (value_node, d_value),
        ] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: Backend + FusedAttentionOps, C: CheckpointStrategy> FusedAttentionOps for Autodiff<B, C> {
    fn fused_attention(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let nodes = [query.node(), key.node(), value.node()];
        let (query, key, value) = (
            query.into_primitive(),
            key.into_primitive(),
            value.into_primitive(),
        );
        // The bias is a mask: a constant here, whatever its own graph.
        let bias = bias.into_primitive();
        let output = B::fused_attention(
            query.clone(),
            key.clone(),
            value.clone(),
            bias.clone(),
            scale,
        );
        match FusedAttentionBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((query, key, value, bias, scale), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    /// Gradients as constants (no graph of their own): the backward above calls the inner
    /// backend's, so this is only reached by code that asks for them directly.
    fn fused_attention_backward(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (d_query, d_key, d_value) = B::fused_attention_backward(
            query.into_primitive(),
            key.into_primitive(),
            value.into_primitive(),
            bias.into_primitive(),
            output_grad.into_primitive(),
            scale,
        );
        (
            Self::from_inner(d_query),
            Self::from_inner(d_key),
            Self::from_inner(d_value),
        )
    }
}
