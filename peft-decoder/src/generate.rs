//! Text generation: greedy or sampled, batched with left padding, with or without a KV cache,
//! optionally conditioned by an adapter.
//!
//! The semantics follow Hugging Face's `generate`: positions come from the attention mask (an
//! adapter's virtual tokens and prefix count as real), finished rows keep receiving the pad
//! token until every row is done, and generation stops at `max_new_tokens`.

use peft_core::Conditioning;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::batch::PadSide;
use crate::decoder::{Decoder, KvCache};
use crate::error::InputError;
use crate::layout::{AdaptedInput, MixedRow};

/// How the next token is chosen from the logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    /// The most likely token (ties go to the lowest id, as `argmax` does).
    Greedy,
    /// Sample from `softmax(logits / temperature)`, restricted to the `top_k` most likely
    /// tokens and then to the smallest set whose probability reaches `top_p`.
    Random {
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
    },
}

impl Sampling {
    /// As OpenAI's API and Hugging Face's `generate` read a temperature: 0 is greedy decoding,
    /// anything else samples (with the optional `top_k` and `top_p` limits).
    pub fn from_temperature(temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> Self {
        if temperature == 0.0 {
            Sampling::Greedy
        } else {
            Sampling::Random {
                temperature,
                top_k,
                top_p,
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Seed of the sampler; the same seed gives the same text.
    pub seed: u64,
    /// Stop a row when it produces this token (it is kept in the output).
    pub eos_id: Option<u32>,
    /// Left padding of shorter prompts, and the filler for rows that already stopped.
    pub pad_id: u32,
    /// Reuse keys/values of earlier tokens (the normal case); without it every step reruns the
    /// whole sequence, which gives the same tokens and is only useful to prove that.
    pub use_cache: bool,
}

impl GenerationConfig {
    pub fn greedy(max_new_tokens: usize, eos_id: u32) -> Self {
        Self {
            max_new_tokens,
            sampling: Sampling::Greedy,
            seed: 0,
            eos_id: Some(eos_id),
            pad_id: eos_id,
            use_cache: true,
        }
    }

    fn validate(&self) -> Result<(), InputError> {
        if let Sampling::Random {
            temperature,
            top_k,
            top_p,
        } = self.sampling
        {
            if !(temperature.is_finite() && temperature > 0.0) {
                return Err(InputError(format!(
                    "temperature must be positive, got {temperature} (use greedy decoding for 0)"
                )));
            }
            if top_k == Some(0) {
                return Err(InputError("top_k must be at least 1".into()));
            }
            if let Some(p) = top_p
                && !(p > 0.0 && p <= 1.0)
            {
                return Err(InputError(format!("top_p must be in (0, 1], got {p}")));
            }
        }
        Ok(())
    }
}

/// Continues every prompt under one conditioning; returns, per prompt, the new tokens (ending
/// with the EOS token if one was produced).
pub fn generate(
    model: &impl Decoder,
    prompts: &[Vec<u32>],
    conditioning: &Conditioning,
    config: &GenerationConfig,
) -> Result<Vec<Vec<u32>>, InputError> {
    let rows: Vec<MixedRow<'_>> = prompts
        .iter()
        .map(|tokens| MixedRow {
            tokens,
            conditioning,
        })
        .collect();
    generate_mixed(model, &rows, config)
}

/// Continues every row under its own conditioning (see [`crate::mixed`]), in one batch: each
/// row's tokens are those it would get alone.
pub fn generate_mixed(
    model: &impl Decoder,
    rows: &[MixedRow<'_>],
    config: &GenerationConfig,
) -> Result<Vec<Vec<u32>>, InputError> {
    generate_mixed_streaming(model, rows, config, |_, _| RowFlow::Continue)
}

/// What the caller of [`generate_mixed_streaming`] wants of a row after seeing its newest token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowFlow {
    Continue,
    /// The row is done (its reader left, hit a stop string or has all the tokens it wanted):
    /// it is treated as finished, as if it had produced the end-of-text token.
    Stop,
}

/// [`generate_mixed`], telling `on_token(row, token)` each token as soon as it is chosen, so a
/// server can stream it; the callback may stop a row early. Stopping a row changes nothing for
/// the others, and a row's tokens up to its stop are those it would get alone.
pub fn generate_mixed_streaming(
    model: &impl Decoder,
    rows: &[MixedRow<'_>],
    config: &GenerationConfig,
    mut on_token: impl FnMut(usize, u32) -> RowFlow,
) -> Result<Vec<Vec<u32>>, InputError> {
    config.validate()?;
    if rows.is_empty() || config.max_new_tokens == 0 {
        return Ok(vec![Vec::new(); rows.len()]);
    }
    let batch = rows.len();
    let mut input = AdaptedInput::new(model, rows, config.max_new_tokens, PadSide::Left)?;
    // The tokens fed to each row after its prompt: its generated tokens, then padding once it
    // has finished.
    let mut appended: Vec<Vec<u32>> = vec![Vec::new(); batch];
    let mut generated = vec![Vec::new(); batch];
    let mut finished = vec![false; batch];
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut cache = config.use_cache.then(|| KvCache::new(model.n_layer()));

    for step in 0..config.max_new_tokens {
        let hidden = match (step, cache.as_mut()) {
            (0, cache) => input.hidden(model, cache),
            (_, None) => {
                // Without a cache every step reruns each row's whole sequence.
                let extended: Vec<Vec<u32>> = rows
                    .iter()
                    .zip(&appended)
                    .map(|(r, more)| [r.tokens, more.as_slice()].concat())
                    .collect();
                let again: Vec<MixedRow<'_>> = rows
                    .iter()
                    .zip(&extended)
                    .map(|(r, tokens)| MixedRow {
                        tokens,
                        conditioning: r.conditioning,
                    })
                    .collect();
                AdaptedInput::new(model, &again, config.max_new_tokens - step, PadSide::Left)?
                    .hidden(model, None)
            }
            (_, Some(cache)) => {
                let newest: Vec<u32> = appended
                    .iter()
                    .map(|row| *row.last().expect("a token per step"))
                    .collect();
                input.hidden_of_newest(model, &newest, cache)
            }
        };
        let input_len = hidden.dims()[1];
        let logits = model.logits(hidden.narrow(1, input_len - 1, 1));
        let vocab = logits.dims()[2];
        let logits: Vec<f32> = logits
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|err| InputError(format!("cannot read logits: {err:?}")))?;

        for row in 0..batch {
            let next = if finished[row] {
                config.pad_id
            } else {
                let token = choose_token(
                    &logits[row * vocab..(row + 1) * vocab],
                    config.sampling,
                    &mut rng,
                );
                generated[row].push(token);
                let stopped_by_caller = on_token(row, token) == RowFlow::Stop;
                finished[row] = config.eos_id == Some(token) || stopped_by_caller;
                token
            };
            appended[row].push(next);
        }
        input.append();
        if finished.iter().all(|&f| f) {
            break;
        }
    }
    Ok(generated)
}

/// Picks the next token from one row of logits.
pub fn choose_token(logits: &[f32], sampling: Sampling, rng: &mut impl Rng) -> u32 {
    match sampling {
        Sampling::Greedy => argmax(logits),
        Sampling::Random {
            temperature,
            top_k,
            top_p,
        } => {
            // In f64: a temperature near 0 (down to f32's smallest) scales f32 logits past
            // f32's range, and infinite logits would make every weight NaN.
            let temperature = f64::from(temperature);
            let mut candidates: Vec<(u32, f64)> = logits
                .iter()
                .enumerate()
                .map(|(id, &logit)| (id as u32, f64::from(logit) / temperature))
                .collect();
            // Most likely first; equal logits keep id order so a seed is reproducible.
            candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            if let Some(k) = top_k {
                candidates.truncate(k.max(1));
            }
            let max = candidates[0].1;
            let mut weights: Vec<f64> = candidates
                .iter()
                .map(|&(_, logit)| (logit - max).exp())
                .collect();
            let total: f64 = weights.iter().sum();
            weights.iter_mut().for_each(|w| *w /= total);
            if let Some(p) = top_p {
                // Keep the smallest head of the ranking whose probability reaches p.
                let mut mass = 0.0;
                let keep = weights
                    .iter()
                    .position(|w| {
                        mass += w;
                        mass >= f64::from(p)
                    })
                    .map_or(weights.len(), |i| i + 1);
                weights.truncate(keep);
            }
            let total: f64 = weights.iter().sum();
            let mut draw = rng.random::<f64>() * total;
            for (i, w) in weights.iter().enumerate() {
                if draw < *w {
                    return candidates[i].0;
                }
                draw -= w;
            }
            candidates[weights.len() - 1].0
        }
    }
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &logit) in logits.iter().enumerate() {
        if logit > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_many(logits: &[f32], sampling: Sampling) -> Vec<u32> {
        let mut rng = StdRng::seed_from_u64(7);
        (0..2000)
            .map(|_| choose_token(logits, sampling, &mut rng))
            .collect()
    }

    #[test]
    fn greedy_takes_first_maximum() {
        assert_eq!(
            choose_token(
                &[0.1, 3.0, 3.0, -1.0],
                Sampling::Greedy,
                &mut StdRng::seed_from_u64(0)
            ),
            1
        );
    }

    #[test]
    fn top_k_limits_candidates() {
        let logits = [1.0, 4.0, 3.0, 2.0];
        let sampling = Sampling::Random {
            temperature: 1.0,
            top_k: Some(2),
            top_p: None,
        };
        let picks = sample_many(&logits, sampling);
        assert!(picks.iter().all(|&t| t == 1 || t == 2));
        assert!(picks.contains(&1) && picks.contains(&2));
    }

    #[test]
    fn top_p_keeps_smallest_sufficient_head() {
        // Probabilities ~[0.64, 0.24, 0.09, 0.03]: top_p 0.8 keeps the first two.
        let logits = [3.0, 2.0, 1.0, 0.0];
        let sampling = Sampling::Random {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.8),
        };
        let picks = sample_many(&logits, sampling);
        assert!(picks.iter().all(|&t| t <= 1), "{:?}", &picks[..20]);
        assert!(picks.contains(&1));
    }

    #[test]
    fn low_temperature_approaches_greedy_and_seed_repeats() {
        let logits = [1.0, 1.5, 0.5];
        let cold = Sampling::Random {
            temperature: 0.01,
            top_k: None,
            top_p: None,
        };
        assert!(sample_many(&logits, cold).iter().all(|&t| t == 1));
        let warm = Sampling::Random {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        };
        assert_eq!(sample_many(&logits, warm), sample_many(&logits, warm));
    }

    /// A temperature so small that the scaled logits leave f32's range still picks the most
    /// likely token (once it picked the least likely: the weights had become NaN).
    #[test]
    fn the_smallest_temperatures_pick_the_most_likely_token() {
        let logits = [-3.0, -1.0, -2.0];
        for temperature in [1e-30, 1e-40, f32::from_bits(1)] {
            let sampling = Sampling::Random {
                temperature,
                top_k: None,
                top_p: Some(0.9),
            };
            let picks = sample_many(&logits, sampling);
            assert!(
                picks.iter().all(|&t| t == 1),
                "{temperature:e}: {:?}",
                &picks[..5]
            );
        }
    }
}
