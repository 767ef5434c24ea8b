//! `peft-serve`: many prompt- and prefix-tuning adapters over one frozen GPT-2, over HTTP.
//!
//! The base weights exist once; each adapter adds only its own parameters. Requests naming
//! different adapters that arrive close together run as one mixed-adapter batch
//! ([`peft_gpt2::generate_mixed_streaming`]), each row getting exactly what it would get alone;
//! tokens are sent as they are chosen, so responses can stream.

pub mod api;
pub mod engine;
pub mod registry;
pub mod text;
