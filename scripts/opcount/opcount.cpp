// Counts the ATen operators a PyTorch process runs, by name, through a global RecordFunction
// callback: LD_PRELOAD it into `peft-bench --device tch` or `bench_peft.py` (count.sh does).
//
// "Kernels" are the operators that did work of their own: an `aten::` operator, not one that
// only makes a view or an allocation (is_meta), during which no other such operator ran, on a
// tensor of more than one element (a scalar operand is converted on the host, on a GPU too).
// On a GPU each is a kernel launch and, for element-wise work, a pass over memory; the count is
// the same on the CPU, where this runs. Each kernel's operands and results are also summed in
// bytes (each tensor's distinct elements: a broadcast operand counts once), the memory a GPU
// kernel reads and writes, which bounds an element-wise kernel's time there. With
// OPCOUNT_TRACE=name,name,... each call of those operators is also counted by its caller chain:
// the two enclosing operators and the innermost frames of the main executable, as offsets that
// count.sh turns into function names.
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
struct Count {
  long calls = 0;
  long kernels = 0;
  double bytes = 0;  // operands and results of the calls that were kernels
};
std::map<std::string, Count>* counts;
std::vector<std::string>* traced;
// What is known of an operator between its start and its end.
struct Open {
  const char* name;  // a static string of the operator schema
  bool kernel_inside = false;
  double operand_bytes = 0;  // readable only when it starts
  int64_t largest = 0;       // the most elements of a tensor it touched
  std::string trace_key;     // empty unless traced
};
// Per thread, the open operators, innermost last.
thread_local std::vector<Open> open_calls;

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

// The bytes of the distinct elements `value` holds (a tensor, or a list of them): a dimension
// of stride 0 (broadcast) counts once.
// The most elements of the tensors `value` holds (a tensor, or a list of them).
int64_t largest_of(const c10::IValue& value) {
  if (value.isTensor()) return value.toTensor().defined() ? value.toTensor().numel() : 0;
  int64_t largest = 0;
  if (value.isTensorList())
    for (const at::Tensor& tensor : value.toTensorVector())
      largest = std::max(largest, tensor.defined() ? tensor.numel() : int64_t{0});
  return largest;
}

double bytes_of(const c10::IValue& value) {
  if (value.isTensor()) {
    const at::Tensor& tensor = value.toTensor();
    if (!tensor.defined()) return 0;
    double elements = 1;
    for (int64_t dim = 0; dim < tensor.dim(); dim++)
      if (tensor.stride(dim) != 0) elements *= tensor.size(dim);
    return elements * tensor.element_size();
  }
  if (value.isTensorList()) {
    double sum = 0;
    for (const at::Tensor& tensor : value.toTensorVector()) sum += bytes_of(c10::IValue(tensor));
    return sum;
  }
  return 0;
}

// How an operator's first operand and its results count, where not as read and written whole.
enum class Access {
  Whole,
  // Read only where an index points: the first operand counts as much as the result (what is
  // gathered), not its whole size (an embedding table).
  Gathers,
  // Written, not read: the first operand (the destination) counts once, as the result.
  Overwrites,
  // Written in place only where an index points: as much as the other operands (index and
  // values) are read, written again; the destination's size does not count.
  Scatters,
};

Access access(const std::string& name) {
  static const char* gathers[] = {"aten::index_select", "aten::embedding", "aten::gather",
                                  "aten::index"};
  static const char* overwrites[] = {"aten::copy_", "aten::fill_", "aten::zero_"};
  static const char* scatters[] = {"aten::scatter_", "aten::scatter_add_",
                                   "aten::scatter_reduce_", "aten::index_put_",
                                   "aten::index_add_", "aten::index_fill_"};
  for (const char* op : gathers)
    if (name == op) return Access::Gathers;
  for (const char* op : overwrites)
    if (name == op) return Access::Overwrites;
  for (const char* op : scatters)
    if (name == op) return Access::Scatters;
  return Access::Whole;
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
  Open open{call.name()};
  std::string name = call.name();
  auto inputs = call.inputs();
  Access how = access(name);
  for (size_t i = how == Access::Whole ? 0 : 1; i < inputs.size(); i++)
    open.operand_bytes += (how == Access::Scatters ? 2 : 1) * bytes_of(inputs[i]);
  for (const auto& input : inputs) open.largest = std::max(open.largest, largest_of(input));
  if (std::find(traced->begin(), traced->end(), name) != traced->end()) {
    open.trace_key = "TRACE " + name;
    for (size_t up = 1; up <= 2 && up <= open_calls.size(); up++)
      open.trace_key += std::string(" <- ") + open_calls[open_calls.size() - up].name;
    open.trace_key += executable_frames();
  }
  open_calls.push_back(std::move(open));
  return nullptr;
}

void on_end(const at::RecordFunction& call, at::ObserverContext*) {
  if (open_calls.empty()) return;  // began before the callback was added
  Open open = std::move(open_calls.back());
  open_calls.pop_back();
  std::string name = call.name();
  for (const auto& output : call.outputs()) open.largest = std::max(open.largest, largest_of(output));
  // Work on single values alone is not counted: a wrapped number converted on the host (a
  // scalar operand), which a GPU run does there too, without a launch.
  bool kernel = !open.kernel_inside && name.rfind("aten::", 0) == 0 && !is_meta(name) &&
                open.largest > 1;
  if ((kernel || open.kernel_inside) && !open_calls.empty()) open_calls.back().kernel_inside = true;
  double bytes = 0;
  if (kernel) {
    bytes = open.operand_bytes;
    Access how = access(name);
    if (how != Access::Scatters)
      for (const auto& output : call.outputs())
        bytes += (how == Access::Gathers ? 2 : 1) * bytes_of(output);
  }
  std::lock_guard<std::mutex> lock(mutex);
  for (const std::string& key : {name, open.trace_key}) {
    if (key.empty()) continue;
    auto& count = (*counts)[key];
    count.calls++;
    if (kernel) count.kernels++;
    count.bytes += bytes;
  }
}

struct Counter {
  Counter() {
    counts = new std::map<std::string, Count>();
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
                              .needsInputs(true)
                              .needsOutputs(true)
                              .scopes({at::RecordScope::FUNCTION,
                                       at::RecordScope::BACKWARD_FUNCTION}));
  }
  // At exit: "<calls>\t<kernels>\t<bytes>\t<name>" lines, most called first, after a total
  // line.
  ~Counter() {
    const char* path = std::getenv("OPCOUNT_OUT");
    FILE* out = path ? std::fopen(path, "w") : stderr;
    if (!out) return;
    std::lock_guard<std::mutex> lock(mutex);
    std::vector<std::pair<std::string, Count>> rows(counts->begin(), counts->end());
    std::sort(rows.begin(), rows.end(),
              [](const auto& a, const auto& b) { return a.second.calls > b.second.calls; });
    Count all;
    for (const auto& row : rows) {
      if (row.first.rfind("TRACE ", 0) == 0) continue;  // counted again under their name
      all.kernels += row.second.kernels;
      all.bytes += row.second.bytes;
    }
    std::fprintf(out, "%ld\t%ld\t%.0f\tkernels in all\n", all.kernels, all.kernels, all.bytes);
    for (const auto& [name, count] : rows)
      std::fprintf(out, "%ld\t%ld\t%.0f\t%s\n", count.calls, count.kernels, count.bytes,
                   name.c_str());
    if (path) std::fclose(out);
  }
} counter;

}  // namespace
