/*
 * tests/absl_lock_order.cc — for test_serve's abseil_lock_order_graph_is_off:
 * two absl::Mutexes taken in both orders on one thread. Not a deadlock, but
 * Debian's Abseil (built without NDEBUG, OnDeadlockCycle::kAbort) reports
 * it as a potential one and aborts, unless the lock-order graph is off
 * (serve/absl_mode.cc). Returns the number of lock pairs taken, 2.
 */
#include <absl/synchronization/mutex.h>

extern "C" int rk_test_absl_both_orders(void);

extern "C" int rk_test_absl_both_orders(void) {
    absl::Mutex a, b;
    int pairs = 0;
    a.Lock();
    b.Lock();
    pairs++;
    b.Unlock();
    a.Unlock();
    b.Lock();
    a.Lock();
    pairs++;
    a.Unlock();
    b.Unlock();
    return pairs;
}
