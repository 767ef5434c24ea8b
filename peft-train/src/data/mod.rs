//! Datasets in JSON Lines: parsing, validation with messages that name the file and line,
//! tokenisation (once, at load), and length limits.
//!
//! One example per line, in one of these shapes:
//! - `{"text": ...}` — language modelling, every token is a target;
//! - `{"prompt": ..., "completion": ...}` — only the completion (and the end-of-text token
//!   appended to it) is a target;
//! - `{"text": ..., "label": ...}` — classification through a verbalizer: the label's words
//!   follow the text and are the target, and accuracy compares the label tokens' scores;
//! - `{"input_ids": [...]}` — already tokenised, every token is a target.
//!
//! Reading a file through the token cache, so that it is tokenised once, is
//! [`crate::data::token_cache::load_tokenized`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use peft_gpt2::Gpt2Tokenizer;
use peft_gpt2::loss::IGNORE_INDEX;
pub use peft_runtime::Vocabulary;

pub mod token_cache;
use serde_json::Value;

/// One line of a dataset, as written.
#[derive(Clone, Debug, PartialEq)]
pub enum Example {
    Text(String),
    PromptCompletion { prompt: String, completion: String },
    Labeled { text: String, label: String },
    Tokens(Vec<u32>),
}

/// A tokenised example: model input and per-token targets.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizedExample {
    pub ids: Vec<u32>,
    /// Target of each position (the token itself where it is predicted, [`IGNORE_INDEX`]
    /// elsewhere); the model learns to predict `labels[t]` from positions before `t`.
    pub labels: Vec<i64>,
    /// Class index for classification examples.
    pub class: Option<usize>,
    /// 1-based line in the source file, for messages.
    pub line: usize,
}

/// What to do with an example longer than the model's context after the virtual tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overlong {
    /// Keep the first tokens that fit (the log counts how many examples were cut).
    Truncate,
    /// Fail, naming the line.
    Reject,
}

/// The verbalizer of a classification task: each class label and the tokens that spell it.
///
/// Labels are told apart at their first differing token: labels that all begin with the same
/// tokens (a lone space token, say) are compared where they diverge, and only there.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verbalizer {
    pub labels: Vec<String>,
    pub tokens: Vec<Vec<u32>>,
    /// How many leading tokens all labels share.
    pub shared_prefix: usize,
}

impl Verbalizer {
    /// Labels are spelled with a leading space, as they follow the text.
    pub fn new(labels: Vec<String>, tokenizer: &Gpt2Tokenizer) -> Result<Self> {
        let tokens: Vec<Vec<u32>> = labels
            .iter()
            .map(|label| {
                tokenizer
                    .encode(&format!(" {label}"))
                    .map_err(anyhow::Error::from)
            })
            .collect::<Result<_>>()?;
        if tokens.iter().any(Vec::is_empty) {
            bail!("a label has no tokens");
        }
        // With one label (a test set of a single class, say) nothing is shared: its first
        // token decides, as it would beside any other label.
        let shortest = tokens.iter().map(Vec::len).min().unwrap_or(0);
        let shared_prefix = if tokens.len() < 2 {
            0
        } else {
            (0..shortest)
                .take_while(|&i| tokens.iter().all(|t| t[i] == tokens[0][i]))
                .count()
        };
        let mut deciding = BTreeMap::new();
        for (label, spelled) in labels.iter().zip(&tokens) {
            let Some(token) = spelled.get(shared_prefix) else {
                let longer = labels
                    .iter()
                    .find(|other| *other != label && other.starts_with(label.as_str()))
                    .map_or_else(|| "another label".to_string(), |l| format!("`{l}`"));
                bail!(
                    "label `{label}` is spelled by the first tokens of {longer}, so no token \
                     tells them apart; rename one of them"
                );
            };
            if let Some(other) = deciding.insert(*token, label) {
                bail!(
                    "labels `{other}` and `{label}` cannot be told apart at their first \
                     differing token; rename one of them"
                );
            }
        }
        Ok(Self {
            labels,
            tokens,
            shared_prefix,
        })
    }

    pub fn class_of(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == label)
    }

    /// The token that decides each class, in class order.
    pub fn deciding_tokens(&self) -> Vec<u32> {
        self.tokens.iter().map(|t| t[self.shared_prefix]).collect()
    }
}

/// A dataset file, parsed and tokenised.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub examples: Vec<TokenizedExample>,
    /// Examples cut to fit (with [`Overlong::Truncate`]).
    pub truncated: usize,
    pub verbalizer: Option<Verbalizer>,
}

/// Reads `path` and parses every line; errors name the file and line.
pub fn read_examples(path: &Path) -> Result<Vec<(usize, Example)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read dataset {}", path.display()))?;
    parse_examples(path, &text)
}

/// Parses the text of the dataset file `path`.
pub fn parse_examples(path: &Path, text: &str) -> Result<Vec<(usize, Example)>> {
    let mut examples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let example = parse_line(line)
            .with_context(|| format!("{}:{number}: {}", path.display(), FORMATS_HINT))?;
        examples.push((number, example));
    }
    if examples.is_empty() {
        bail!(
            "{} has no examples (one JSON object per line expected)",
            path.display()
        );
    }
    Ok(examples)
}

const FORMATS_HINT: &str = "each line must be a JSON object with `text`, `prompt` and \
                            `completion`, `text` and `label`, or `input_ids`";

/// Every key a line may hold.
const KEYS: [&str; 5] = ["text", "label", "prompt", "completion", "input_ids"];

fn parse_line(line: &str) -> Result<Example> {
    let value: Value = serde_json::from_str(line).context("invalid JSON")?;
    let object = value.as_object().context("not a JSON object")?;
    // A key of no shape (a typo such as `lable`) would otherwise silently change what is
    // trained: refuse it, and suggest the key it probably meant.
    if let Some(unknown) = object.keys().find(|k| !KEYS.contains(&k.as_str())) {
        let hint = KEYS
            .iter()
            .find(|known| edit_distance(unknown, known) <= 2)
            .map(|known| format!(" (did you mean `{known}`?)"))
            .unwrap_or_default();
        bail!("unknown key `{unknown}`{hint}");
    }
    let string = |key: &str| -> Result<Option<String>> {
        match object.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) if key == "label" => Ok(Some(n.to_string())),
            Some(other) => bail!("`{key}` must be a string, found {other}"),
        }
    };
    if let Some(ids) = object.get("input_ids") {
        if object.len() > 1 {
            bail!("`input_ids` goes alone: every token is a target, so other keys have no use");
        }
        let ids = ids
            .as_array()
            .context("`input_ids` must be an array of token ids")?
            .iter()
            .map(|id| {
                id.as_u64()
                    .and_then(|id| u32::try_from(id).ok())
                    .with_context(|| format!("`input_ids` holds {id}, not a token id"))
            })
            .collect::<Result<Vec<u32>>>()?;
        if ids.is_empty() {
            bail!("`input_ids` is empty");
        }
        return Ok(Example::Tokens(ids));
    }
    match (
        string("text")?,
        string("label")?,
        string("prompt")?,
        string("completion")?,
    ) {
        (Some(text), Some(label), None, None) => Ok(Example::Labeled { text, label }),
        (Some(text), None, None, None) => Ok(Example::Text(text)),
        (None, None, Some(prompt), Some(completion)) => {
            Ok(Example::PromptCompletion { prompt, completion })
        }
        (None, None, Some(_), None) => bail!("`prompt` without `completion`"),
        (None, None, None, Some(_)) => bail!("`completion` without `prompt`"),
        (None, Some(_), _, _) => bail!("`label` without `text`"),
        (Some(_), _, _, _) => bail!(
            "`text` with `prompt`/`completion` mixes two shapes; use `prompt` and \
             `completion` alone"
        ),
        (None, None, None, None) => bail!("no `text`, `prompt` or `input_ids`"),
    }
}

/// Levenshtein distance, for suggesting the key a typo meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// Tokenises the examples of a dataset.
///
/// `max_len` is what the model allows after the adapter's virtual tokens; `verbalizer` is
/// required for (and only used by) labelled examples — pass the training set's to a
/// validation set so classes keep their indices.
pub fn tokenize(
    path: &Path,
    examples: Vec<(usize, Example)>,
    vocabulary: Vocabulary<'_>,
    max_len: usize,
    overlong: Overlong,
    verbalizer: Option<Verbalizer>,
) -> Result<Dataset> {
    let verbalizer = match verbalizer {
        Some(v) => Some(v),
        None => {
            let mut labels = examples.iter().filter_map(|(line, e)| match e {
                Example::Labeled { label, .. } => Some((*line, label.as_str())),
                _ => None,
            });
            match labels.next() {
                None => None,
                Some((first_line, first)) => {
                    let at = format!("{}:{first_line}", path.display());
                    let tokenizer = vocabulary.tokenizer(&at)?;
                    let distinct: BTreeSet<&str> = std::iter::once(first)
                        .chain(labels.map(|(_, l)| l))
                        .collect();
                    let labels = distinct.into_iter().map(String::from).collect();
                    Some(
                        Verbalizer::new(labels, tokenizer)
                            .with_context(|| format!("the labels of {}", path.display()))?,
                    )
                }
            }
        }
    };
    let mut out = Vec::with_capacity(examples.len());
    let mut truncated = 0;
    for (line, example) in examples {
        let at = || format!("{}:{line}", path.display());
        let encode = |text: &str| -> Result<Vec<u32>> {
            vocabulary.tokenizer(&at())?.encode(text).with_context(at)
        };
        let (mut ids, mut labels, class) = match example {
            Example::Text(text) => {
                let ids = encode(&text)?;
                let labels = ids.iter().map(|&t| i64::from(t)).collect();
                (ids, labels, None)
            }
            Example::Tokens(ids) => {
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocabulary.size) {
                    bail!(
                        "{}: token id {bad} is outside the model's vocabulary of {} ids",
                        at(),
                        vocabulary.size
                    );
                }
                let labels = ids.iter().map(|&t| i64::from(t)).collect();
                (ids, labels, None)
            }
            Example::PromptCompletion { prompt, completion } => {
                let mut ids = encode(&prompt)?;
                let mut labels = vec![IGNORE_INDEX; ids.len()];
                let mut target = encode(&completion)?;
                target.push(vocabulary.tokenizer(&at())?.eos_id());
                labels.extend(target.iter().map(|&t| i64::from(t)));
                ids.extend(target);
                (ids, labels, None)
            }
            Example::Labeled { text, label } => {
                let verbalizer = verbalizer.as_ref().expect("built above from the labels");
                let class = verbalizer.class_of(&label).with_context(|| {
                    format!(
                        "{}: label `{label}` is not one of the training labels {:?}",
                        at(),
                        verbalizer.labels
                    )
                })?;
                let mut ids = encode(&text)?;
                // The label is scored by the position before its deciding token; with no
                // text there may be none (prefix tuning, full fine-tuning).
                if ids.is_empty() {
                    bail!(
                        "{}: `text` is empty; a label is predicted from the text before it, \
                         so give the example some text",
                        at()
                    );
                }
                let mut labels = vec![IGNORE_INDEX; ids.len()];
                let spelled = &verbalizer.tokens[class];
                labels.extend(spelled.iter().map(|&t| i64::from(t)));
                ids.extend(spelled);
                (ids, labels, Some(class))
            }
        };
        if ids.is_empty() {
            bail!("{}: the example has no tokens", at());
        }
        if ids.len() > max_len {
            match overlong {
                Overlong::Reject => bail!(
                    "{}: {} tokens, but the model takes at most {max_len} after the virtual \
                     tokens; shorten it, or pass `--overlong truncate`",
                    at(),
                    ids.len()
                ),
                Overlong::Truncate if class.is_some() => bail!(
                    "{}: {} tokens, more than {max_len}; a classification example cannot be cut \
                     without losing its label, shorten the text",
                    at(),
                    ids.len()
                ),
                Overlong::Truncate => {
                    ids.truncate(max_len);
                    labels.truncate(max_len);
                    truncated += 1;
                }
            }
        }
        out.push(TokenizedExample {
            ids,
            labels,
            class,
            line,
        });
    }
    if truncated > 0 {
        tracing::warn!(
            "{}: truncated {truncated} examples to {max_len} tokens",
            path.display()
        );
    }
    Ok(Dataset {
        examples: out,
        truncated,
        verbalizer,
    })
}
