//! The demo's three tasks, written as ordinary JSONL datasets that `peft-train train` reads:
//!
//! - data-to-text: an E2E meaning representation to a description, scored by slot accuracy;
//! - food (steerable classification): which cuisine a description names — the answer is a
//!   word of the text, so a frozen base can be steered to it;
//! - family-friendly (negation-dependent classification): whether the place welcomes children,
//!   which hangs on a `not` — kept to show honestly what a small frozen base cannot be steered to.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

use super::corpus::{Meaning, Restaurant, yes_no};
use super::write_jsonl;

/// How a task's held-out outputs are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// The share of the meaning representation's values that the greedy text mentions.
    SlotAccuracy,
    /// The share of examples whose label scores highest among the labels.
    Accuracy,
}

impl Metric {
    /// How many tokens greedy decoding may write for a held-out input.
    pub fn max_new_tokens(self) -> usize {
        match self {
            Metric::SlotAccuracy => 72,
            Metric::Accuracy => 2,
        }
    }
}

/// One held-out input, with what scoring its output needs.
#[derive(Clone, Debug)]
pub struct HeldOut {
    /// The text the model continues.
    pub prompt: String,
    /// What a data-to-text output must mention.
    pub meaning: Option<Meaning>,
}

#[derive(Clone, Debug)]
pub struct Task {
    pub name: &'static str,
    pub train: PathBuf,
    pub valid: PathBuf,
    pub metric: Metric,
    pub held_out: Vec<HeldOut>,
}

/// Sizes of one task's data.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub train: usize,
    pub valid: usize,
}

pub const DATA_TO_TEXT: &str = "data-to-text";
pub const FOOD: &str = "food";
pub const FAMILY_FRIENDLY: &str = "family-friendly";

/// Writes the three tasks' data into `dir`. Each task draws its own restaurants, its
/// training and held-out ones disjoint.
pub fn write_tasks(dir: &Path, sizes: Sizes) -> Result<Vec<Task>> {
    Ok(vec![
        write_task(
            dir,
            DATA_TO_TEXT,
            sizes,
            Metric::SlotAccuracy,
            21,
            |r, rng| {
                let meaning = r.meaning(rng, 0.75);
                let row = json!({
                    "prompt": format!("{} =>", meaning.notation()),
                    "completion": format!(" {}", meaning.canonical_text()),
                });
                (row, format!("{} =>", meaning.notation()), Some(meaning))
            },
        )?,
        // The questions end in a colon, as a form's field does. In the pretraining corpus a
        // question mark is always followed by ` A:`, so after `Food?` the base gave the cuisine
        // a loss of 18 nats, and prompt tuning got no further than 45%; after `Food:`, 97%.
        write_task(dir, FOOD, sizes, Metric::Accuracy, 22, |r, rng| {
            let meaning = Meaning {
                food: Some(r.food),
                ..r.meaning(rng, 0.6)
            };
            let text = format!("{} Food:", meaning.varied_text(rng));
            (json!({ "text": text, "label": r.food }), text, None)
        })?,
        write_task(
            dir,
            FAMILY_FRIENDLY,
            sizes,
            Metric::Accuracy,
            23,
            |r, rng| {
                let meaning = Meaning {
                    family: Some(r.family),
                    ..r.meaning(rng, 0.6)
                };
                let text = format!("{} Family friendly:", meaning.varied_text(rng));
                let label = yes_no(r.family);
                (json!({ "text": text, "label": label }), text, None)
            },
        )?,
    ])
}

/// One task: `example` makes a restaurant's JSONL row, its held-out prompt and meaning.
fn write_task(
    dir: &Path,
    name: &'static str,
    sizes: Sizes,
    metric: Metric,
    seed: u64,
    example: impl Fn(&Restaurant, &mut StdRng) -> (serde_json::Value, String, Option<Meaning>),
) -> Result<Task> {
    let mut rng = StdRng::seed_from_u64(seed);
    let rows: Vec<_> = (0..sizes.train + sizes.valid)
        .map(|_| {
            let restaurant = Restaurant::random(&mut rng);
            example(&restaurant, &mut rng)
        })
        .collect();
    let (train_rows, valid_rows) = rows.split_at(sizes.train);
    let train = dir.join(format!("{name}-train.jsonl"));
    let valid = dir.join(format!("{name}-valid.jsonl"));
    write_jsonl(&train, train_rows.iter().map(|row| row.0.clone()))?;
    write_jsonl(&valid, valid_rows.iter().map(|row| row.0.clone()))?;
    Ok(Task {
        name,
        train,
        valid,
        metric,
        held_out: valid_rows
            .iter()
            .map(|(_, prompt, meaning)| HeldOut {
                prompt: prompt.clone(),
                meaning: meaning.clone(),
            })
            .collect(),
    })
}

/// Several tasks' training examples in one file, shuffled together: one prompt for several
/// tasks (the study's multi-task run). A dataset holds one shape of example, so labelled
/// examples become prompt/completion pairs, the label (and end of text) the target.
pub fn write_mixture(tasks: &[&Task], path: &Path) -> Result<()> {
    use rand::seq::SliceRandom;
    let mut rows = Vec::new();
    for task in tasks {
        let text = std::fs::read_to_string(&task.train)?;
        for line in text.lines() {
            let row: serde_json::Value = serde_json::from_str(line)?;
            rows.push(match (row.get("text"), row.get("label")) {
                (Some(text), Some(serde_json::Value::String(label))) => {
                    json!({ "prompt": text, "completion": format!(" {label}") })
                }
                _ => row,
            });
        }
    }
    rows.shuffle(&mut StdRng::seed_from_u64(24));
    write_jsonl(path, rows.into_iter())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::corpus::FOODS;

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn tasks_are_written_with_their_held_out_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = Sizes {
            train: 20,
            valid: 7,
        };
        let tasks = write_tasks(dir.path(), sizes).unwrap();
        let names: Vec<_> = tasks.iter().map(|t| t.name).collect();
        assert_eq!(names, [DATA_TO_TEXT, FOOD, FAMILY_FRIENDLY]);
        for task in &tasks {
            assert_eq!(lines(&task.train).len(), 20);
            let valid = lines(&task.valid);
            assert_eq!(valid.len(), 7);
            assert_eq!(task.held_out.len(), 7);
            for (row, held_out) in valid.iter().zip(&task.held_out) {
                match task.metric {
                    Metric::SlotAccuracy => {
                        assert_eq!(row["prompt"], held_out.prompt.as_str());
                        // The reference completion mentions every value it is scored on.
                        let meaning = held_out.meaning.as_ref().unwrap();
                        let (found, shown) =
                            meaning.slots_realised(row["completion"].as_str().unwrap());
                        assert_eq!(found, shown);
                    }
                    Metric::Accuracy => {
                        assert_eq!(row["text"], held_out.prompt.as_str());
                        let label = row["label"].as_str().unwrap();
                        if task.name == FOOD {
                            assert!(FOODS.contains(&label));
                            // Steerable: the answer is a word of the text.
                            assert!(held_out.prompt.contains(label), "{}", held_out.prompt);
                        } else {
                            assert!(["yes", "no"].contains(&label));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_mixture_holds_every_example_as_prompt_and_completion() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = Sizes {
            train: 10,
            valid: 2,
        };
        let tasks = write_tasks(dir.path(), sizes).unwrap();
        let mixture = dir.path().join("mixture.jsonl");
        write_mixture(&[&tasks[0], &tasks[1]], &mixture).unwrap();
        let rows = lines(&mixture);
        assert_eq!(rows.len(), 20);
        assert!(
            rows.iter()
                .all(|r| r["prompt"].is_string() && r["completion"].is_string())
        );
        let foods = rows
            .iter()
            .filter(|r| r["prompt"].as_str().unwrap().ends_with("Food:"))
            .count();
        assert_eq!(foods, 10);
    }
}
