//! Rotary position embeddings as Hugging Face computes them: inverse frequencies from
//! `rope_theta` (with Llama 3's scaling if configured), phases `position × frequency`, and each
//! head's first half of dimensions rotated against its second half (`rotate_half`).

use burn::prelude::*;
use burn::tensor::DType;
use peft_decoder::fused_rope::RotaryPhases;

use crate::config::{LlamaConfig, RopeScaling};

/// The inverse frequencies of one head, `head_dim / 2` of them.
#[derive(Clone, Debug)]
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(config: &LlamaConfig) -> Self {
        // In f32 and in the order of operations `transformers` uses, so that the frequencies
        // are Hugging Face's to the last bit: a one-ulp difference, multiplied by a position,
        // shifts every phase after it.
        let dim = config.head_dim as f32;
        let theta = config.rope_theta as f32;
        let base = (0..config.head_dim)
            .step_by(2)
            .map(|i| 1.0 / theta.powf(i as f32 / dim));
        let inv_freq = match config.rope_scaling {
            RopeScaling::Default => base.collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let context = original_max_position_embeddings as f32;
                let (factor, low, high) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                );
                let (low_wavelen, high_wavelen) = (context / low, context / high);
                base.map(|freq| {
                    let wavelen = (2.0 * std::f32::consts::PI) / freq;
                    if wavelen < high_wavelen {
                        freq
                    } else if wavelen > low_wavelen {
                        freq / factor
                    } else {
                        let smooth = (context / wavelen - low) / (high - low);
                        (1.0 - smooth) * freq / factor + smooth * freq
                    }
                })
                .collect()
            }
        };
        Self { inv_freq }
    }

    /// `cos` and `sin` of every position's phases, each `[B, 1, T, head_dim]`, for positions
    /// `[B, T]`: computed in f32, then rounded to `dtype` (the activations' type) once for
    /// every layer, as transformers' rotary embedding does.
    pub fn phases(&self, positions: Tensor<2, Int>, dtype: DType) -> RotaryPhases {
        let [batch, len] = positions.dims();
        let half = self.inv_freq.len();
        let device = positions.device();
        let inv_freq =
            Tensor::<1>::from_data(TensorData::new(self.inv_freq.clone(), [half]), &device)
                .reshape([1, 1, half]);
        let freqs = positions.float().reshape([batch, len, 1]) * inv_freq;
        let phases = Tensor::cat(vec![freqs.clone(), freqs], 2).unsqueeze_dim::<4>(1);
        RotaryPhases::new(phases.clone().cos().cast(dtype), phases.sin().cast(dtype))
    }
}

/// `x·cos + rotate_half(x)·sin` for `x` `[B, heads, T, head_dim]`, the phases in `x`'s type
/// ([`Rope::phases`]): one operation with its own backward where the backend runs
/// `peft_decoder`'s extensions ([`peft_decoder::fused_rope`]).
pub fn rotate(x: Tensor<4>, phases: &RotaryPhases) -> Tensor<4> {
    peft_decoder::fused_rope::rope(x, phases)
}
