// The gradients of one output with respect to some inputs for a given output gradient, through
// PyTorch's autograd, called from Rust (`src/extension.rs`): how the LibTorch extensions reach
// PyTorch's fused backward kernels. tch's backward seeds its root with ones and takes no
// gradient for it, so the output gradient had to enter through an objective,
// `dot(output, output_grad)`, whose forward and backward were passes over both tensors and
// three kernels more in every call.
#include <torch/csrc/autograd/autograd.h>

#include <cstddef>

#include "failure.h"

// Writes into `grads[i]` a new tensor (the caller frees it as tch frees its own) holding the
// gradient of `sum(output_grad ∘ output)` with respect to `inputs[i]`, for `count` inputs that
// `output`'s autograd graph reaches; the graph is released. `output_grad` has `output`'s shape
// and type. Returns null, or a message if PyTorch refused (`failure.h`).
extern "C" const char* peft_autograd_grad(const at::Tensor* output, const at::Tensor* output_grad,
                                          const at::Tensor* const* inputs, size_t count,
                                          at::Tensor** grads) {
  return peft::failure_of([&] {
    torch::autograd::variable_list wanted;
    for (size_t i = 0; i < count; i++) wanted.push_back(*inputs[i]);
    auto found = torch::autograd::grad({*output}, wanted, {*output_grad},
                                       /*retain_graph=*/false, /*create_graph=*/false);
    for (size_t i = 0; i < count; i++) grads[i] = new at::Tensor(std::move(found[i]));
  });
}
