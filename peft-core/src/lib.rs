//! Adapters for frozen language models.
//!
//! This crate knows nothing about any particular model: it holds what every adapter and every
//! model integration shares — the run-time [`device`] choice and the per-layer key/value
//! [`kv`] tensors that prefix-style adapters hand to a model's attention.

pub mod conditioning;
pub mod device;
pub mod kv;

pub use conditioning::Conditioning;
pub use device::{Backend, DeviceError};
pub use kv::{LayerKv, PrefixKv};
