//! The fused attention as one autodiff node: the forward runs the inner backend's kernel and
//! keeps what that backend saves for its backward; the backward asks the same backend for all
//! three gradients at once.

use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, NodeGuard, Ops, OpsKind},
};
use burn::backend::{AutodiffBackend, Backend, TensorMetadata, tensor::FloatTensor};

use super::{AttentionSaved, AttentionSettings, FusedAttentionOps, after_prefix, unpack};
use crate::extension::{narrow, register_gradient};

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
        let [query_node, key_node, value_node] = ops.parents.map(|node| node.map(|node| node.id));
        register_gradient::<B>(grads, query_node, Some(d_query));
        register_gradient::<B>(grads, key_node, Some(d_key));
        register_gradient::<B>(grads, value_node, Some(d_value));
    }
}

/// The attention of a packed query/key/value (and a prefix, if any) as one node, whose parents
/// are the packed tensor and, with a prefix, its keys and values (`N` = 1 or 3).
#[derive(Debug)]
struct PackedAttentionBackward;

#[derive(Clone, Debug)]
struct PackedSaved<B: Backend> {
    tensors: AttentionSaved<B>,
    settings: AttentionSettings,
    /// The prefix positions before the keys (0 without a prefix).
    prefix_len: usize,
}

impl<B: Backend + FusedAttentionOps, const N: usize> Backward<B, N> for PackedAttentionBackward {
    type State = PackedSaved<B>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let output_grad = grads.consume::<B>(&ops.node);
        let PackedSaved {
            tensors,
            settings,
            prefix_len,
        } = ops.state;
        let (d_query, d_keys, d_values) =
            B::fused_attention_backward(tensors, output_grad, settings);
        let (d_prefix_key, d_key) = split_prefix::<B>(d_keys, prefix_len);
        let (d_prefix_value, d_value) = split_prefix::<B>(d_values, prefix_len);
        let mut parents = ops.parents.into_iter().map(|node| node.map(|node| node.id));
        if let Some(Some(packed)) = parents.next() {
            grads.register::<B>(packed, packed_gradient::<B>([d_query, d_key, d_value]));
        }
        for (parent, grad) in parents.zip([d_prefix_key, d_prefix_value]) {
            register_gradient::<B>(grads, parent, grad);
        }
    }
}

/// The gradient of `[B, H, P + T, d]` keys or values as the prefix's (`None` without one) and
/// the own positions' (views).
fn split_prefix<B: Backend>(
    grad: FloatTensor<B>,
    prefix_len: usize,
) -> (Option<FloatTensor<B>>, FloatTensor<B>) {
    if prefix_len == 0 {
        return (None, grad);
    }
    let len = grad.shape()[2];
    let prefix = narrow::<B>(grad.clone(), 2, 0, prefix_len);
    (Some(prefix), narrow::<B>(grad, 2, prefix_len, len))
}

/// The packed tensor's gradient, `[3, B, H, T, d]`, from its parts' (`[B, H, T, d]` each),
/// written in one pass in the order `[B, T, 3, H, d]` of the projection's output that the
/// packed tensor is a view of — so that the view's own backward (a permutation and a reshape)
/// finds it laid out and copies nothing.
fn packed_gradient<B: Backend>(parts: [FloatTensor<B>; 3]) -> FloatTensor<B> {
    let parts = parts
        .map(|part| {
            let [batch, heads, len, dim] = part.shape().dims();
            // [B, H, T, d] → [B, H, T, 1, d] (a view) → [B, T, 1, H, d] (a view)
            let part = B::float_reshape(part, [batch, heads, len, 1, dim].into());
            B::float_permute(part, &[0, 2, 3, 1, 4])
        })
        .into_iter()
        .collect();
    B::float_permute(B::float_cat(parts, 2), &[2, 0, 3, 1, 4])
}

/// The node of [`FusedAttentionOps::fused_attention_packed`] on `N` parents (see
/// [`PackedAttentionBackward`]).
fn packed_attention<B: Backend + FusedAttentionOps, C: CheckpointStrategy, const N: usize>(
    nodes: [NodeGuard; N],
    qkv: B::FloatTensorPrimitive,
    prefix: Option<(B::FloatTensorPrimitive, B::FloatTensorPrimitive)>,
    bias: B::FloatTensorPrimitive,
    settings: AttentionSettings,
) -> FloatTensor<Autodiff<B, C>> {
    let prefix_len = prefix.as_ref().map_or(0, |(key, _)| key.shape()[2]);
    let (prefix_key, prefix_value) = prefix.unzip();
    let [query, key, value] = unpack::<B>(qkv);
    let (key, value) = (
        after_prefix::<B>(prefix_key, key),
        after_prefix::<B>(prefix_value, value),
    );
    match PackedAttentionBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (output, tensors) = B::fused_attention_forward(query, key, value, bias, settings);
            let saved = PackedSaved {
                tensors,
                settings,
                prefix_len,
            };
            prep.finish(saved, output)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(B::fused_attention(query, key, value, bias, settings))
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

    fn fused_attention_packed(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        settings: AttentionSettings,
    ) -> FloatTensor<Self> {
        let nodes = [qkv.node()];
        // The bias is a mask: a constant here, whatever its own graph.
        let bias = bias.into_primitive();
        packed_attention::<B, C, 1>(nodes, qkv.into_primitive(), None, bias, settings)
    }

    fn fused_attention_packed_after_prefix(
        qkv: FloatTensor<Self>,
        prefix_key: FloatTensor<Self>,
        prefix_value: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        settings: AttentionSettings,
    ) -> FloatTensor<Self> {
        let nodes = [qkv.node(), prefix_key.node(), prefix_value.node()];
        let prefix = (prefix_key.into_primitive(), prefix_value.into_primitive());
        let (qkv, bias) = (qkv.into_primitive(), bias.into_primitive());
        packed_attention::<B, C, 3>(nodes, qkv, Some(prefix), bias, settings)
    }
}
