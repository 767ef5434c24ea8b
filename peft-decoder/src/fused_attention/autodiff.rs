//! The fused attention as one autodiff node: the forward runs the inner backend's kernel and
//! keeps what that backend saves for its backward; the backward asks the same backend for all
//! three gradients at once.

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{AutodiffBackend, Backend, tensor::FloatTensor};

use super::{AttentionSaved, AttentionSettings, FusedAttentionOps};

#[derive(Debug)]
struct FusedAttentionBackward;

/// What the backward needs: the backend's saved tensors and the call's settings.
#[derive(Clone, Debug)]
struct Saved<B: Backend> {
    tensors: AttentionSaved<B>,
    settings: AttentionSettings,
}

impl<B: Backend + FusedAttentionOps> Backward<B, 3> for FusedAttentionBackward {
    type State = Saved<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let output_grad = grads.consume::<B>(&ops.node);
        let Saved { tensors, settings } = ops.state;
        let (d_query, d_key, d_value) = B::fused_attention_backward(tensors, output_grad, settings);
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
        settings: AttentionSettings,
    ) -> FloatTensor<Self> {
        let nodes = [query.node(), key.node(), value.node()];
        let (query, key, value) = (
            query.into_primitive(),
            key.into_primitive(),
            value.into_primitive(),
        );
        // The bias is a mask: a constant here, whatever its own graph.
        let bias = bias.into_primitive();
        match FusedAttentionBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (output, tensors) =
                    B::fused_attention_forward(query, key, value, bias, settings);
                prep.finish(Saved { tensors, settings }, output)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::fused_attention(query, key, value, bias, settings))
            }
        }
    }

    /// A forward whose saved tensors are constants (no graph of their own): the tracked path
    /// above calls the inner backend's, so this is only reached by code that asks for it
    /// directly.
    fn fused_attention_forward(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        settings: AttentionSettings,
    ) -> (FloatTensor<Self>, AttentionSaved<Self>) {
        let (output, saved) = B::fused_attention_forward(
            query.into_primitive(),
            key.into_primitive(),
            value.into_primitive(),
            bias.into_primitive(),
            settings,
        );
        (
            Self::from_inner(output),
            AttentionSaved {
                query: Self::from_inner(saved.query),
                key: Self::from_inner(saved.key),
                value: Self::from_inner(saved.value),
                bias_or_graph: Self::from_inner(saved.bias_or_graph),
            },
        )
    }

    /// Gradients as constants (no graph of their own), as for the forward above.
    fn fused_attention_backward(
        saved: AttentionSaved<Self>,
        output_grad: FloatTensor<Self>,
        settings: AttentionSettings,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let saved = AttentionSaved {
            query: saved.query.into_primitive(),
            key: saved.key.into_primitive(),
            value: saved.value.into_primitive(),
            bias_or_graph: saved.bias_or_graph.into_primitive(),
        };
        let (d_query, d_key, d_value) =
            B::fused_attention_backward(saved, output_grad.into_primitive(), settings);
        (
            Self::from_inner(d_query),
            Self::from_inner(d_key),
            Self::from_inner(d_value),
        )
    }
}
