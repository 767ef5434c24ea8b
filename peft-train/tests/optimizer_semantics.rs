//! What the optimizer step does matches what PyTorch users get: gradient accumulation over N
//! batches trains as one batch N times as large (the mean over all their target tokens, as
//! Hugging Face's Trainer computes it), and AdamW uses PyTorch's epsilon.

use burn::data::dataloader::batcher::Batcher;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::optim::{GradientsAccumulator, SgdConfig};
use burn::prelude::*;
use burn::train::Learner;
use peft_core::{PeftAdapter, PrefixReparameterisation, PromptLearningConfig};
use peft_decoder::Adapted;
use peft_gpt2::load_pretrained;
use peft_runtime::ComputeBackend;
use peft_runtime::Model;
use peft_train::data::TokenizedExample;
use peft_train::train::adamw;
use peft_train::train::trainee::{ExampleBatcher, TrainBatch, Trainee};

fn flatten<M: Module>(module: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0
                .extend(param.val().into_data().try_to_vec::<f32>().unwrap());
        }
    }
    let mut all = Collect(Vec::new());
    module.visit(&mut all);
    all.0
}

/// A prefix-tuned tiny GPT-2, identical on every call.
fn trainee(device: &Device) -> Trainee {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/tiny-gpt2");
    let (gpt2, config, _) = load_pretrained(dir, device).unwrap();
    device.seed(11);
    let adapter = PeftAdapter::prefix_tuning(
        PromptLearningConfig::new(3, config.shape()),
        PrefixReparameterisation::Direct,
        device,
    );
    Trainee::new(Adapted::new(Model::Gpt2(gpt2), Some(adapter)), None, None)
}

fn batch(rows: &[&[u32]], device: &Device) -> TrainBatch {
    let examples = rows
        .iter()
        .map(|ids| TokenizedExample {
            ids: ids.to_vec(),
            labels: ids.iter().map(|&t| i64::from(t)).collect(),
            class: None,
            line: 0,
        })
        .collect();
    ExampleBatcher {
        shared_label_prefix: 0,
    }
    .batch(examples, device)
}

#[test]
fn accumulated_batches_step_like_one_large_batch() {
    let device = ComputeBackend::Flex.device().unwrap().autodiff();
    // Rows of different lengths, so the two halves hold different numbers of targets and a
    // plain sum (or mean) of the halves' mean losses would differ from the whole's.
    let rows: [&[u32]; 4] = [
        &[5, 9, 200, 31, 7, 64, 3],
        &[11, 3, 90],
        &[40, 41, 42, 100, 17],
        &[8, 250],
    ];

    let mut whole = Learner::new(
        trainee(&device),
        SgdConfig::new().init(),
        ConstantLr::new(1.0),
    );
    let before = flatten(&whole.model());
    let output = whole.train_step(batch(&rows, &device));
    whole.lr_step();
    whole.optimizer_step(output.grads);
    let expected = flatten(&whole.model());

    let mut halves = Learner::new(
        trainee(&device).accumulating(2),
        SgdConfig::new().init(),
        ConstantLr::new(1.0),
    );
    assert_eq!(flatten(&halves.model()), before);
    let mut accumulator = GradientsAccumulator::new();
    for half in rows.chunks(2) {
        let output = halves.train_step(batch(half, &device));
        accumulator.accumulate(&halves.model(), output.grads);
    }
    halves.lr_step();
    halves.optimizer_step(accumulator.grads());
    let accumulated = flatten(&halves.model());

    let moved = before
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(moved > 1e-3, "the step should move the adapter ({moved})");
    let worst = expected
        .iter()
        .zip(&accumulated)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-5,
        "two accumulated halves step differently from the whole batch, by up to {worst}"
    );
}

/// PyTorch's AdamW, first step, lr 1, no weight decay: the update is g / (|g| + eps), so a
/// gradient of 1e-6 moves the parameter by 1e-6 / (1e-6 + 1e-8) = 0.990099 with PyTorch's
/// epsilon — and by 0.0909 with Burn's default 1e-5.
#[test]
fn adamw_uses_pytorchs_epsilon() {
    #[derive(Module, Debug)]
    struct One {
        weight: Param<Tensor<1>>,
    }
    let device = ComputeBackend::Flex.device().unwrap().autodiff();
    let one = One {
        weight: Param::from_tensor(Tensor::zeros([1], &device)),
    };
    let loss = one.weight.val().mul_scalar(1e-6).sum();
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &one);
    let mut optimizer = adamw(0.0, 1e-8).init();
    let lr: burn::optim::LearningRate = 1.0;
    let stepped = optimizer.step(lr, one, grads);
    let moved = -flatten(&stepped)[0];
    assert!(
        (moved - 0.990_099).abs() < 1e-4,
        "AdamW moved the weight by {moved}; PyTorch moves it by 0.990099"
    );
}
