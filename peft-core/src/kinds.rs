//! The adapter kinds this crate knows, registered in one place.
//!
//! A kind lives in its own file: its config implements [`KindConfig`] (what its
//! `adapter_config.json` says and what it builds) and its encoder implements [`Encoder`] (what
//! it hands a model and what PEFT saves of it). Registering a kind is one variant in each enum
//! below and one arm in each dispatch function; [`PeftAdapter`](crate::PeftAdapter), the
//! models and the trainer only ever call through the two traits.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::adapter::{Encoder, KindConfig};
use crate::config::PromptLearningConfig;
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

impl AdapterModule {
    /// The kind's encoder, to call through [`Encoder`].
    pub fn encoder(&self) -> &dyn Encoder {
        match self {
            AdapterModule::Prompt(encoder) => encoder,
            AdapterModule::Prefix(encoder) => encoder,
        }
    }
}
