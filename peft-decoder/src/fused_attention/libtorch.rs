//! Fused attention on LibTorch: PyTorch's `scaled_dot_product_attention`, which picks its fused
//! kernels (flash attention for CPU; memory-efficient attention on CUDA, which takes an
//! additive bias and dropout) forward and backward.
//!
//! The bias goes in as a float `attn_mask` with `is_causal = false`: the causal part is already
//! in it, bottom-right aligned for the prefix and the cache, which PyTorch's own `is_causal`
//! (top-left aligned) would get wrong.
//!
//! A tracked forward runs under PyTorch's autograd and keeps its graph, so that the backward is
//! PyTorch's own for that very call: the kernel's saved statistics spare it a second forward,
//! and its dropout mask (drawn from PyTorch's generator, which a second forward would advance)
//! is the one the forward applied.

use burn::backend::libtorch::{LibTorch, TchTensor};
use burn::backend::tensor::FloatTensor;

use super::{AttentionSaved, FusedAttentionOps};
use crate::extension::graph_gradients;

fn attention(
    query: &TchTensor,
    key: &TchTensor,
    value: &TchTensor,
    bias: &TchTensor,
    scale: f64,
    dropout: f64,
) -> tch::Tensor {
    let bias = bias.tensor.to_kind(query.tensor.kind());
    tch::Tensor::scaled_dot_product_attention(
        &query.tensor,
        &key.tensor,
        &value.tensor,
        Some(&bias),
        dropout,
        false,
        scale,
        false,
    )
}

/// `tensor` as a leaf of PyTorch's autograd that gradients are asked for. It shares `tensor`'s
/// storage reference, so Burn does not write into that buffer in place while the graph that
/// saved it lives (PyTorch would refuse the backward if it did).
fn graph_leaf(tensor: &TchTensor) -> TchTensor {
    TchTensor::from_existing(
        tensor.tensor.detach().set_requires_grad(true),
        tensor.storage.clone(),
    )
}

impl FusedAttentionOps for LibTorch {
    fn fused_attention(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
        dropout: f64,
        _seed: u64,
    ) -> FloatTensor<Self> {
        let output = tch::no_grad(|| attention(&query, &key, &value, &bias, scale, dropout));
        TchTensor::new(output)
    }

    fn fused_attention_forward(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
        dropout: f64,
        _seed: u64,
    ) -> (FloatTensor<Self>, AttentionSaved<Self>) {
        let (query, key, value) = (graph_leaf(&query), graph_leaf(&key), graph_leaf(&value));
        let graph = TchTensor::new(tch::with_grad(|| {
            attention(&query, &key, &value, &bias, scale, dropout)
        }));
        // Burn's output is the same values without the graph, and shares the graph's storage
        // reference for the reason `graph_leaf` gives.
        let output = TchTensor::from_existing(graph.tensor.detach(), graph.storage.clone());
        let saved = AttentionSaved {
            query,
            key,
            value,
            bias_or_graph: graph,
        };
        (output, saved)
    }

    /// PyTorch's backward of the graph the forward kept.
    fn fused_attention_backward(
        saved: AttentionSaved<Self>,
        output_grad: FloatTensor<Self>,
        _scale: f64,
        _dropout: f64,
        _seed: u64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [d_query, d_key, d_value] = graph_gradients(
            &saved.bias_or_graph.tensor,
            &output_grad.tensor,
            [&saved.query.tensor, &saved.key.tensor, &saved.value.tensor],
        );
        (d_query, d_key, d_value)
    }
}
