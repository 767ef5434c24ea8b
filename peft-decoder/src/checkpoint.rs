//! What loading any family's checkpoint shares: turning Burn's report of applying tensors to a
//! model into one message that names every tensor that did not fit.

use burn::store::{ApplyError, ApplyResult};

/// `Err` with every problem of a load — mis-shaped tensors with both shapes, missing ones,
/// unexpected ones (less those `ignored` accepts) — or `Ok` for a complete load. `family`
/// names the checkpoint kind expected, for the unexpected-tensor hint.
pub fn check_complete(
    result: &ApplyResult,
    ignored: impl Fn(&str) -> bool,
    family: &str,
) -> Result<(), String> {
    let mut problems: Vec<String> = result
        .errors
        .iter()
        .map(|error| match error {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => format!(
                "`{path}` has shape {:?}, the config needs {:?}",
                found.as_slice(),
                expected.as_slice()
            ),
            other => other.to_string(),
        })
        .collect();
    let missing: Vec<&str> = result
        .missing
        .iter()
        .map(|(path, _)| path.as_str())
        .collect();
    if !missing.is_empty() {
        problems.push(format!("missing tensors: {}", summarize(&missing)));
    }
    let unexpected: Vec<&str> = result
        .unused
        .iter()
        .map(String::as_str)
        .filter(|name| !ignored(name))
        .collect();
    if !unexpected.is_empty() {
        problems.push(format!(
            "unexpected tensors (is this a {family} checkpoint?): {}",
            summarize(&unexpected)
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The first few names of a long list, and how many more there are.
fn summarize(names: &[&str]) -> String {
    const SHOWN: usize = 8;
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}
