//! Fused attention on LibTorch: PyTorch's `scaled_dot_product_attention`, which picks its fused
//! kernels forward and backward (on the CPU flash attention; on CUDA flash attention for half
//! types without a mask operand, the memory-efficient kernel otherwise).
//!
//! Where the bias is exactly the causal mask ([`Masking::Causal`]: no padding), no mask operand
//! goes in: PyTorch's own `is_causal`, which lets CUDA pick flash attention and lets the kernels
//! skip the blocks above the diagonal. PyTorch aligns that mask top-left while ours is
//! aligned bottom-right (the prefix is open to every query), so `S − T` zero query rows go in
//! front and their outputs are dropped: query `S − T + i` of the padded block sees the first
//! `S − T + i + 1` keys, as query `i` must. Otherwise the mask goes in as a float `attn_mask`
//! with `is_causal = false` — the keys' bias with causality added to it here, `[B, 1, T, S]`
//! — which rules flash attention out on CUDA (the memory-efficient kernel takes it).
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

use super::{
    AttentionSaved, AttentionSettings, FusedAttentionOps, Masking, forward_keeping_operands,
};
use crate::attention::MASKED_SCORE;
use crate::extension::{graph_gradients, torch_gradients};

fn attention(
    [query, key, value]: [&tch::Tensor; 3],
    bias: &tch::Tensor,
    settings: AttentionSettings,
) -> tch::Tensor {
    let groups = query.size()[1] / key.size()[1];
    let sdpa = |query: &tch::Tensor, mask: Option<&tch::Tensor>, is_causal: bool| {
        let grouped = groups > 1 && reads_groups_natively(query, mask.is_some());
        // Otherwise Hugging Face's `repeat_kv` (a no-op without groups); autograd sums the
        // copies' gradients back.
        let repeat = |t: &tch::Tensor| {
            if groups > 1 && !grouped {
                t.repeat_interleave_self_int(groups, 1, None)
            } else {
                t.shallow_clone()
            }
        };
        tch::Tensor::scaled_dot_product_attention(
            query,
            &repeat(key),
            &repeat(value),
            mask,
            settings.dropout,
            is_causal,
            settings.scale,
            grouped,
        )
    };
    let (queries, keys) = (query.size()[2], key.size()[2]);
    let hidden_rows = keys - queries;
    match settings.masking {
        // One query (a decoded token) sees every key.
        Masking::Causal if queries == 1 => sdpa(query, None, false),
        Masking::Causal if hidden_rows == 0 => sdpa(query, None, true),
        // At most as many added rows as real ones; past that (a long cache before a few new
        // tokens) the added rows would outnumber the real ones, and the bias goes in instead.
        Masking::Causal if hidden_rows > 0 && hidden_rows <= queries => {
            let size = query.size(); // [B, H, T, d]
            let padding = tch::Tensor::zeros(
                [size[0], size[1], hidden_rows, size[3]],
                (query.kind(), query.device()),
            );
            let padded = tch::Tensor::cat(&[&padding, query], 2);
            sdpa(&padded, None, true).narrow(2, hidden_rows, queries)
        }
        Masking::Bias => sdpa(query, Some(&bias.to_kind(query.kind())), false),
        // The keys' own bias, `[B or 1, 1, 1, S]`, with causality added: PyTorch takes one mask.
        Masking::Causal | Masking::CausalAndBias => {
            let causal = tch::Tensor::ones([queries, keys], (bias.kind(), bias.device()))
                .triu(hidden_rows + 1)
                * MASKED_SCORE;
            sdpa(query, Some(&(bias + causal).to_kind(query.kind())), false)
        }
    }
}

/// Whether PyTorch's SDPA reads grouped key/value heads (`enable_gqa`) with a fused kernel for
/// this call, rather than falling back to its unfused math kernel: the CPU's flash kernel
/// always does; on CUDA only flash attention does, which needs a half type and no mask operand
/// (the memory-efficient kernel that takes a mask has no grouped form), the rule Hugging Face's
/// `use_gqa_in_sdpa` follows too. Elsewhere the heads are repeated first.
fn reads_groups_natively(query: &tch::Tensor, has_mask: bool) -> bool {
    match query.device() {
        tch::Device::Cpu => true,
        _ => !has_mask && matches!(query.kind(), tch::Kind::BFloat16 | tch::Kind::Half),
    }
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
        settings: AttentionSettings,
    ) -> FloatTensor<Self> {
        let output =
            tch::no_grad(|| attention(operands(&query, &key, &value), &bias.tensor, settings));
        TchTensor::new(output)
    }

    fn fused_attention_forward(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        settings: AttentionSettings,
    ) -> (FloatTensor<Self>, AttentionSaved<Self>) {
        if settings.dropout == 0.0 {
            return forward_keeping_operands::<Self>(query, key, value, bias, settings);
        }
        let (query, key, value) = (graph_leaf(&query), graph_leaf(&key), graph_leaf(&value));
        let graph = TchTensor::new(tch::with_grad(|| {
            attention(operands(&query, &key, &value), &bias.tensor, settings)
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
        settings: AttentionSettings,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let inputs = operands(&saved.query, &saved.key, &saved.value);
        let [d_query, d_key, d_value] = if settings.dropout == 0.0 {
            let bias = &saved.bias_or_graph.tensor;
            torch_gradients(inputs, &output_grad.tensor, |inputs| {
                attention(inputs.each_ref(), bias, settings)
            })
        } else {
            graph_gradients(&saved.bias_or_graph.tensor, &output_grad.tensor, inputs)
        };
        (d_query, d_key, d_value)
    }
}
