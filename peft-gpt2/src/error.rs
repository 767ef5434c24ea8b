//! Errors a user can cause: missing or malformed files, checkpoints that do not fit the config,
//! inputs the model cannot take. Each message names the file or the limit, and what to do.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The I/O error is part of the message, not a separate cause, so that a chain of
    // contexts prints it once.
    #[error("cannot read {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid model config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(
        "no model found at `{0}`: expected a directory with config.json and model.safetensors \
         (or pytorch_model.bin), a GPT-2 preset name, or a Hugging Face hub id"
    )]
    ModelNotFound(String),
    #[error("cannot fetch `{repo}` from the Hugging Face hub: {message}")]
    Hub { repo: String, message: String },
    #[error("checkpoint {path} does not fit the model config: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error("cannot load tokenizer from {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("invalid input: {0}")]
    Input(String),
}
