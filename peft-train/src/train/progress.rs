//! Plain-text training progress for logs and pipes: one line per quarter of each split with
//! the running means of the metrics, instead of a line per batch. (On a terminal, Burn's
//! dashboard is used instead.)

use std::collections::HashMap;

use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricDefinition, MetricId};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};

#[derive(Default)]
pub struct PlainProgress {
    names: HashMap<MetricId, String>,
    /// Sum and count of each metric's values in the current split, in registration order.
    running: Vec<(MetricId, f64, usize)>,
    epoch: usize,
    total_epochs: usize,
    split: String,
    split_items: usize,
    next_report: usize,
}

impl PlainProgress {
    fn record(&mut self, state: MetricState) {
        if let MetricState::Numeric(entry, Some(value)) = state {
            let value = value.current();
            match self
                .running
                .iter_mut()
                .find(|(id, _, _)| *id == entry.metric_id)
            {
                Some((_, sum, count)) => {
                    *sum += value;
                    *count += 1;
                }
                None => self.running.push((entry.metric_id, value, 1)),
            }
        }
    }

    fn line(&self, items: usize) -> String {
        let mut line = format!(
            "epoch {}/{} {:<5} {:>6}/{:<6}",
            self.epoch, self.total_epochs, self.split, items, self.split_items
        );
        for (id, sum, count) in &self.running {
            let name = self.names.get(id).map_or("?", String::as_str);
            line.push_str(&format!("  {name} {:.4}", sum / *count as f64));
        }
        line
    }
}

impl MetricsRendererTraining for PlainProgress {
    fn update_train(&mut self, state: MetricState) {
        self.record(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state);
    }
}

impl MetricsRendererEvaluation for PlainProgress {
    fn update_test(&mut self, _name: EvaluationName, state: MetricState) {
        self.record(state);
    }
}

impl MetricsRenderer for PlainProgress {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names
            .insert(definition.metric_id, definition.name.to_string());
    }
}

impl TrainingProgressLogger for PlainProgress {
    fn start(
        &mut self,
        total_epochs: usize,
        starting_epoch: usize,
        _items: Option<usize>,
        _label: Option<&str>,
    ) {
        self.total_epochs = total_epochs;
        // Burn numbers epochs from 1: a fresh run starts at 1, a run resumed after epoch e
        // at e + 1.
        self.epoch = starting_epoch;
    }

    fn update_epoch(&mut self, epoch: usize) {
        // Called as epoch `epoch` (counted from 1) ends: the next one follows.
        self.epoch = epoch + 1;
    }

    fn start_split(&mut self, split: &str, total_items: usize) {
        self.split = split.to_string();
        self.split_items = total_items;
        self.running.clear();
        self.next_report = total_items.div_ceil(4);
    }

    fn update_split(&mut self, items_processed: usize) {
        if items_processed >= self.next_report && items_processed < self.split_items {
            println!("{}", self.line(items_processed));
            self.next_report = items_processed + self.split_items.div_ceil(4);
        }
    }

    fn end_split(&mut self) {
        println!("{}", self.line(self.split_items));
    }

    fn end(&mut self) {}

    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for PlainProgress {
    fn start_global_progress(&mut self, _total_tests: usize) {}

    fn start_test(&mut self, name: &str, total_items: usize) {
        self.start_split(name, total_items);
    }

    fn update_test_progress(&mut self, items_processed: usize) {
        self.update_split(items_processed);
    }

    fn end_test(&mut self) {
        self.end_split();
    }

    fn end_global_progress(&mut self) {}

    fn log_event_evaluation(&mut self, _event: String) {}
}
