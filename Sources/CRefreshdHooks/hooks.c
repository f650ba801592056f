// The concurrency runtime's global enqueue hook, set by reference rather than found with dlsym:
// in a binary linked with --static-swift-stdlib the runtime's symbols are not exported, so
// NIOSingletons' dlsym-based takeover finds nothing there. See GlobalExecutor (RefreshDaemon).
#include "CRefreshdHooks.h"

#include <stddef.h>

typedef void (*refreshd_original_enqueue)(void *job) __attribute__((swiftcall));
typedef void (*refreshd_enqueue_hook)(void *job, refreshd_original_enqueue original) __attribute__((swiftcall));

// Declared in the runtime's ConcurrencyHooks (swift/Runtime/ConcurrencyHooks.def).
extern refreshd_enqueue_hook swift_task_enqueueGlobal_hook;

static void (*refreshd_target)(void *job);

__attribute__((swiftcall)) static void refreshd_enqueue(void *job, refreshd_original_enqueue original) {
    (void)original;
    refreshd_target(job);
}

bool refreshd_install_global_enqueue(void (*enqueue)(void *job)) {
    refreshd_enqueue_hook expected = NULL;
    refreshd_target = enqueue;
    return __atomic_compare_exchange_n(
        &swift_task_enqueueGlobal_hook, &expected, refreshd_enqueue, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
