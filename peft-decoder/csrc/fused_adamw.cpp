// PyTorch's fused AdamW kernel (`torch.optim.AdamW(fused=True)`) for one parameter tensor, called
// from Rust (`src/fused_adamw.rs`): tch binds no `_fused_adamw_`. The tensors are tch's, which
// are `at::Tensor`s behind the pointer.
#include <ATen/core/Tensor.h>
#include <ATen/ops/_fused_adamw.h>

#include "failure.h"

// Updates `param`, `exp_avg` and `exp_avg_sq` in place with `grad`; `step` is a float scalar on
// the parameter's device holding the step number (1 for the first). Returns null, or a message
// if ATen refused (`failure.h`).
extern "C" const char* peft_fused_adamw_step(const at::Tensor* param, const at::Tensor* grad,
                                             const at::Tensor* exp_avg,
                                             const at::Tensor* exp_avg_sq,
                                             const at::Tensor* step, double lr, double beta1,
                                             double beta2, double weight_decay, double eps) {
  return peft::failure_of([&] {
    at::_fused_adamw_({*param}, {*grad}, {*exp_avg}, {*exp_avg_sq}, /*max_exp_avg_sqs=*/{},
                      {*step}, lr, beta1, beta2, weight_decay, eps, /*amsgrad=*/false,
                      /*maximize=*/false);
  });
}
