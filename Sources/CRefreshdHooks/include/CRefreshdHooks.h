#ifndef CREFRESHD_HOOKS_H
#define CREFRESHD_HOOKS_H

#include <stdbool.h>

/// Makes `enqueue` the Swift concurrency runtime's global enqueue: every job of a task that
/// prefers no executor is handed to it. Returns false, changing nothing, when a hook is already
/// installed. Call once, before anything uses Swift concurrency.
bool refreshd_install_global_enqueue(void (*enqueue)(void *job));

#endif
