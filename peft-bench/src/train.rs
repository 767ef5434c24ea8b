//! Timed training steps through `peft-train`'s own pieces: its batcher, its `Trainee`
//! (forward + loss + backward), Burn's `Learner` step and the optimizer `peft-train` uses.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::data::dataloader::batcher::Batcher;
use burn::optim::GradientsParams;
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::prelude::*;
use burn::train::Learner;
use clap::{Args, ValueEnum};
use peft_runtime::args::at_least_one;
use peft_train::data::TokenizedExample;
use peft_train::train::adamw;
use peft_train::train::trainee::{ExampleBatcher, TrainBatch, Trainee};
use serde::Serialize;

use crate::report::{Record, median};
use crate::setup::{Method, Setup};

#[derive(Args, Debug, Clone)]
pub struct TrainBench {
    #[command(flatten)]
    pub setup: Setup,
    /// Untimed steps first (allocator, caches, kernel compilation).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    pub steps: usize,
    /// Which AdamW updates the parameters.
    #[arg(long, value_enum, default_value_t = OptimizerKind::Fused)]
    pub optimizer: OptimizerKind,
    /// Also time the step's phases alone: the forward pass with the loss, the backward pass
    /// and the optimizer's update, the device synchronised around each (as
    /// `scripts/reference/bench_peft.py --time-phases` times PEFT's). The fused loss computes
    /// its gradient with respect to the hidden states in the forward phase, which PEFT's
    /// backward does. On a GPU the synchronisations cost the step the overlap of each phase's
    /// launches with the previous phase's kernels, so compare steps timed the same way.
    #[arg(long)]
    pub time_phases: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// `peft-train`'s AdamW (`peft_decoder::fused_adamw`): one pass on the CPU backends,
    /// PyTorch's in-place kernels on LibTorch.
    Fused,
    /// Burn's own `AdamW` with the same settings, for comparison.
    Burn,
}

fn sync(device: &Device) -> Result<()> {
    device
        .sync()
        .map_err(|e| anyhow::anyhow!("device error: {e:?}"))
}

pub fn run(args: &TrainBench) -> Result<Record> {
    let setup = &args.setup;
    if setup.method == Method::None {
        bail!("`--method none` trains nothing; use it with `infer`");
    }
    let config = setup.config()?;
    let device = setup.device(true)?;
    device.seed(setup.seed);
    let model = setup.model(&config, &device)?;
    let trainable = model.parameter_count().trainable;
    let trainee = Trainee::new(model, None, None);
    // Language modelling on every token, as the Python reference does (`labels = input_ids`).
    let examples: Vec<TokenizedExample> = setup
        .random_rows(config.vocab_size())
        .into_iter()
        .map(|ids| TokenizedExample {
            labels: ids.iter().map(|&t| i64::from(t)).collect(),
            ids,
            class: None,
            line: 0,
        })
        .collect();
    let batcher = ExampleBatcher {
        shared_label_prefix: 0,
    };
    // torch.optim.AdamW's defaults, as the Python reference uses them.
    let adamw = adamw(0.01, 1e-8);
    let optimizer = match args.optimizer {
        OptimizerKind::Fused => adamw.init(),
        OptimizerKind::Burn => adamw.init_burns(),
    };
    let mut learner = Learner::new(trainee, optimizer, ConstantLr::new(1e-3));

    let mut timings = Vec::with_capacity(args.steps);
    let mut losses = Vec::with_capacity(args.warmup + args.steps);
    let mut phases = PhaseTimes::default();
    for step in 0..args.warmup + args.steps {
        let started = Instant::now();
        let batch = batcher.batch(examples.clone(), &device);
        let loss = if args.time_phases {
            let (loss, times) = timed_step(&mut learner, batch, &device)?;
            if step >= args.warmup {
                phases.push(times);
            }
            loss
        } else {
            // In the order of Burn's training loop.
            let output = learner.train_step(batch);
            learner.lr_step();
            learner.optimizer_step(output.grads);
            output.item.loss
        };
        // Reading the loss waits for the device, as the metrics do after every step.
        let loss = loss.into_scalar::<f32>();
        if !loss.is_finite() {
            bail!("step {step}: loss is {loss}");
        }
        losses.push(loss);
        sync(&device)?;
        if step >= args.warmup {
            timings.push(started.elapsed());
        }
    }
    let mut record = Record::new("train", setup, trainable);
    record.set_steps(&timings, setup.batch * setup.seq);
    record.first_loss = losses.first().copied();
    record.last_loss = losses.last().copied();
    record.optimizer = Some(args.optimizer);
    if args.time_phases {
        phases.report(&mut record);
    }
    Ok(record.finish())
}

/// One training step as `Learner::train_step`, `lr_step` and `optimizer_step` run it (the
/// `Trainee`'s forward pass and loss, the loss's backward pass, the update), the device
/// synchronised after each phase: the loss, and each phase's time in ms.
fn timed_step(
    learner: &mut Learner<Trainee>,
    batch: TrainBatch,
    device: &Device,
) -> Result<(Tensor<1>, [f64; 3])> {
    let mut times = [0.0; 3];
    let mut timed = |phase: usize, started: Instant| -> Result<()> {
        sync(device)?;
        times[phase] = started.elapsed().as_secs_f64() * 1e3;
        Ok(())
    };
    sync(device)?;
    let started = Instant::now();
    let trainee = learner.model();
    let output = trainee.forward(batch);
    timed(0, started)?;
    let started = Instant::now();
    let grads = output.loss.clone().backward();
    timed(1, started)?;
    let grads = GradientsParams::from_grads(grads, &trainee);
    // The learner holds the model; this clone would only share its parameters once more.
    drop(trainee);
    learner.lr_step();
    let started = Instant::now();
    learner.optimizer_step(grads);
    timed(2, started)?;
    Ok((output.loss, times))
}

/// The phases' times of the timed steps, ms: forward (with the loss), backward, optimizer.
#[derive(Default)]
struct PhaseTimes([Vec<f64>; 3]);

impl PhaseTimes {
    fn push(&mut self, times: [f64; 3]) {
        for (phase, time) in self.0.iter_mut().zip(times) {
            phase.push(time);
        }
    }

    fn report(mut self, record: &mut Record) {
        let [forward, backward, optimizer] = self.0.each_mut().map(|times| {
            times.sort_by(f64::total_cmp);
            Some(median(times))
        });
        record.forward_ms_median = forward;
        record.backward_ms_median = backward;
        record.optimizer_ms_median = optimizer;
    }
}
