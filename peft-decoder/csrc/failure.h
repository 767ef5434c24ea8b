// How the entry points compiled here report a failure to Rust, where no C++ exception may
// cross: each returns null, or the message of what its work threw.
#pragma once

#include <exception>
#include <string>

namespace peft {

// The last failure's message on this thread: one buffer for every entry point, so a message
// stays valid until the next failure on the thread.
inline std::string& last_failure() {
  thread_local std::string message;
  return message;
}

// Runs `work`; returns null, or the message of the exception it threw.
template <typename Work>
const char* failure_of(Work&& work) {
  try {
    work();
    return nullptr;
  } catch (const std::exception& error) {
    last_failure() = error.what();
    return last_failure().c_str();
  }
}

}  // namespace peft
