//! `--grad-clip` clips the step's gradients by their global norm (PyTorch's `clip_grad_norm_`)
//! inside Burn's `Learner`: with plain SGD at learning rate 1, the parameters move by exactly
//! the clipped gradient, so the move's norm is the limit.

use burn::data::dataloader::batcher::Batcher;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::SgdConfig;
use burn::optim::lr_scheduler::constant::ConstantLr;
use burn::prelude::*;
use burn::train::Learner;
use peft_core::{PeftAdapter, PrefixReparameterisation, PromptLearningConfig};
use peft_decoder::Adapted;
use peft_gpt2::load_pretrained;
use peft_runtime::ComputeBackend;
use peft_runtime::Model;
use peft_train::data::TokenizedExample;
use peft_train::train::trainee::{ExampleBatcher, Trainee};

/// Every float parameter of a module, flattened in visiting order.
#[derive(Default)]
struct Flatten(Vec<f32>);

impl ModuleVisitor for Flatten {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0
            .extend(param.val().into_data().try_to_vec::<f32>().unwrap());
    }
}

fn flatten(trainee: &Trainee) -> Vec<f32> {
    let mut all = Flatten::default();
    trainee.visit(&mut all);
    all.0
}

/// Norm of the parameter change of one SGD step (lr 1) with the given clipping.
fn step_norm(max_grad_norm: Option<f32>) -> f32 {
    let device = ComputeBackend::Flex.device().unwrap().autodiff();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/tiny-gpt2");
    let (gpt2, config, _) = load_pretrained(dir, &device).unwrap();
    device.seed(3);
    // A prefix with its reparametrisation MLP: five trainable tensors, so global and
    // per-tensor clipping differ.
    let adapter = PeftAdapter::prefix_tuning(
        PromptLearningConfig::new(4, config.shape()),
        PrefixReparameterisation::Mlp { hidden: 16 },
        &device,
    );
    let trainee = Trainee::new(
        Adapted::new(Model::Gpt2(gpt2), Some(adapter)),
        None,
        max_grad_norm,
    );
    let before = flatten(&trainee);
    let examples: Vec<TokenizedExample> = [[5u32, 9, 200, 31, 7, 64], [11, 3, 90, 18, 250, 2]]
        .iter()
        .map(|ids| TokenizedExample {
            ids: ids.to_vec(),
            labels: ids.iter().map(|&t| i64::from(t)).collect(),
            class: None,
            line: 0,
        })
        .collect();
    let batch = ExampleBatcher {
        shared_label_prefix: 0,
    }
    .batch(examples, &device);
    let mut learner = Learner::new(trainee, SgdConfig::new().init(), ConstantLr::new(1.0));
    let output = learner.train_step(batch);
    learner.lr_step();
    learner.optimizer_step(output.grads);
    let after = flatten(&learner.model());
    before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) * (a - b))
        .sum::<f32>()
        .sqrt()
}

#[test]
fn grad_clip_limits_the_global_norm_of_the_update() {
    let unclipped = step_norm(None);
    let limit = unclipped / 4.0;
    let clipped = step_norm(Some(limit));
    assert!(
        (clipped - limit).abs() <= 1e-3 * limit,
        "unclipped step {unclipped}, limit {limit}, clipped step {clipped}"
    );
    // A limit above the gradient's norm changes nothing.
    let loose = step_norm(Some(unclipped * 2.0));
    assert!((loose - unclipped).abs() <= 1e-4 * unclipped);
}
