import CRefreshdHooks
import Dispatch
import Foundation
import NIOCore
import NIOPosix
import RefreshStore
import RefreshWire

/// Where Swift concurrency runs jobs that prefer no executor: on NIO's event loops (the default
/// for `refreshd`) or on Swift's own pool (`REFRESHD_GLOBAL_EXECUTOR=swift`).
///
/// A request arrives on an event loop; with Swift's pool as the global executor its handler
/// runs on a pool thread and its answer goes back to the loop: two thread wake-ups per request,
/// and on a 2-core host four busy threads (two loops, two pool threads) taking turns on two
/// cores. With the event loops as the global executor the handler stays on the loop that read
/// the request (`MultiThreadedEventLoopGroup.any()` is sticky). This is only sound because
/// nothing blocks on a shared thread: every blocking ledger call, file scan or hook runs on an
/// executor of its own (`BlockingExecutor`, `APIWork`). Benchmarks/README.md has the figures.
///
/// NIO's own `NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor`
/// finds the runtime's hook with dlsym, which a binary linked with `--static-swift-stdlib` (the
/// release build) does not export; CRefreshdHooks sets the same hook by reference instead.
public enum GlobalExecutor {
    /// Installs the event loops as the global executor unless the environment asks for Swift's
    /// pool; returns which one is in use ("event-loops" or "swift"). Must run before anything
    /// uses Swift concurrency (first thing in `main`).
    @discardableResult
    public static func install(environment: [String: String]) -> String {
        if environment["REFRESHD_GLOBAL_EXECUTOR"] != "swift",
            refreshd_install_global_enqueue({ job in
                let job = ExecutorJob(unsafeBitCast(job, to: UnownedJob.self))
                MultiThreadedEventLoopGroup.singleton.any().executor.enqueue(job)
            })
        {
            inUse = "event-loops"
        }
        return inUse
    }

    /// Why `REFRESHD_GLOBAL_EXECUTOR` cannot be used (nil: unset, empty, `event-loops` or `swift`).
    public static func problem(environment: [String: String]) -> String? {
        guard let value = environment["REFRESHD_GLOBAL_EXECUTOR"], !["", "event-loops", "swift"].contains(value)
        else { return nil }
        return "REFRESHD_GLOBAL_EXECUTOR: \"\(LogText.escaped(value))\" is not an executor (event-loops or swift)"
    }

    /// The one in use ("swift" until `install` replaced it; written once, before any task runs).
    nonisolated(unsafe) public private(set) static var inUse = "swift"
}

/// A task executor on a thread of its own (a serial dispatch queue).
///
/// The ledger's calls block (SQLite waits up to its busy timeout when another process holds the
/// write lock; a full disk makes fsync slow). A dispatch lane or spool intake running on the Swift
/// concurrency pool (two threads on a 2-core host) would block the very threads that answer the
/// control API. Each of them runs with a `BlockingExecutor` preference instead, so a stuck ledger
/// call stops that loop and nothing else.
public final class BlockingExecutor: TaskExecutor, @unchecked Sendable {
    private let queue: DispatchQueue

    public init(_ label: String) { queue = DispatchQueue(label: "refreshd.\(label)") }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// A task executor over a thread pool's threads: the jobs of a task that prefers it run there.
final class ThreadPoolExecutor: TaskExecutor, @unchecked Sendable {
    private let pool: NIOThreadPool

    init(_ pool: NIOThreadPool) { self.pool = pool }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        // Run even after the pool stopped (the task must finish; NIO then calls back at once).
        pool.submit { _ in job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// Where the control API's handlers do work that may block: ledger writes (they wait up to the
/// busy timeout for a lock another process holds) and the plan (about a second of CPU with 20,000
/// queued jobs), on two small thread pools, never on the concurrency pool that answers requests.
/// Plain reads run inline: under WAL a reader never waits for a writer.
///
/// Writes and the plan have pools of their own, so `GET /healthz` and the other reads keep
/// answering while writes wait. A write that has waited longer than `writeQueueLimit` for a thread
/// is refused (`ledger_busy`, 503) without touching the ledger, so an answer never takes much
/// longer than the ledger's busy timeout plus that limit.
public final class APIWork: Sendable {
    private let reads: NIOThreadPool
    private let writes: NIOThreadPool
    private let readExecutor: ThreadPoolExecutor
    private let writeExecutor: ThreadPoolExecutor
    let writeQueueLimit: Duration

    public init(readThreads: Int = 2, writeThreads: Int = 2, writeQueueLimit: Duration = .seconds(2)) {
        reads = NIOThreadPool(numberOfThreads: readThreads)
        writes = NIOThreadPool(numberOfThreads: writeThreads)
        readExecutor = ThreadPoolExecutor(reads)
        writeExecutor = ThreadPoolExecutor(writes)
        self.writeQueueLimit = writeQueueLimit
        reads.start()
        writes.start()
    }

    /// Runs a read or a long computation (the plan) on the read threads: a ledger that blocks
    /// (SQLite) blocks one of them, never the concurrency pool; one that suspends (a network
    /// database) frees it while it waits.
    public func read<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withTaskExecutorPreference(readExecutor) { try await body() }
    }

    /// Runs a write on the write threads; refused as busy if it waited too long for a thread.
    public func write<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let queued = ContinuousClock.now
        let limit = writeQueueLimit
        return try await withTaskExecutorPreference(writeExecutor) {
            guard ContinuousClock.now - queued <= limit else {
                throw LedgerError(
                    .busy,
                    "the ledger is busy (other writes are waiting for a lock another process holds); nothing was written"
                )
            }
            return try await body()
        }
    }

    /// Stops the threads (after the listeners closed).
    public func shutdown() async {
        try? await reads.shutdownGracefully()
        try? await writes.shutdownGracefully()
    }
}
