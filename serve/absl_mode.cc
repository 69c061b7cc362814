/*
 * serve/absl_mode.cc — the one Abseil setting rankd makes, in C++ because
 * Abseil has no C API.
 *
 * gRPC core locks through absl::Mutex. Debian builds Abseil without NDEBUG,
 * so every Mutex::Lock also records the lock order in a process-wide graph
 * (GraphCycles, under one global spinlock) and aborts the process when it
 * sees a cycle (OnDeadlockCycle::kAbort). That is a debugging aid: in a
 * server it costs each Rank call about 6,000 instructions (6.1k of the
 * 94k gRPC and service instructions a call adds to in-process scoring,
 * callgrind; bench/RESULTS.md, stop 18), serializes the workers' gRPC locks
 * on the one spinlock, and turns a reported ordering (not a deadlock) into a
 * crash. Release builds of Abseil do none of it; kIgnore makes Debian's
 * behave the same.
 */
#include <absl/synchronization/mutex.h>

extern "C" void rk_absl_deadlock_detection_off(void);

extern "C" void rk_absl_deadlock_detection_off(void) {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}
