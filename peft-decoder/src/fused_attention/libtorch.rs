//! Fused attention on LibTorch: PyTorch's `scaled_dot_product_attention`, which picks its fused
//! kernels (flash attention for CPU; memory-efficient attention on CUDA, which takes an
//! additive bias and dropout) forward and backward.
//!
//! The bias goes in as a float `attn_mask` with `is_causal = false`: the causal part is already
//! in it, bottom-right aligned for the prefix and the cache, which PyTorch's own `is_causal`
//! (top-left aligned) would get wrong.
//!
//! Without dropout a tracked forward keeps only its operands, and the backward runs the forward
//! again under PyTorch's autograd to reach SDPA's backward kernel. With dropout that second
//! forward would draw another mask from PyTorch's generator, so the forward itself runs under
//! autograd and keeps its graph, and the backward is PyTorch's own for that very call. (Keeping
//! the graph always would spare the second forward at the price of each layer's output and
//! statistics: on LibTorch CPU, prompt tuning at 4 × 512, it gained no speed and cost 235 MiB,
//! so the cheaper-in-memory form stays where it is correct; BENCHMARKS.md.)

use burn::backend::libtorch::{LibTorch, TchTensor};
use burn::backend::tensor::FloatTensor;

use super::{AttentionSaved, FusedAttentionOps};
use crate::extension::{graph_gradients, torch_gradients};

fn attention(
    [query, key, value]: [&tch::Tensor; 3],
    bias: &tch::Tensor,
    scale: f64,
    dropout: f64,
) -> tch::Tensor {
    let bias = bias.to_kind(query.kind());
    tch::Tensor::scaled_dot_product_attention(
        query,
        key,
        value,
        Some(&bias),
        dropout,
        false,
        scale,
        false,
    )
}

/// The torch tensors of Burn's query, key and value.
fn operands<'a>(
    query: &'a TchTensor,
    key: &'a TchTensor,
    value: &'a TchTensor,
) -> [&'a tch::Tensor; 3] {
    [&query.tensor, &key.tensor, &value.tensor]
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
        let output = tch::no_grad(|| {
            attention(operands(&query, &key, &value), &bias.tensor, scale, dropout)
        });
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
        if dropout == 0.0 {
            let output = Self::fused_attention(
                query.clone(),
                key.clone(),
                value.clone(),
                bias.clone(),
                scale,
                0.0,
                0,
            );
            let saved = AttentionSaved {
                query,
                key,
                value,
                bias_or_graph: bias,
            };
            return (output, saved);
        }
        let (query, key, value) = (graph_leaf(&query), graph_leaf(&key), graph_leaf(&value));
        let graph = TchTensor::new(tch::with_grad(|| {
            attention(operands(&query, &key, &value), &bias.tensor, scale, dropout)
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

    /// PyTorch's backward: of a forward run again on the operands (no dropout), or of the graph
    /// the forward kept.
    fn fused_attention_backward(
        saved: AttentionSaved<Self>,
        output_grad: FloatTensor<Self>,
        scale: f64,
        dropout: f64,
        _seed: u64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let inputs = operands(&saved.query, &saved.key, &saved.value);
        let [d_query, d_key, d_value] = if dropout == 0.0 {
            let bias = &saved.bias_or_graph.tensor;
            torch_gradients(inputs, &output_grad.tensor, |inputs| {
                attention(inputs.each_ref(), bias, scale, 0.0)
            })
        } else {
            graph_gradients(&saved.bias_or_graph.tensor, &output_grad.tensor, inputs)
        };
        (d_query, d_key, d_value)
    }
}
