import Dispatch
import Foundation

/// Runs CPU-heavy test work on its own dispatch queue instead of the Swift concurrency pool. On a
/// 2-core machine that pool has two threads; a long synchronous test holding both would starve
/// every async test running beside it (real-time dispatcher and API tests time out). Task-local
/// context (the current test) is kept, so expectations inside are attributed as usual.
public final class DedicatedExecutor: TaskExecutor, @unchecked Sendable {
    private let queue: DispatchQueue

    public init(_ label: String) { queue = DispatchQueue(label: "refreshd.tests.\(label)") }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// `body` with its work on a dedicated thread (see `DedicatedExecutor`).
public func offPool<T: Sendable>(_ label: String = #function, _ body: @Sendable () async throws -> T) async rethrows
    -> T
{
    try await withTaskExecutorPreference(DedicatedExecutor(label)) { try await body() }
}
