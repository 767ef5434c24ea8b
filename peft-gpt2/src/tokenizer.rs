//! GPT-2's byte-level BPE tokenizer, through the `tokenizers` crate.

use std::path::{Path, PathBuf};

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};

/// GPT-2's only special token: end of text, also used as padding.
pub const END_OF_TEXT: &str = "<|endoftext|>";

#[derive(Clone)]
pub struct Gpt2Tokenizer {
    inner: Tokenizer,
    eos_id: u32,
    /// The vocabulary size of the model the ids are for (see [`Gpt2Tokenizer::for_model`]).
    model_vocab: Option<usize>,
}

impl std::fmt::Debug for Gpt2Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpt2Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos_id", &self.eos_id)
            .finish()
    }
}

impl Gpt2Tokenizer {
    /// Loads `tokenizer.json` from `dir`, or else builds the tokenizer from `vocab.json` and
    /// `merges.txt` as GPT-2 defines it.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_dir_for(dir, None)
    }

    /// [`Self::from_dir`] for a model whose `config.json` names its end-of-text token: that id
    /// is the end of text when the vocabulary has no `<|endoftext|>` (Llama 3, Mistral).
    pub fn from_dir_for(dir: &Path, eos_token_id: Option<u32>) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            let inner = Tokenizer::from_file(&json).map_err(|err| tokenizer_error(&json, err))?;
            return Self::with_eos_or(inner, &json, eos_token_id);
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if vocab.is_file() && merges.is_file() {
            return Self::from_vocab_and_merges(&vocab, &merges);
        }
        Err(Error::Tokenizer {
            path: dir.to_path_buf(),
            message: "no tokenizer.json, nor vocab.json with merges.txt".into(),
        })
    }

    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path).map_err(|err| tokenizer_error(path, err))?;
        Self::with_eos(inner, path)
    }

    /// Builds the GPT-2 pipeline from its two classic files: byte-level pre-tokenisation
    /// without a prefix space, BPE, and the byte-level decoder.
    pub fn from_vocab_and_merges(vocab: &Path, merges: &Path) -> Result<Self> {
        let bpe = BPE::from_file(&path_str(vocab)?, &path_str(merges)?)
            .build()
            .map_err(|err| tokenizer_error(vocab, err))?;
        let mut inner = Tokenizer::new(bpe);
        inner
            .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
            .with_decoder(Some(ByteLevel::default()))
            .with_post_processor(Some(ByteLevel::default().trim_offsets(false)));
        inner.add_special_tokens(&[AddedToken::from(END_OF_TEXT, true)]);
        Self::with_eos(inner, vocab)
    }

    fn with_eos(inner: Tokenizer, path: &Path) -> Result<Self> {
        Self::with_eos_or(inner, path, None)
    }

    fn with_eos_or(inner: Tokenizer, path: &Path, fallback: Option<u32>) -> Result<Self> {
        let eos_id =
            inner
                .token_to_id(END_OF_TEXT)
                .or(fallback)
                .ok_or_else(|| Error::Tokenizer {
                    path: path.to_path_buf(),
                    message: format!("the vocabulary has no `{END_OF_TEXT}` token"),
                })?;
        Ok(Self {
            inner,
            eos_id,
            model_vocab: None,
        })
    }

    /// This tokenizer, checked against the model whose embedding table has `vocab_size` rows:
    /// from then on [`encode`](Self::encode) refuses text with a token the model has no row
    /// for (a tokenizer with added tokens past the model's vocabulary, or another model's
    /// tokenizer), instead of letting it index past the table.
    pub fn for_model(mut self, vocab_size: usize, path: &Path) -> Result<Self> {
        if self.eos_id as usize >= vocab_size {
            return Err(Error::Tokenizer {
                path: path.to_path_buf(),
                message: format!(
                    "its `{END_OF_TEXT}` token has id {}, outside the model's vocabulary of \
                     {vocab_size}: this tokenizer was not made for this model",
                    self.eos_id
                ),
            });
        }
        self.model_vocab = Some(vocab_size);
        Ok(self)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|err| Error::Input(format!("cannot tokenize text: {err}")))?;
        let ids = encoding.get_ids();
        if let Some(limit) = self.model_vocab
            && let Some((index, &id)) = ids
                .iter()
                .enumerate()
                .find(|&(_, &id)| id as usize >= limit)
        {
            return Err(Error::Input(format!(
                "the text holds token `{}` (id {id}), outside the model's vocabulary of {limit} \
                 ids: the tokenizer ({} tokens) does not belong to this model; use the \
                 tokenizer the model was trained with",
                encoding.get_tokens()[index],
                self.vocab_size()
            )));
        }
        Ok(ids.to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|err| Error::Input(format!("cannot decode token ids: {err}")))
    }

    /// The end-of-text token id, which is also GPT-2's padding id.
    /// The whole tokenizer as `tokenizer.json` text: what identifies it, for caches.
    pub fn to_json(&self) -> Result<String> {
        self.inner
            .to_string(false)
            .map_err(|err| Error::Input(format!("cannot serialise the tokenizer: {err}")))
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

fn path_str(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Tokenizer {
            path: PathBuf::from(path),
            message: "path is not valid UTF-8".into(),
        })
}

fn tokenizer_error(path: &Path, err: impl std::fmt::Display) -> Error {
    Error::Tokenizer {
        path: path.to_path_buf(),
        message: err.to_string(),
    }
}
