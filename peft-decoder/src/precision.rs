//! Mixed precision as PyTorch autocast users get it: the frozen base model stored and run in a
//! half type (bf16 or f16), the adapter's trainable parameters — and so their gradients and
//! the optimizer's state — in f32, and the loss's softmax in f32.
//!
//! Full fine-tuning keeps the weights it trains in f32 and runs each forward pass on a
//! half-precision copy cast inside the autodiff graph ([`cast_floats_tracked`]), as autocast
//! casts weights per operation.
//!
//! The device keeps f32 as its default float type, so everything created at run time (masks,
//! the adapter, the loss) is f32; only the base's weights are cast ([`cast_floats`]), and
//! where the two meet the f32 side is cast to the activations' type, once per input: the
//! adapter's virtual tokens and prefix keys/values (`layout`), the score bias
//! (`ForwardInput::attention_mask`), rotary phases (the Llama family). The loss casts logits
//! up to f32 (`loss`). `Tensor::cast` to the type a tensor already has returns it unchanged,
//! so f32 runs pay nothing for these casts.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use burn::tensor::DType;

/// `module` with every float parameter cast to `dtype`: new parameters, trainable where the
/// old ones were.
pub fn cast_floats<M: Module>(module: M, dtype: DType) -> M {
    module.map(&mut FloatCaster {
        dtype,
        keep_graph: false,
    })
}

/// `module` with every float parameter replaced by its cast to `dtype` inside the autodiff
/// graph: gradients of the copy flow back to the original parameters (the f32 master weights
/// of mixed-precision full fine-tuning).
pub fn cast_floats_tracked<M: Module>(module: M, dtype: DType) -> M {
    module.map(&mut FloatCaster {
        dtype,
        keep_graph: true,
    })
}

struct FloatCaster {
    dtype: DType,
    keep_graph: bool,
}

impl ModuleMapper for FloatCaster {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (dtype, keep_graph) = (self.dtype, self.keep_graph);
        param.map(|tensor| {
            if tensor.dtype() == dtype {
                return tensor;
            }
            if keep_graph {
                return tensor.cast(dtype);
            }
            // A new parameter is a leaf of its own, not a node hanging off the old one.
            let tracked = tensor.is_require_grad();
            let cast = tensor.cast(dtype).detach();
            if tracked { cast.require_grad() } else { cast }
        })
    }
}
