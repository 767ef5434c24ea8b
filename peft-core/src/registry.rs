//! The adapter kinds this crate knows, registered in one place.
//!
//! A kind lives in its own file: its config implements [`KindConfig`] (what its
//! `adapter_config.json` says) and its encoder implements [`Encoder`] (what it hands a model
//! and what PEFT saves of it). Registering a kind is one variant in each enum below and one arm
//! in each function of this file; [`PeftAdapter`](crate::PeftAdapter), the models and the
//! trainer only ever call through the two traits and these functions.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::PromptLearningConfig;
use crate::kind::{Encoder, KindConfig};
use crate::prefix_tuning::{PrefixEncoder, PrefixTuningConfig};
use crate::prompt_tuning::{PromptEncoder, PromptTuningConfig};

/// An `adapter_config.json`, by its `peft_type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "peft_type")]
pub enum PeftConfig {
    #[serde(rename = "PROMPT_TUNING")]
    PromptTuning(PromptTuningConfig),
    #[serde(rename = "PREFIX_TUNING")]
    PrefixTuning(PrefixTuningConfig),
}

/// The trainable part of an adapter.
// One value per adapter, never in a hot collection; boxing would hide the variant from
// Burn's Module derive.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum AdapterModule {
    Prompt(PromptEncoder),
    Prefix(PrefixEncoder),
}

impl PeftConfig {
    /// The kind's config, to call through [`KindConfig`].
    pub fn kind(&self) -> &dyn KindConfig {
        match self {
            PeftConfig::PromptTuning(config) => config,
            PeftConfig::PrefixTuning(config) => config,
        }
    }

    pub fn kind_mut(&mut self) -> &mut dyn KindConfig {
        match self {
            PeftConfig::PromptTuning(config) => config,
            PeftConfig::PrefixTuning(config) => config,
        }
    }
}

impl PeftConfig {
    pub fn base(&self) -> &PromptLearningConfig {
        self.kind().base()
    }

    pub fn base_mut(&mut self) -> &mut PromptLearningConfig {
        self.kind_mut().base_mut()
    }

    /// PEFT's name for the method.
    pub fn peft_type(&self) -> &'static str {
        self.kind().peft_type()
    }
}

impl PeftConfig {
    /// A freshly initialised module of this config's kind and shape, to load saved
    /// parameters into.
    pub fn untrained(&self, device: &Device) -> AdapterModule {
        match self {
            PeftConfig::PromptTuning(config) => AdapterModule::Prompt(config.untrained(device)),
            PeftConfig::PrefixTuning(config) => {
                AdapterModule::Prefix(PrefixEncoder::for_config(config, device))
            }
        }
    }

    /// The adapter that PEFT's table `[p, table_width]` is: ready for inference, and
    /// trainable as that table.
    pub fn module_of_peft_table(&self, table: Tensor<2>) -> AdapterModule {
        match self {
            PeftConfig::PromptTuning(_) => AdapterModule::Prompt(PromptEncoder::from_table(table)),
            PeftConfig::PrefixTuning(_) => AdapterModule::Prefix(PrefixEncoder::from_table(table)),
        }
    }
}

impl AdapterModule {
    /// The kind's encoder, to call through [`Encoder`].
    pub fn encoder(&self) -> &dyn Encoder {
        match self {
            AdapterModule::Prompt(encoder) => encoder,
            AdapterModule::Prefix(encoder) => encoder,
        }
    }
}
