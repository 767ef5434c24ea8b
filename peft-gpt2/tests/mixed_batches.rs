//! A batch whose rows each carry their own adapter — PEFT-trained prompt and prefix adapters
//! of different lengths, and none — gives every row what it gets alone: the same logits
//! (within 1e-5) and the same greedy continuation, with and without the KV cache.

mod common;

use burn::prelude::*;
use common::*;
use peft_core::{Adapter, Conditioning, PeftAdapter};
use peft_gpt2::{
    GenerationConfig, Gpt2, MixedRow, RowFlow, forward_mixed, generate, generate_mixed,
    generate_mixed_streaming, load_pretrained,
};

const ROW_TOLERANCE: f32 = 1e-5;

/// The tiny fixture model and the conditioning of each PEFT-trained fixture adapter (4 to 7
/// virtual tokens), plus no adapter.
fn model_and_conditionings(device: &Device) -> (Gpt2, Vec<(&'static str, Conditioning)>) {
    let (gpt2, config, _) =
        load_pretrained(fixtures().join("tiny-gpt2").to_str().unwrap(), device).unwrap();
    let shape = config.shape();
    let mut conditionings = vec![("none", Conditioning::none())];
    for name in ["prompt", "prompt-text", "prefix", "prefix-projection"] {
        let dir = fixtures().join("adapters").join(name);
        let adapter = PeftAdapter::load(&dir, shape, device).unwrap();
        conditionings.push((name, adapter.conditioning()));
    }
    (gpt2, conditionings)
}

/// Rows of different lengths, each naming a conditioning by index; some adapters appear twice.
fn rows() -> Vec<(Vec<u32>, usize)> {
    vec![
        (vec![11, 42, 7, 99, 5, 23], 1),
        (vec![3, 8], 3),
        (vec![17, 17, 4, 60, 2, 9, 31, 12], 0),
        (vec![50], 4),
        (vec![6, 71, 2], 2),
        (vec![90, 1, 33, 4], 1),
        (vec![14, 25, 36, 47, 58], 3),
    ]
}

fn mixed_rows<'a>(
    rows: &'a [(Vec<u32>, usize)],
    conditionings: &'a [(&'static str, Conditioning)],
) -> Vec<MixedRow<'a>> {
    rows.iter()
        .map(|(tokens, which)| MixedRow {
            tokens,
            conditioning: &conditionings[*which].1,
        })
        .collect()
}

#[test]
fn mixed_forward_rows_equal_their_solo_runs() {
    for (backend, device) in devices() {
        let (gpt2, conditionings) = model_and_conditionings(&device);
        let rows = rows();
        let mixed = mixed_rows(&rows, &conditionings);
        let together = forward_mixed(&gpt2, &mixed).unwrap();
        for (i, ((tokens, which), logits)) in rows.iter().zip(together).enumerate() {
            let (name, conditioning) = &conditionings[*which];
            let ids = Tensor::<1, Int>::from_data(
                TensorData::new(
                    tokens.iter().map(|&t| i64::from(t)).collect::<Vec<_>>(),
                    [tokens.len()],
                ),
                &device,
            )
            .reshape([1, tokens.len()]);
            let alone = gpt2.forward_conditioned(ids, None, conditioning);
            let [_, len, vocab] = alone.dims();
            let alone = alone.reshape([len, vocab]);
            assert_eq!(logits.dims(), alone.dims(), "{backend} row {i} ({name})");
            let alone = alone.into_data().try_to_vec::<f32>().unwrap();
            let together = logits.into_data().try_to_vec::<f32>().unwrap();
            let worst = max_abs_diff(&together, &alone, None);
            assert!(
                worst <= ROW_TOLERANCE,
                "{backend} row {i} ({name}): logits differ from its solo run by {worst}"
            );
        }
    }
}

#[test]
fn mixed_greedy_generation_equals_solo_generation() {
    let (_, device) = devices().remove(0);
    let (gpt2, conditionings) = model_and_conditionings(&device);
    let rows = rows();
    let mixed = mixed_rows(&rows, &conditionings);
    for use_cache in [true, false] {
        let config = GenerationConfig {
            max_new_tokens: 6,
            use_cache,
            eos_id: None,
            ..GenerationConfig::greedy(6, 0)
        };
        let together = generate_mixed(&gpt2, &mixed, &config).unwrap();
        for (i, ((tokens, which), got)) in rows.iter().zip(&together).enumerate() {
            let (name, conditioning) = &conditionings[*which];
            let alone = generate(&gpt2, std::slice::from_ref(tokens), conditioning, &config)
                .unwrap()
                .remove(0);
            assert_eq!(
                got, &alone,
                "row {i} ({name}, cache {use_cache}): mixed batch generated differently"
            );
            assert_eq!(got.len(), 6);
        }
    }
}

/// Streaming reports each row's tokens as they are chosen, and stopping a row early (as a
/// server does when a stop string appears or its client leaves) leaves every other row's tokens
/// unchanged.
#[test]
fn streamed_tokens_and_early_stops_match_solo_generation() {
    let (_, device) = devices().remove(0);
    let (gpt2, conditionings) = model_and_conditionings(&device);
    let rows = rows();
    let mixed = mixed_rows(&rows, &conditionings);
    let config = GenerationConfig {
        eos_id: None,
        ..GenerationConfig::greedy(6, 0)
    };
    // Row i wants i + 1 tokens; the last rows want all 6.
    let wanted = |row: usize| (row + 1).min(6);
    let mut streamed = vec![Vec::new(); rows.len()];
    let returned = generate_mixed_streaming(&gpt2, &mixed, &config, |row, token| {
        streamed[row].push(token);
        if streamed[row].len() == wanted(row) {
            RowFlow::Stop
        } else {
            RowFlow::Continue
        }
    })
    .unwrap();
    for (i, ((tokens, which), got)) in rows.iter().zip(&returned).enumerate() {
        let (name, conditioning) = &conditionings[*which];
        let alone = generate(&gpt2, std::slice::from_ref(tokens), conditioning, &config)
            .unwrap()
            .remove(0);
        assert_eq!(got, &streamed[i], "row {i} ({name}): streamed != returned");
        assert_eq!(
            got.as_slice(),
            &alone[..wanted(i)],
            "row {i} ({name}): an early stop changed its tokens"
        );
    }
}

#[test]
fn rows_that_do_not_fit_are_refused_with_the_limits() {
    let (_, device) = devices().remove(0);
    let (gpt2, conditionings) = model_and_conditionings(&device);
    let long = vec![5u32; gpt2.n_positions() - 2];
    // Alone it fits; with a 5-token prompt adapter it does not.
    let rows = [MixedRow {
        tokens: &long,
        conditioning: &conditionings[1].1,
    }];
    let err = forward_mixed(&gpt2, &rows).unwrap_err().to_string();
    assert!(
        err.contains("row 0") && err.contains("5 virtual tokens"),
        "{err}"
    );
    let err = forward_mixed(
        &gpt2,
        &[MixedRow {
            tokens: &[],
            conditioning: &conditionings[0].1,
        }],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no tokens"), "{err}");
}
