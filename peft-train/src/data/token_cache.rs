//! Tokenised datasets kept on disk, so that a dataset is tokenised once: the next run on the
//! same file (a resumed run, another method, a sweep over learning rates, `eval`) reads its
//! tokens back instead.
//!
//! An entry is keyed by a SHA-256 of everything its tokens depend on — the file's bytes, the
//! whole tokenizer, the model's vocabulary size, the length limit, what to do with overlong
//! examples and the verbalizer —
//! so an edited file or another tokenizer never reads stale tokens. Entries are safetensors
//! files (the token ids, targets, lengths, classes and source lines as flat arrays, with a
//! SHA-256 of their contents: a damaged entry would otherwise train on wrong tokens, or panic
//! on an id past the vocabulary); one that cannot be read is tokenised again and replaced. The cache is an optimisation: failing to
//! write it is a warning, never an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use sha2::{Digest, Sha256};

use crate::data::{
    Dataset, Overlong, TokenizedExample, Verbalizer, Vocabulary, parse_examples, tokenize,
};

/// Bump when the entry layout or the tokenisation rules change.
const FORMAT: &str = "peft-rs tokenized dataset v2";

/// The arrays of an entry, in the order its checksum covers them.
const ARRAYS: [&str; 5] = ["ids", "labels", "lengths", "classes", "lines"];

/// A directory of tokenised datasets.
#[derive(Clone, Debug)]
pub struct TokenCache {
    dir: PathBuf,
}

/// Everything a dataset's tokens depend on besides the file.
pub struct TokenizeSettings<'a> {
    /// The tokenizer, serialised (its `tokenizer.json`).
    pub tokenizer_json: &'a str,
    /// The model's vocabulary size, which every token id was checked against.
    pub vocab_size: usize,
    pub max_len: usize,
    pub overlong: Overlong,
    /// The training set's verbalizer, for a validation set.
    pub verbalizer: Option<&'a Verbalizer>,
}

impl TokenCache {
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$PEFT_RS_CACHE/tokenized`, else `$XDG_CACHE_HOME/peft-rs/tokenized`, else
    /// `~/.cache/peft-rs/tokenized`; `None` with no home directory.
    pub fn default_location() -> Option<Self> {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let root = var("PEFT_RS_CACHE")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("peft-rs")))
            .or_else(|| var("HOME").map(|d| d.join(".cache").join("peft-rs")))?;
        Some(Self::at(root.join("tokenized")))
    }

    /// The entry for a file with these contents, tokenised with these settings.
    pub fn entry(&self, contents: &[u8], settings: &TokenizeSettings<'_>) -> Result<PathBuf> {
        let mut key = Sha256::new();
        let verbalizer = serde_json::to_string(&settings.verbalizer)?;
        let overlong = format!("{:?}", settings.overlong);
        for part in [
            FORMAT.as_bytes(),
            contents,
            settings.tokenizer_json.as_bytes(),
            &settings.vocab_size.to_le_bytes(),
            &settings.max_len.to_le_bytes(),
            overlong.as_bytes(),
            verbalizer.as_bytes(),
        ] {
            // Length-prefixed, so that moving bytes between parts changes the key.
            key.update((part.len() as u64).to_le_bytes());
            key.update(part);
        }
        let hex: String = key.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(self.dir.join(format!("{hex}.safetensors")))
    }
}

/// Reads and tokenises the dataset at `path` (see [`tokenize`]), or reads its tokens from
/// `cache` when an earlier run stored them. Says whether they came from the cache.
pub fn load_tokenized(
    path: &Path,
    vocabulary: Vocabulary<'_>,
    max_len: usize,
    overlong: Overlong,
    verbalizer: Option<Verbalizer>,
    cache: Option<&TokenCache>,
) -> Result<(Dataset, bool)> {
    let contents =
        std::fs::read(path).with_context(|| format!("cannot read dataset {}", path.display()))?;
    let entry = match cache {
        Some(cache) => {
            let tokenizer_json = match vocabulary.tokenizer {
                Some(tokenizer) => tokenizer.to_json()?,
                None => String::new(),
            };
            let settings = TokenizeSettings {
                tokenizer_json: &tokenizer_json,
                vocab_size: vocabulary.size,
                max_len,
                overlong,
                verbalizer: verbalizer.as_ref(),
            };
            Some(cache.entry(&contents, &settings)?)
        }
        None => None,
    };
    if let Some(entry) = &entry {
        match read_entry(entry) {
            Ok(Some(dataset)) => return Ok((dataset, true)),
            Ok(None) => {}
            Err(err) => tracing::warn!("{err:#}; tokenising {} again", path.display()),
        }
    }
    let text = String::from_utf8(contents)
        .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
    let dataset = tokenize(
        path,
        parse_examples(path, &text)?,
        vocabulary,
        max_len,
        overlong,
        verbalizer,
    )?;
    if let Some(entry) = &entry
        && let Err(err) = write_entry(entry, &dataset, path)
    {
        tracing::warn!("cannot cache the tokens of {}: {err:#}", path.display());
    }
    Ok((dataset, false))
}

/// Reads an entry; `Ok(None)` when there is none.
pub fn read_entry(entry: &Path) -> Result<Option<Dataset>> {
    let bytes = match std::fs::read(entry) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("reading {}", entry.display())),
    };
    decode(&bytes)
        .with_context(|| format!("{} is not a readable token cache entry", entry.display()))
        .map(Some)
}

/// Writes an entry atomically (a concurrent reader sees the old file or the new one).
pub fn write_entry(entry: &Path, dataset: &Dataset, source: &Path) -> Result<()> {
    let encoded = encode(dataset, source)?;
    if let Some(dir) = entry.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    peft_runtime::write_atomically(entry, &encoded)?;
    Ok(())
}

fn encode(dataset: &Dataset, source: &Path) -> Result<Vec<u8>> {
    let examples = &dataset.examples;
    let ids: Vec<u8> = examples
        .iter()
        .flat_map(|e| &e.ids)
        .flat_map(|id| id.to_le_bytes())
        .collect();
    let labels: Vec<u8> = examples
        .iter()
        .flat_map(|e| &e.labels)
        .flat_map(|label| label.to_le_bytes())
        .collect();
    let lengths: Vec<u8> = examples
        .iter()
        .flat_map(|e| (e.ids.len() as u64).to_le_bytes())
        .collect();
    let classes: Vec<u8> = examples
        .iter()
        .flat_map(|e| e.class.map_or(-1, |c| c as i64).to_le_bytes())
        .collect();
    let lines: Vec<u8> = examples
        .iter()
        .flat_map(|e| (e.line as u64).to_le_bytes())
        .collect();
    let tokens = ids.len() / 4;
    let n = examples.len();
    let tensors = [
        ("ids", TensorView::new(Dtype::U32, vec![tokens], &ids)?),
        (
            "labels",
            TensorView::new(Dtype::I64, vec![tokens], &labels)?,
        ),
        ("lengths", TensorView::new(Dtype::U64, vec![n], &lengths)?),
        ("classes", TensorView::new(Dtype::I64, vec![n], &classes)?),
        ("lines", TensorView::new(Dtype::U64, vec![n], &lines)?),
    ];
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        (
            "sha256".to_string(),
            checksum([&ids, &labels, &lengths, &classes, &lines]),
        ),
        ("source".to_string(), source.display().to_string()),
        ("truncated".to_string(), dataset.truncated.to_string()),
        (
            "verbalizer".to_string(),
            serde_json::to_string(&dataset.verbalizer)?,
        ),
    ]);
    Ok(safetensors::serialize(tensors, Some(metadata))?)
}

/// SHA-256 of an entry's arrays (in [`ARRAYS`] order, each length-prefixed), in hex.
fn checksum(arrays: [&[u8]; 5]) -> String {
    let mut hash = Sha256::new();
    for array in arrays {
        hash.update((array.len() as u64).to_le_bytes());
        hash.update(array);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn decode(bytes: &[u8]) -> Result<Dataset> {
    let file = SafeTensors::deserialize(bytes)?;
    let (_, header) = SafeTensors::read_metadata(bytes)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let field = |name: &str| {
        metadata
            .get(name)
            .with_context(|| format!("no `{name}` in its metadata"))
    };
    if field("format")? != FORMAT {
        bail!("written by another version ({})", field("format")?);
    }
    let arrays = ARRAYS.map(|name| file.tensor(name).map(|view| view.data().to_vec()));
    let arrays: Vec<Vec<u8>> = arrays.into_iter().collect::<Result<_, _>>()?;
    if field("sha256")? != &checksum(std::array::from_fn(|i| arrays[i].as_slice())) {
        bail!("its contents do not match their checksum (the file is damaged)");
    }
    let words = |name: &str, dtype: Dtype| -> Result<Vec<[u8; 8]>> {
        let view = file.tensor(name)?;
        if view.dtype() != dtype {
            bail!("`{name}` is {:?}, not {dtype:?}", view.dtype());
        }
        let size = dtype.bitsize() / 8;
        Ok(view
            .data()
            .chunks_exact(size)
            .map(|chunk| {
                let mut word = [0u8; 8];
                word[..size].copy_from_slice(chunk);
                word
            })
            .collect())
    };
    let ids: Vec<u32> = words("ids", Dtype::U32)?
        .into_iter()
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .collect();
    let labels: Vec<i64> = words("labels", Dtype::I64)?
        .into_iter()
        .map(i64::from_le_bytes)
        .collect();
    let lengths = words("lengths", Dtype::U64)?;
    let classes = words("classes", Dtype::I64)?;
    let lines = words("lines", Dtype::U64)?;
    let total = lengths
        .iter()
        .try_fold(0u64, |sum, &w| sum.checked_add(u64::from_le_bytes(w)));
    if total != Some(ids.len() as u64)
        || labels.len() != ids.len()
        || classes.len() != lengths.len()
        || lines.len() != lengths.len()
    {
        bail!("its arrays do not agree in length");
    }
    let mut examples = Vec::with_capacity(lengths.len());
    let mut start = 0;
    for ((length, class), line) in lengths.into_iter().zip(classes).zip(lines) {
        let end = start + u64::from_le_bytes(length) as usize;
        let class = i64::from_le_bytes(class);
        examples.push(TokenizedExample {
            ids: ids[start..end].to_vec(),
            labels: labels[start..end].to_vec(),
            class: usize::try_from(class).ok(),
            line: u64::from_le_bytes(line) as usize,
        });
        start = end;
    }
    Ok(Dataset {
        examples,
        truncated: field("truncated")?.parse()?,
        verbalizer: serde_json::from_str(field("verbalizer")?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset() -> Dataset {
        Dataset {
            examples: vec![
                TokenizedExample {
                    ids: vec![5, 70000, 3],
                    labels: vec![-100, 70000, 3],
                    class: Some(1),
                    line: 2,
                },
                TokenizedExample {
                    ids: vec![9],
                    labels: vec![9],
                    class: None,
                    line: 4,
                },
            ],
            truncated: 1,
            verbalizer: Some(Verbalizer {
                labels: vec!["no".into(), "yes".into()],
                tokens: vec![vec![11, 12], vec![11, 13]],
                shared_prefix: 1,
            }),
        }
    }

    fn settings(max_len: usize) -> TokenizeSettings<'static> {
        TokenizeSettings {
            tokenizer_json: "{\"model\": 1}",
            vocab_size: 320,
            max_len,
            overlong: Overlong::Truncate,
            verbalizer: None,
        }
    }

    #[test]
    fn entries_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::at(dir.path());
        let entry = cache.entry(b"{\"text\": \"a\"}\n", &settings(64)).unwrap();
        assert!(read_entry(&entry).unwrap().is_none());
        write_entry(&entry, &dataset(), Path::new("data.jsonl")).unwrap();
        assert_eq!(read_entry(&entry).unwrap().unwrap(), dataset());
    }

    #[test]
    fn the_key_covers_contents_and_settings() {
        let cache = TokenCache::at("/cache");
        let base = cache.entry(b"abc", &settings(64)).unwrap();
        assert_eq!(base, cache.entry(b"abc", &settings(64)).unwrap());
        assert_ne!(base, cache.entry(b"abd", &settings(64)).unwrap());
        assert_ne!(base, cache.entry(b"abc", &settings(63)).unwrap());
        let other_tokenizer = TokenizeSettings {
            tokenizer_json: "{\"model\": 2}",
            ..settings(64)
        };
        assert_ne!(base, cache.entry(b"abc", &other_tokenizer).unwrap());
        let other_model = TokenizeSettings {
            vocab_size: 321,
            ..settings(64)
        };
        assert_ne!(base, cache.entry(b"abc", &other_model).unwrap());
        let reject = TokenizeSettings {
            overlong: Overlong::Reject,
            ..settings(64)
        };
        assert_ne!(base, cache.entry(b"abc", &reject).unwrap());
        let verbalizer = dataset().verbalizer.unwrap();
        let labelled = TokenizeSettings {
            verbalizer: Some(&verbalizer),
            ..settings(64)
        };
        assert_ne!(base, cache.entry(b"abc", &labelled).unwrap());
    }

    #[test]
    fn a_damaged_entry_is_an_error_not_a_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("x.safetensors");
        let good = encode(&dataset(), Path::new("data.jsonl")).unwrap();
        std::fs::write(&entry, &good[..good.len() - 3]).unwrap();
        let err = read_entry(&entry).unwrap_err();
        assert!(format!("{err:#}").contains("not a readable token cache entry"));
    }

    /// A flipped bit inside the token ids still parses as safetensors; the checksum catches it.
    #[test]
    fn a_changed_token_is_caught_by_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("x.safetensors");
        let mut bytes = encode(&dataset(), Path::new("data.jsonl")).unwrap();
        let first_id = 5u32.to_le_bytes();
        let at = bytes
            .windows(4)
            .rposition(|w| w == first_id)
            .expect("the ids are in the file");
        bytes[at] ^= 0x40;
        std::fs::write(&entry, &bytes).unwrap();
        let err = read_entry(&entry).unwrap_err();
        assert!(format!("{err:#}").contains("checksum"), "{err:#}");
    }
}
