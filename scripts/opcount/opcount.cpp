// Counts the ATen operators a PyTorch process runs, by name, through a global RecordFunction
// callback: LD_PRELOAD it into `peft-bench --device tch` or `bench_peft.py` (count.sh does).
//
// "Kernels" are the operators that did work of their own: an `aten::` operator, not one that
// only makes a view or an allocation (is_meta), during which no other such operator ran. On a
// GPU each is a kernel launch and, for element-wise work, a pass over memory; the count is the
// same on the CPU, where this runs. With OPCOUNT_TRACE=name,name,... each call of those
// operators is also counted by its caller chain: the two enclosing operators and the innermost
// frames of the main executable, as offsets that count.sh turns into function names.
#include <ATen/record_function.h>
#include <dlfcn.h>
#include <execinfo.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace {

std::mutex mutex;
// name -> (calls, calls that were kernels)
std::map<std::string, std::pair<long, long>>* counts;
std::vector<std::string>* traced;
// Per thread, per open operator: whether a kernel ran inside it.
thread_local std::vector<bool> kernel_inside;
// Per thread, the open operators' names (static strings of the operator schema).
thread_local std::vector<const char*> open_names;

bool is_meta(const std::string& name) {
  static const char* names[] = {
      "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::as_strided",
      "aten::view", "aten::_reshape_alias", "aten::transpose", "aten::t", "aten::expand",
      "aten::permute", "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice",
      "aten::resolve_conj", "aten::resolve_neg", "aten::detach", "aten::alias",
      "aten::_unsafe_view", "aten::reshape", "aten::contiguous", "aten::split", "aten::chunk",
      "aten::narrow", "aten::unbind", "aten::lift_fresh", "aten::result_type",
      "aten::expand_as", "aten::view_as", "aten::split_with_sizes", "aten::unflatten",
      "aten::flatten", "aten::is_nonzero", "aten::to", "aten::new_empty",
      "aten::new_empty_strided", "aten::set_", "aten::resize_", "aten::movedim",
      "aten::swapaxes", "aten::diagonal", "aten::unfold", "aten::broadcast_to"};
  for (const char* meta : names)
    if (name == meta) return true;
  return false;
}

// Offsets into the main executable of its innermost frames on the stack.
std::string executable_frames() {
  void* frames[64];
  int count = backtrace(frames, 64);
  std::string out;
  for (int i = 0, kept = 0; i < count && kept < 8; i++) {
    Dl_info info;
    if (dladdr(frames[i], &info) && info.dli_fname &&
        std::string(info.dli_fname).find(".so") == std::string::npos) {
      char offset[32];
      std::snprintf(offset, sizeof offset, " 0x%lx",
                    (unsigned long)((char*)frames[i] - (char*)info.dli_fbase));
      out += offset;
      kept++;
    }
  }
  return out;
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& call) {
  kernel_inside.push_back(false);
  std::string name = call.name();
  for (const auto& wanted : *traced) {
    if (wanted != name) continue;
    std::string key = "TRACE " + name;
    for (size_t up = 1; up <= 2 && up <= open_names.size(); up++)
      key += std::string(" <- ") + open_names[open_names.size() - up];
    key += executable_frames();
    std::lock_guard<std::mutex> lock(mutex);
    (*counts)[key].first++;
  }
  open_names.push_back(call.name());
  return nullptr;
}

void on_end(const at::RecordFunction& call, at::ObserverContext*) {
  if (kernel_inside.empty()) return;  // began before the callback was added
  open_names.pop_back();
  std::string name = call.name();
  bool inside = kernel_inside.back();
  kernel_inside.pop_back();
  bool kernel = !inside && name.rfind("aten::", 0) == 0 && !is_meta(name);
  if ((kernel || inside) && !kernel_inside.empty()) kernel_inside.back() = true;
  std::lock_guard<std::mutex> lock(mutex);
  auto& count = (*counts)[name];
  count.first++;
  if (kernel) count.second++;
}

struct Counter {
  Counter() {
    counts = new std::map<std::string, std::pair<long, long>>();
    traced = new std::vector<std::string>();
    if (const char* list = std::getenv("OPCOUNT_TRACE")) {
      std::string all = list;
      for (size_t at = 0; at <= all.size();) {
        size_t comma = all.find(',', at);
        if (comma == std::string::npos) comma = all.size();
        traced->push_back(all.substr(at, comma - at));
        at = comma + 1;
      }
    }
    at::addGlobalCallback(at::RecordFunctionCallback(on_start, on_end)
                              .scopes({at::RecordScope::FUNCTION,
                                       at::RecordScope::BACKWARD_FUNCTION}));
  }
  // At exit: "<calls>\t<kernels>\t<name>" lines, most called first, after a total line.
  ~Counter() {
    const char* path = std::getenv("OPCOUNT_OUT");
    FILE* out = path ? std::fopen(path, "w") : stderr;
    if (!out) return;
    std::lock_guard<std::mutex> lock(mutex);
    std::vector<std::pair<std::string, std::pair<long, long>>> rows(counts->begin(),
                                                                     counts->end());
    std::sort(rows.begin(), rows.end(),
              [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
    long kernels = 0;
    for (const auto& row : rows) kernels += row.second.second;
    std::fprintf(out, "%ld\t%ld\tkernels in all\n", kernels, kernels);
    for (const auto& row : rows)
      std::fprintf(out, "%ld\t%ld\t%s\n", row.second.first, row.second.second, row.first.c_str());
    if (path) std::fclose(out);
  }
} counter;

}  // namespace
