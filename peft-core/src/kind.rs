//! The two traits an adapter kind implements, in its own file: [`KindConfig`] for its config
//! (what its `adapter_config.json` holds) and [`Encoder`] for its trainable module (what it
//! hands a model and what PEFT saves of it). [`crate::registry`] lists the kinds.

use burn::prelude::*;

use crate::conditioning::Conditioning;
use crate::config::{AdapterShapes, ModelShape, PromptLearningConfig};

/// The config half of an adapter kind: what its `adapter_config.json` holds. Implemented by
/// each kind's config, in the kind's own file.
pub trait KindConfig {
    /// PEFT's name for the method (`peft_type`).
    fn peft_type(&self) -> &'static str;
    /// The fields every prompt-learning method shares.
    fn base(&self) -> &PromptLearningConfig;
    fn base_mut(&mut self) -> &mut PromptLearningConfig;
    /// Which of a model's shapes this kind must agree with.
    fn model_shape(&self, shapes: &AdapterShapes) -> ModelShape;
    /// Width of a row of PEFT's `prompt_embeddings` table (`None` if it overflows: the config
    /// came from an edited file).
    fn table_width(&self) -> Option<usize>;
    /// What is wrong with the kind's own fields, if anything.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    /// Whether the kind trains more than PEFT's table (a reparameterisation) and keeps it in
    /// [`NATIVE_FILE`](crate::adapter::NATIVE_FILE) so that training can resume.
    fn uses_native_file(&self) -> bool {
        false
    }
    /// How many values the native file of this config holds (`None` if that overflows).
    fn native_values(&self) -> Option<usize> {
        None
    }
    /// How many values the kind trains: its native file's when it has one, else PEFT's table
    /// (`None` if that overflows).
    fn trainable_values(&self) -> Option<usize> {
        if self.uses_native_file() {
            return self.native_values();
        }
        let base = self.base();
        base.num_virtual_tokens
            .checked_mul(base.num_transformer_submodules)?
            .checked_mul(self.table_width()?)
    }
}

/// The trainable half of an adapter kind: what it hands a model and what PEFT saves of it.
/// Implemented by each kind's encoder, in the kind's own file.
pub trait Encoder {
    /// The conditioning of one forward pass of a model of `shape`, shared by every row.
    fn conditioning(&self, shape: ModelShape) -> Conditioning;
    /// The table PEFT saves as `prompt_embeddings`.
    fn peft_table(&self) -> Tensor<2>;
    /// Whether the trainable parameters are more than the table PEFT saves.
    fn has_reparameterisation(&self) -> bool {
        false
    }
}
