// PyTorch's own profiler (Kineto) over a whole LibTorch process, for a binary that cannot start
// it itself (peft-bench): LD_PRELOAD it with PROFILE_TRACE=PATH and the process writes, when it
// exits, the Chrome trace that `torch.profiler`'s export_chrome_trace writes — the operators
// run on the host, and on a GPU every kernel with its time on the device (CUPTI). profile.sh
// preloads it; scripts/reference/bench_peft.py starts the same profiler itself.
//
// It starts when the library is loaded, before main: linked against libtorch_cuda where there
// is one, so that PyTorch's CUDA hooks are registered by then and the CUDA activities can be
// asked for.
#include <ATen/Context.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>

namespace {

namespace profiler = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

// Ends the profile and writes the trace. At exit the main thread's thread-local objects are
// destroyed before any static one, the profiler's state among them, so the end is a
// thread-local object too, made after the profiler's state and therefore destroyed before it.
struct Stop {
  std::string path;
  ~Stop() {
    try {
      profiler::disableProfiler()->save(path);
    } catch (const std::exception& error) {
      std::fprintf(stderr, "kineto.cpp: no trace written to %s: %s\n", path.c_str(), error.what());
    }
  }
};

struct Start {
  Start() {
    const char* trace = std::getenv("PROFILE_TRACE");
    if (!trace || !*trace) return;
    std::set<ActivityType> activities{ActivityType::CPU};
    if (at::hasCUDA()) activities.insert(ActivityType::CUDA);
    // Operand shapes cost host time on every operator, which a short GPU step may not have
    // to spare: asked for with PROFILE_SHAPES=1.
    const char* shapes = std::getenv("PROFILE_SHAPES");
    ProfilerConfig config(ProfilerState::KINETO, shapes && std::string(shapes) == "1");
    profiler::prepareProfiler(config, activities);
    profiler::enableProfiler(config, activities);
    static thread_local Stop stop;
    stop.path = trace;
  }
} start;

}  // namespace
