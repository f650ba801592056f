import Dispatch
import Foundation
import Glibc
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// Runs spool intake: a scan at start, a scan whenever inotify reports a file closed after
/// writing or moved into incoming/ (IN_CLOSE_WRITE, IN_MOVED_TO; an overflowed event queue just
/// means "scan"), and a backstop rescan every `rescanInterval`. An idle daemon wakes only for the
/// backstop. inotify is read through Glibc; Dispatch watches the inotify descriptor for reads.
struct SpoolIntakeService: Service {
    let intake: SpoolIntake
    let rescanInterval: Duration
    var blockedRetryInterval: Duration = .seconds(5)
    let logger: Logger
    /// Called once, after the first scan: the daemon is ready (the ledger is open, the spool has
    /// been read, and, since services start after the group traps its signals, SIGTERM and SIGINT
    /// are handled).
    let onReady: @Sendable () async -> Void

    /// How often rejected/ is pruned (and its size measured).
    var retentionInterval: Duration = .seconds(3600)

    func run() async throws {
        // Scans block on the file system and the ledger: on a thread of their own, not the pool.
        try await withTaskExecutorPreference(BlockingExecutor("spool")) { try await loop() }
    }

    private func loop() async throws {
        let (wakeups, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let wake: @Sendable () -> Void = { continuation.yield() }
        var watcher = InotifyWatcher(directory: intake.incoming, logger: logger, onEvent: wake)
        var watched: String?
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: rescanInterval)
                continuation.yield()
            }
        }
        defer {
            ticker.cancel()
            watcher?.stop()
            continuation.finish()
        }
        var lastPrune: ContinuousClock.Instant?
        // While intake is blocked by the file system or the ledger (full disk, read-only), look again
        // every few seconds: a freed disk should not wait for the backstop rescan. A full queue
        // (max_queued_jobs) empties at SendGrid's pace: the backstop is soon enough for it.
        var retryScheduled: ContinuousClock.Instant?
        func scan() async {
            let seen = await intake.scan()
            // incoming/ deleted and made again, or replaced: the old watch sees nothing any more.
            if let identity = seen.incomingIdentity {
                if let previous = watched, previous != identity || watcher?.isLost == true {
                    watcher?.stop()
                    watcher = InotifyWatcher(directory: intake.incoming, logger: logger, onEvent: wake)
                    logger.notice(
                        "watching the spool's incoming/ directory again", metadata: ["directory": "\(intake.incoming)"])
                }
                watched = identity
            }
            if lastPrune.map({ ContinuousClock.now - $0 >= retentionInterval }) ?? true {
                intake.pruneRejected()
                lastPrune = .now
            }
            guard seen.blocked != nil, !seen.queueFull else { return }
            let now = ContinuousClock.now
            if let scheduled = retryScheduled, now - scheduled < blockedRetryInterval { return }
            retryScheduled = now
            Task { [blockedRetryInterval] in
                try? await Task.sleep(for: blockedRetryInterval)
                continuation.yield()
            }
        }
        await scan()
        await onReady()
        for await _ in wakeups.cancelOnGracefulShutdown() {
            await scan()
        }
    }
}

/// An inotify watch on one directory; calls `onEvent` (on a Dispatch queue) after draining events.
final class InotifyWatcher: @unchecked Sendable {
    private let descriptor: Int32
    private let source: DispatchSourceRead
    private let lost = NIOLockedValueBox(false)

    /// The watched directory went away (deleted, moved, unmounted): this watch sees nothing more.
    /// A directory made again may even get the same inode number, so this, not the identity, says
    /// when to watch anew.
    var isLost: Bool { lost.withLockedValue { $0 } }

    init?(directory: String, logger: Logger, onEvent: @escaping @Sendable () -> Void) {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else {
            logger.warning(
                "inotify unavailable; relying on the periodic rescan",
                metadata: ["error": "\(String(cString: strerror(errno)))"])
            return nil
        }
        // IN_DELETE_SELF, IN_MOVE_SELF: the directory itself went away; the scan notices and re-arms.
        guard
            inotify_add_watch(fd, directory, UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF)) >= 0
        else {
            logger.warning(
                "cannot watch the spool with inotify; relying on the periodic rescan",
                metadata: ["directory": "\(directory)", "error": "\(String(cString: strerror(errno)))"])
            close(fd)
            return nil
        }
        descriptor = fd
        source = DispatchSource.makeReadSource(
            fileDescriptor: fd, queue: DispatchQueue(label: "refreshd.spool.inotify"))
        source.setEventHandler { [weak self] in
            // Drain every pending event (IN_Q_OVERFLOW included): any of them means "scan"; one
            // that says the directory itself went away also means "watch again".
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                guard n > 0 else { break }
                var offset = 0
                let header = MemoryLayout<inotify_event>.size
                while offset + header <= n {
                    let (mask, length) = buffer.withUnsafeBytes { raw in
                        (
                            raw.load(fromByteOffset: offset + 4, as: UInt32.self),
                            raw.load(fromByteOffset: offset + 12, as: UInt32.self)
                        )
                    }
                    if mask & UInt32(IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT) != 0 {
                        self?.lost.withLockedValue { $0 = true }
                    }
                    offset += header + Int(length)
                }
            }
            onEvent()
        }
        source.setCancelHandler { close(fd) }
        source.resume()
    }

    func stop() { source.cancel() }
}
