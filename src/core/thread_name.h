// Names the calling thread (as shown by top -H, perf --per-thread and gdb),
// so profiles of the server can tell its threads apart. Names longer than
// 15 characters are cut (the kernel's limit); failure is ignored: a name
// is a diagnostic, never needed for correctness.
#pragma once

namespace bowstack {

void set_thread_name(const char* name) noexcept;

}  // namespace bowstack
