//! The KV cache holds exactly what concatenating every call's keys and values would: across the
//! growth of its buffers, after rows are dropped, and on every CPU backend.

mod common;

use burn::prelude::*;
use burn::tensor::TensorData;
use peft_core::LayerKv;
use peft_decoder::{KvCache, LayerCache};

/// `[batch, 2 heads, len, 3]` with values that differ at every position of every call.
fn kv(batch: usize, len: usize, call: usize, device: &Device) -> LayerKv {
    let count = batch * 2 * len * 3;
    let values = |salt: f32| {
        let data: Vec<f32> = (0..count)
            .map(|i| (i as f32 + 1000.0 * call as f32 + salt).sin())
            .collect();
        Tensor::<4>::from_data(TensorData::new(data, [batch, 2, len, 3]), device)
    };
    LayerKv::new(values(0.0), values(0.5))
}

fn assert_same(what: &str, held: &Tensor<4>, expected: &Tensor<4>) {
    assert_eq!(held.dims(), expected.dims(), "{what}: shapes");
    let (held, expected) = (held.to_data(), expected.to_data());
    assert_eq!(
        held.iter::<f32>().collect::<Vec<_>>(),
        expected.iter::<f32>().collect::<Vec<_>>(),
        "{what}: values"
    );
}

#[test]
fn the_cache_holds_every_call_in_order_across_growth() {
    for (name, device) in common::devices() {
        let mut cache = LayerCache::default();
        let mut all: Option<LayerKv> = None;
        // A 5-position prompt, then single tokens past the first buffer's 64 positions and
        // past the second's 128, then a 3-position call.
        let calls = std::iter::once(5)
            .chain(std::iter::repeat_n(1, 130))
            .chain(std::iter::once(3));
        for (call, len) in calls.enumerate() {
            let new = kv(2, len, call, &device);
            all = Some(match all {
                Some(all) => LayerKv::new(
                    Tensor::cat(vec![all.key, new.key.clone()], 2),
                    Tensor::cat(vec![all.value, new.value.clone()], 2),
                ),
                None => new.clone(),
            });
            let held = cache.append(new, None);
            let expected = all.as_ref().unwrap();
            assert_same(
                &format!("{name}, call {call}: keys"),
                &held.key,
                &expected.key,
            );
            assert_same(
                &format!("{name}, call {call}: values"),
                &held.value,
                &expected.value,
            );
        }
    }
}

#[test]
fn dropping_rows_keeps_the_other_rows_cache() {
    let device = Device::flex();
    let mut cache = KvCache::new(1);
    let first = kv(3, 4, 0, &device);
    cache.layer_mut(0).append(first.clone(), None);
    cache.select_rows(Tensor::from_data(
        TensorData::new(vec![0i64, 2], [2]),
        &device,
    ));
    assert_eq!(cache.len(), 4);
    let next = kv(2, 1, 1, &device);
    let held = cache.layer_mut(0).append(next.clone(), None);
    let kept = |t: &Tensor<4>| {
        Tensor::cat(
            vec![t.clone().narrow(0, 0, 1), t.clone().narrow(0, 2, 1)],
            0,
        )
    };
    let expected = Tensor::cat(vec![kept(&first.key), next.key], 2);
    assert_same("keys after dropping row 1", &held.key, &expected);
    assert_eq!(cache.len(), 5);
}

/// Attention over the cache's held positions (a view into its larger buffer, which the flex
/// kernel reads in place) equals attention over a contiguous copy of them, on every CPU
/// backend, forward and backward.
#[test]
fn attention_reads_the_held_positions_of_the_cache() {
    use burn::nn::DropoutConfig;
    use peft_decoder::attention::{AttentionMask, attend};
    for (name, device) in common::devices() {
        let device = device.autodiff();
        let mut cache = LayerCache::default();
        cache.append(kv(2, 9, 0, &device), None);
        let held = cache.append(kv(2, 2, 1, &device), None);
        let [_, _, keys, _] = held.key.dims();
        let copy = LayerKv::new(
            Tensor::from_data(held.key.to_data(), &device),
            Tensor::from_data(held.value.to_data(), &device),
        );
        let query = kv(2, 2, 7, &device).key.require_grad();
        let mask = AttentionMask::new(0, keys - 2, 2, None, &device);
        let dropout = DropoutConfig::new(0.0).init();
        let attention = |keys: &LayerKv| {
            let out = attend(query.clone(), None, keys, &mask, 0.5, &dropout);
            let grads = out.clone().sum().backward();
            (out, query.grad(&grads).unwrap())
        };
        let (from_cache, grad_from_cache) = attention(&held);
        let (from_copy, grad_from_copy) = attention(&copy);
        let max_diff = |a: Tensor<4>, b: Tensor<4>| (a - b).abs().max().into_scalar::<f32>();
        assert!(
            max_diff(from_cache, from_copy) < 1e-6,
            "{name}: outputs differ"
        );
        assert!(
            max_diff(grad_from_cache, grad_from_copy) < 1e-6,
            "{name}: query gradients differ"
        );
    }
}

/// A prefix given with the first call is held at the front of the keys, once, whether shared by
/// the batch or one per row, across buffer growths; the cache's length counts tokens only. A
/// long prefix and first call (40 + 20 positions in a first buffer of 64) are the case where
/// the first buffer must leave room for both.
#[test]
fn the_prefix_is_held_ahead_of_the_tokens() {
    let device = Device::flex();
    let (prefix_len, first) = (40, 20);
    for prefix_batch in [1, 2] {
        let prefix = kv(prefix_batch, prefix_len, 99, &device);
        let per_row = |t: &Tensor<4>| t.clone().expand([2, 2, prefix_len, 3]);
        let expected = |prefix: &Tensor<4>, tokens: &Tensor<4>| {
            Tensor::cat(vec![per_row(prefix), tokens.clone()], 2)
        };
        let mut cache = KvCache::new(1);
        let mut tokens = kv(2, first, 0, &device);
        for call in 0..70 {
            let new = if call == 0 {
                tokens.clone()
            } else {
                let new = kv(2, 1, call, &device);
                tokens = LayerKv::new(
                    Tensor::cat(vec![tokens.key, new.key.clone()], 2),
                    Tensor::cat(vec![tokens.value, new.value.clone()], 2),
                );
                new
            };
            let held = cache.layer_mut(0).append(new, Some(&prefix));
            let what = format!("prefix batch {prefix_batch}, call {call}");
            assert_same(&what, &held.key, &expected(&prefix.key, &tokens.key));
            assert_same(&what, &held.value, &expected(&prefix.value, &tokens.value));
        }
        assert_eq!(
            cache.len(),
            first + 69,
            "the length counts tokens, not the prefix"
        );
    }
}
