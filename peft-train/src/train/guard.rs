//! The loss metric that also stops a diverged run: at the first non-finite loss (a learning
//! rate too high, say) it interrupts training, so that Burn neither checkpoints the epoch nor
//! hands back NaN weights to be saved over a good adapter.

use std::sync::{Arc, Mutex, PoisonError};

use burn::tensor::TensorReadError;
use burn::train::Interrupter;
use burn::train::metric::{
    LossInput, LossMetric, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric,
    NumericEntry, SerializedEntry,
};

use crate::train::epochs::EpochClock;

/// Burn's [`LossMetric`] (same name, same logs), watching for a non-finite value.
#[derive(Clone)]
pub struct FiniteLoss {
    inner: LossMetric,
    split: &'static str,
    divergence: Divergence,
}

/// Where a run diverged, once it has; shared by the train and valid metrics and the caller.
#[derive(Clone)]
pub struct Divergence {
    interrupter: Interrupter,
    clock: EpochClock,
    first: Arc<Mutex<Option<String>>>,
}

impl Divergence {
    pub fn new(interrupter: Interrupter, clock: EpochClock) -> Self {
        Self {
            interrupter,
            clock,
            first: Arc::default(),
        }
    }

    /// The loss metric of `split` ("train" or "valid"), reporting here.
    pub fn loss_metric(&self, split: &'static str) -> FiniteLoss {
        FiniteLoss {
            inner: LossMetric::new(),
            split,
            divergence: self.clone(),
        }
    }

    /// Where the loss first stopped being finite, if it did.
    pub fn first(&self) -> Option<String> {
        self.first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, what: String) {
        let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(what.clone());
        }
        self.interrupter.stop(Some(&what));
    }
}

impl Metric for FiniteLoss {
    type Input = LossInput;

    fn name(&self) -> MetricName {
        self.inner.name()
    }

    fn attributes(&self) -> MetricAttributes {
        self.inner.attributes()
    }

    fn update(
        &mut self,
        item: &LossInput,
        metadata: &MetricMetadata,
    ) -> Result<SerializedEntry, TensorReadError> {
        let entry = self.inner.update(item, metadata)?;
        if let Some(value) = self.inner.value().map(|v| v.current())
            && !value.is_finite()
        {
            let batch = metadata
                .iteration
                .map_or_else(String::new, |i| format!(", batch {i}"));
            self.divergence.record(format!(
                "the {} loss became {value} in epoch {}{batch}",
                self.split,
                self.divergence.clock.current_epoch()
            ));
        }
        Ok(entry)
    }

    fn compute(&mut self) -> Result<SerializedEntry, TensorReadError> {
        self.inner.compute()
    }

    fn clear(&mut self) {
        self.inner.clear();
    }
}

impl Numeric for FiniteLoss {
    fn value(&self) -> Option<NumericEntry> {
        self.inner.value()
    }

    fn running_value(&self) -> Option<NumericEntry> {
        self.inner.running_value()
    }

    fn final_value(&self) -> NumericEntry {
        self.inner.final_value()
    }
}
