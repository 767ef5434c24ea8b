//! What makes a resumed run train exactly like an uninterrupted one: every epoch's example
//! order and every epoch's random stream (dropout) are functions of the seed and the epoch
//! alone.
//!
//! Burn's data loader shuffles with one generator that advances epoch after epoch, and the
//! backend's generator (dropout) advances step after step; a run resumed after epoch `e`
//! would start both over and see different orders and masks from then on. Here the order is
//! drawn per epoch from `(seed, epoch)`, and the backend is reseeded from `(seed, epoch)` at
//! each epoch boundary — the same boundary a resumed run starts from.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use burn::data::dataset::{Dataset, DatasetError};
use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// The epochs completed so far, shared by the training data and the epoch-end hook.
#[derive(Clone, Debug, Default)]
pub struct EpochClock {
    completed: Arc<AtomicUsize>,
    device: Option<Device>,
    seed: u64,
}

impl EpochClock {
    pub fn new(device: Device, seed: u64) -> Self {
        Self {
            completed: Arc::default(),
            device: Some(device),
            seed,
        }
    }

    /// Marks `epoch` as completed and reseeds the backend for the next one. Called at every
    /// epoch end, and once before a resumed run starts (with the epoch it resumes after).
    pub fn epoch_completed(&self, epoch: usize) {
        self.completed.store(epoch, Ordering::SeqCst);
        if let Some(device) = &self.device {
            device.seed(self.epoch_seed(epoch));
        }
    }

    /// The epoch in progress, counted from 1.
    pub fn current_epoch(&self) -> usize {
        self.completed.load(Ordering::SeqCst) + 1
    }

    fn epoch_seed(&self, epoch: usize) -> u64 {
        // SplitMix64's increment, so neighbouring epochs get unrelated seeds.
        self.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// Examples in an order drawn from `(seed, epoch)` for the epoch in progress.
pub struct EpochShuffled<I> {
    items: Vec<I>,
    clock: EpochClock,
    /// The permutation of the epoch it was drawn for.
    order: Mutex<(usize, Vec<usize>)>,
}

impl<I> EpochShuffled<I> {
    pub fn new(items: Vec<I>, clock: EpochClock) -> Self {
        Self {
            items,
            clock,
            order: Mutex::new((usize::MAX, Vec::new())),
        }
    }
}

impl<I: Clone + Send + Sync> Dataset<I> for EpochShuffled<I> {
    fn get(&self, index: usize) -> Result<I, DatasetError> {
        let epoch = self.clock.completed.load(Ordering::SeqCst);
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        if order.0 != epoch {
            let mut indices: Vec<usize> = (0..self.items.len()).collect();
            indices.shuffle(&mut StdRng::seed_from_u64(self.clock.epoch_seed(epoch)));
            *order = (epoch, indices);
        }
        // Out of range panics, as Burn's `InMemDataset` does.
        Ok(self.items[order.1[index]].clone())
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch_order(data: &EpochShuffled<u32>) -> Vec<u32> {
        (0..data.len()).map(|i| data.get(i).unwrap()).collect()
    }

    #[test]
    fn each_epoch_has_its_own_order_and_it_repeats() {
        let clock = EpochClock {
            seed: 7,
            ..EpochClock::default()
        };
        let data = EpochShuffled::new((0..50).collect(), clock.clone());
        let first = epoch_order(&data);
        clock.epoch_completed(1);
        let second = epoch_order(&data);
        assert_ne!(first, second);
        let mut sorted = second.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        // A fresh dataset told it is after epoch 1 (a resumed run) sees the same order.
        let resumed_clock = EpochClock {
            seed: 7,
            ..EpochClock::default()
        };
        resumed_clock.epoch_completed(1);
        let resumed = EpochShuffled::new((0..50).collect(), resumed_clock);
        assert_eq!(epoch_order(&resumed), second);
    }
}
