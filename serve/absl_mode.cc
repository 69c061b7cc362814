/*
 * serve/absl_mode.cc — the one Abseil setting rankd makes (rk_grpc_init),
 * in C++ because Abseil has no C API.
 *
 * gRPC core locks through absl::Mutex. Debian builds Abseil without NDEBUG,
 * so its deadlock detection is on by default (OnDeadlockCycle::kAbort):
 * every Mutex::Lock records the lock order in a process-wide graph
 * (GraphCycles, under one global spinlock), and the first time two locks
 * are ever taken in both orders the process aborts, whether or not the
 * two orders could actually meet. kIgnore, the default of Abseil built
 * with NDEBUG, stops the graph.
 *
 * The trade-off: a server that a potential ordering would kill keeps
 * serving, and each Rank call runs about 6,100 fewer instructions (of the
 * ~94,000 that gRPC and the service add to in-process scoring at 200
 * candidates; callgrind, bench/RESULTS.md "Stop 18"; in wall time below
 * the host's noise), with the workers' gRPC locks no longer serialized on
 * the graph's spinlock. In exchange a real self-deadlock (a thread locking
 * a Mutex it holds) hangs where it aborted with a diagnostic, and Abseil
 * no longer names a lock released by a thread that does not hold it. The
 * other debug checks of Debian's Abseil stay on.
 */
#include <absl/synchronization/mutex.h>

/* declared for C in internal.h (which is C only) */
extern "C" void rk_absl_deadlock_detection_off(void) noexcept;

extern "C" void rk_absl_deadlock_detection_off(void) noexcept {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}
