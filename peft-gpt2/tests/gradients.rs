//! Training an adapter touches only the adapter: after `backward` only its parameters have
//! gradients, and an optimizer step leaves every base weight bit-identical.

mod common;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Gradients;
use common::*;
use peft_core::{
    AdapterModule, ModelShape, PeftAdapter, PeftConfig, PrefixReparameterisation, PromptEncoder,
    PromptInit, PromptLearningConfig, PromptTuningConfig, PromptTuningInit,
};
use peft_decoder::fused_layers::set_fused_layers;
use peft_gpt2::loss::{
    IGNORE_INDEX, LossTargets, fused_lm_loss_in_chunks, loss_chunk_rows, mean_loss,
};
use peft_gpt2::{AdaptedGpt2, load_pretrained};
use peft_runtime::ComputeBackend;

/// Which parameters of a module have a gradient.
struct GradientPresence<'a> {
    grads: &'a Gradients,
    with: usize,
    without: usize,
}

impl ModuleVisitor for GradientPresence<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        match param.val().grad(self.grads) {
            Some(_) => self.with += 1,
            None => self.without += 1,
        }
    }
}

/// Every float parameter's id and values.
#[derive(Default)]
struct Snapshot(Vec<(ParamId, TensorData)>);

impl ModuleVisitor for Snapshot {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push((param.id, param.val().into_data()));
    }
}

/// How many parameters of `module` have a gradient in `grads`, and how many do not.
fn gradient_presence(module: &impl Module, grads: &Gradients) -> (usize, usize) {
    let mut presence = GradientPresence {
        grads,
        with: 0,
        without: 0,
    };
    module.visit(&mut presence);
    (presence.with, presence.without)
}

fn snapshot(module: &impl Module) -> Vec<(ParamId, TensorData)> {
    let mut snapshot = Snapshot::default();
    module.visit(&mut snapshot);
    snapshot.0
}

fn adapters(
    shape: ModelShape,
    token_embeddings: Tensor<2>,
    device: &Device,
) -> Vec<(&'static str, PeftAdapter)> {
    let prompt_config = PeftConfig::PromptTuning(PromptTuningConfig {
        base: PromptLearningConfig::new(4, shape),
        prompt_tuning_init: PromptTuningInit::SampleVocab,
        prompt_tuning_init_text: None,
        tokenizer_name_or_path: None,
    });
    let prefix = |reparameterisation| {
        PeftAdapter::prefix_tuning(
            PromptLearningConfig::new(3, shape),
            reparameterisation,
            device,
        )
    };
    vec![
        (
            "prompt",
            PeftAdapter {
                module: AdapterModule::Prompt(PromptEncoder::new(
                    4,
                    shape.d_model,
                    PromptInit::SampleVocab { token_embeddings },
                    0.0,
                    device,
                )),
                config: prompt_config,
            },
        ),
        ("prefix", prefix(PrefixReparameterisation::Direct)),
        (
            "prefix-projection",
            prefix(PrefixReparameterisation::Mlp { hidden: 16 }),
        ),
        // Half the model's width: the `up` layer and every per-layer projection train too.
        (
            "prefix-layer-projection",
            prefix(PrefixReparameterisation::PerLayer { width: 16 }),
        ),
    ]
}

#[test]
fn only_adapter_parameters_get_gradients_and_change() {
    let device = ComputeBackend::Flex.device().unwrap().autodiff();
    let (gpt2, config, _) =
        load_pretrained(fixtures().join("tiny-gpt2").to_str().unwrap(), &device).unwrap();
    let shape = config.shape();
    let reference = Reference::load("tiny-gpt2");
    let ids = reference.int_tensor("batch.ids", &device);
    let mask = reference.mask_tensor("batch.mask", &device);
    let labels = ids.clone().mask_fill(mask.clone().bool_not(), IGNORE_INDEX);

    let token_embeddings = gpt2.wte.weight.val().detach();
    for (name, adapter) in adapters(shape, token_embeddings, &device) {
        let model = AdaptedGpt2::new(gpt2.clone(), Some(adapter));
        let base_before = snapshot(&model.base);
        let adapter_before = snapshot(model.adapter.as_ref().unwrap());

        let (logits, aligned) = model.forward(ids.clone(), Some(mask.clone()), labels.clone());
        let grads = mean_loss(logits, aligned).backward();
        let (base_with, base_without) = gradient_presence(&model.base, &grads);
        assert_eq!(
            base_with, 0,
            "{name}: {base_with} base parameters got gradients"
        );
        assert!(base_without > 0);
        let (adapter_with, adapter_without) =
            gradient_presence(model.adapter.as_ref().unwrap(), &grads);
        assert_eq!(
            adapter_without, 0,
            "{name}: adapter parameters without gradients"
        );

        let grads = GradientsParams::from_grads(grads, &model);
        assert_eq!(
            grads.len(),
            adapter_with,
            "{name}: optimizer sees non-adapter gradients"
        );
        let mut optimizer = AdamWConfig::new().init();
        let stepped = optimizer.step(1e-2, model, grads);

        let base_after = snapshot(&stepped.base);
        assert_eq!(base_after.len(), base_before.len());
        for ((id, before), (id_after, after)) in base_before.iter().zip(&base_after) {
            assert_eq!(id, id_after);
            assert_eq!(
                before.as_bytes(),
                after.as_bytes(),
                "{name}: base parameter {id} changed"
            );
        }
        let adapter_after = snapshot(stepped.adapter.as_ref().unwrap());
        for ((id, before), (_, after)) in adapter_before.iter().zip(&adapter_after) {
            assert_ne!(
                before.as_bytes(),
                after.as_bytes(),
                "{name}: adapter parameter {id} did not move"
            );
        }
    }
}

/// Every float parameter's gradient, in visiting order (`None` where it has none).
struct GradientValues<'a> {
    grads: &'a Gradients,
    values: Vec<Option<Vec<f32>>>,
}

impl ModuleVisitor for GradientValues<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.values.push(
            param
                .val()
                .grad(self.grads)
                .map(|g| g.into_data().try_to_vec::<f32>().unwrap()),
        );
    }
}

fn gradient_values(module: &impl Module, grads: &Gradients) -> Vec<Option<Vec<f32>>> {
    let mut visitor = GradientValues {
        grads,
        values: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.values
}

/// The fused LM-head loss is the plain one: same value, same gradient for every parameter,
/// for prompt and prefix adapters and for full fine-tuning (where the tied head is trained);
/// with its gradients handed to autodiff as they are, and through the linear surrogate that
/// backends without the crate's extensions use (the fused layers turned off: the other test
/// here gives the same results either way).
#[test]
fn fused_loss_matches_full_logits_loss_and_gradients() {
    for fused_layers in [true, false] {
        set_fused_layers(fused_layers);
        fused_loss_matches_full_logits_loss_and_gradients_with(fused_layers);
    }
    set_fused_layers(true);
}

fn fused_loss_matches_full_logits_loss_and_gradients_with(fused_layers: bool) {
    let device = ComputeBackend::Flex.device().unwrap().autodiff();
    let (gpt2, config, _) =
        load_pretrained(fixtures().join("tiny-gpt2").to_str().unwrap(), &device).unwrap();
    let shape = config.shape();
    let reference = Reference::load("tiny-gpt2");
    let rows = reference.rows("batch.ids");
    let ids = reference.int_tensor("batch.ids", &device);
    let mask = reference.mask_tensor("batch.mask", &device);
    let mask_rows = reference.rows("batch.mask");
    // Only some positions are targets, as for prompt/completion data.
    let label_rows: Vec<Vec<i64>> = rows
        .iter()
        .zip(&mask_rows)
        .map(|(ids, mask)| {
            ids.iter()
                .zip(mask)
                .enumerate()
                .map(|(i, (&id, &m))| {
                    if m == 1 && i % 3 != 1 {
                        id
                    } else {
                        IGNORE_INDEX
                    }
                })
                .collect()
        })
        .collect();
    let (batch, width) = (label_rows.len(), label_rows[0].len());
    let labels = Tensor::<1, Int>::from_data(
        TensorData::new(label_rows.concat(), [batch * width]),
        &device,
    )
    .reshape([batch, width]);
    let targets = LossTargets::from_rows(label_rows.iter().map(Vec::as_slice));

    let token_embeddings = gpt2.wte.weight.val().detach();
    let mut models: Vec<(&str, AdaptedGpt2)> = adapters(shape, token_embeddings, &device)
        .into_iter()
        .map(|(name, adapter)| (name, AdaptedGpt2::new(gpt2.clone(), Some(adapter))))
        .collect();
    models.push(("full", AdaptedGpt2::full_finetune(gpt2.clone())));
    for (name, model) in models {
        let name = format!("{name}, fused layers {fused_layers}");
        // Full fine-tuning runs dropout: both passes draw the same masks.
        device.seed(7);
        let (logits, aligned) = model.forward(ids.clone(), Some(mask.clone()), labels.clone());
        let plain = mean_loss(logits, aligned);
        let plain_value = plain.clone().into_scalar::<f32>();
        let plain_grads = gradient_values(&model, &plain.backward());
        // The device's chunk size (every row at once here), and chunks that split the rows
        // unevenly, so that the chunks' losses and gradients are summed.
        for chunk_rows in [loss_chunk_rows(&device, config.vocab_size), 1, 3] {
            device.seed(7);
            let conditioning = model.conditioning();
            let hidden =
                model
                    .base
                    .hidden_conditioned(ids.clone(), Some(mask.clone()), &conditioning);
            let prompt_len = conditioning.prompt_len();
            let labels_at = targets.predicted_labels(hidden.dims()[1], prompt_len, &device);
            let fused = fused_lm_loss_in_chunks(
                hidden,
                model.base.wte.weight.val(),
                model.full_finetune,
                &labels_at,
                chunk_rows,
            );
            let fused_value = fused.clone().into_scalar::<f32>();
            assert!(
                (plain_value - fused_value).abs() <= 1e-5,
                "{name}, chunks of {chunk_rows}: loss {fused_value} vs {plain_value}"
            );
            let fused_grads = gradient_values(&model, &fused.backward());
            let mut compared = 0;
            for (i, (p, f)) in plain_grads.iter().zip(&fused_grads).enumerate() {
                match (p, f) {
                    (None, None) => {}
                    (Some(p), Some(f)) => {
                        let worst = max_abs_diff(f, p, None);
                        let scale = p.iter().fold(0f32, |m, v| m.max(v.abs()));
                        assert!(
                            worst <= 1e-5 + 1e-4 * scale,
                            "{name}, chunks of {chunk_rows}: parameter {i} gradient differs by \
                             {worst} (scale {scale})"
                        );
                        compared += 1;
                    }
                    _ => panic!(
                        "{name}, chunks of {chunk_rows}: parameter {i} has a gradient in only \
                         one of the losses"
                    ),
                }
            }
            assert!(compared > 0, "{name}: no gradients compared");
        }
    }
}
