//! Fused attention on LibTorch: PyTorch's `scaled_dot_product_attention`, which picks its fused
//! kernels (flash attention for CPU; memory-efficient attention on CUDA, which takes an
//! additive bias) forward and backward.
//!
//! The bias goes in as a float `attn_mask` with `is_causal = false`: the causal part is already
//! in it, bottom-right aligned for the prefix and the cache, which PyTorch's own `is_causal`
//! (top-left aligned) would get wrong.

use burn::backend::libtorch::{LibTorch, TchTensor};
use burn::backend::tensor::FloatTensor;

use super::FusedAttentionOps;
use crate::extension::torch_gradients;

fn attention(
    query: &tch::Tensor,
    key: &tch::Tensor,
    value: &tch::Tensor,
    bias: &tch::Tensor,
    scale: f64,
) -> tch::Tensor {
    let bias = bias.to_kind(query.kind());
    tch::Tensor::scaled_dot_product_attention(
        query,
        key,
        value,
        Some(&bias),
        0.0,
        false,
        scale,
        false,
    )
}

impl FusedAttentionOps for LibTorch {
    fn fused_attention(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let output = tch::no_grad(|| {
            attention(
                &query.tensor,
                &key.tensor,
                &value.tensor,
                &bias.tensor,
                scale,
            )
        });
        TchTensor::new(output)
    }

    /// PyTorch's own backward of the same call: the forward is run again on inputs that track
    /// gradients (it is the cheaper half), and autograd runs SDPA's fused backward kernel.
    fn fused_attention_backward(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [d_query, d_key, d_value] = torch_gradients(
            [&query.tensor, &key.tensor, &value.tensor],
            &output_grad.tensor,
            |[query, key, value]| attention(query, key, value, &bias.tensor, scale),
        );
        (d_query, d_key, d_value)
    }
}
