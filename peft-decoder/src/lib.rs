//! What every decoder-only model family shares once it implements [`Decoder`]: the layout of a
//! batch under adapters ([`AdaptedInput`]: prefix slots, virtual tokens, padding, masks and
//! positions as PEFT has them), mixed-adapter forward passes, and generation (greedy or
//! sampled, batched, with a KV cache, one adapter per row if asked).
//!
//! ```no_run
//! use peft_core::Conditioning;
//! use peft_decoder::{Decoder, GenerationConfig, InputError, generate};
//!
//! // Any model family that implements `Decoder` (GPT-2 in `peft-gpt2`) generates the same way.
//! fn continue_text<D: Decoder>(model: &D, prompt: Vec<u32>, eos: u32) -> Result<Vec<u32>, InputError> {
//!     let settings = GenerationConfig::greedy(20, eos);
//!     let mut rows = generate(model, &[prompt], &Conditioning::none(), &settings)?;
//!     Ok(rows.remove(0))
//! }
//! # let _ = continue_text::<peft_gpt2::Gpt2>;
//! ```

pub mod adapted;
pub mod attention;
pub mod batch;
pub mod checkpoint;
mod cpu_exp;
pub mod decoder;
mod dropout_mask;
pub mod error;
pub mod extension;
pub mod fused_adamw;
pub mod fused_attention;
pub mod fused_cross_entropy;
pub mod fused_dropout;
pub mod fused_layers;
pub mod fused_rope;
pub mod generate;
pub mod init;
pub mod known_gradient;
pub mod layout;
pub mod linear;
pub mod loss;
pub mod mixed;
pub mod precision;

pub use adapted::Adapted;
pub use batch::{PadSide, PaddedRows};
pub use decoder::{Decoder, ForwardInput, KvCache, LayerCache};
pub use error::InputError;
pub use generate::{
    GenerationConfig, RowFlow, Sampling, generate, generate_mixed, generate_mixed_streaming,
};
pub use layout::{AdaptedInput, MixedRow};
pub use mixed::forward_mixed;
