import Foundation
import Glibc
import Logging
import ServiceLifecycle

/// sd_notify(3), written by hand: one datagram per message to `$NOTIFY_SOCKET` (a path, or an
/// abstract socket when it starts with "@"). Without `$NOTIFY_SOCKET` every send is a no-op.
public final class SystemdNotifier: Sendable {
    public let socketPath: String?

    public init(environment: [String: String]) {
        let path = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        socketPath = path
    }

    public var isEnabled: Bool { socketPath != nil }

    /// Sends `state` ("READY=1", "STATUS=...", newline-separated assignments). Returns whether it went.
    @discardableResult
    public func send(_ state: String) -> Bool {
        guard let socketPath else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(socketPath.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        // An abstract address has no terminating NUL: its length is exact.
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        let payload = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddr in
                payload.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sockaddr, length) }
            }
        }
        return sent == payload.count
    }

    /// CLOCK_MONOTONIC in microseconds (for RELOADING=1's MONOTONIC_USEC).
    public static func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
    }

    /// The watchdog interval systemd asked for (`$WATCHDOG_USEC`, for this process), if any.
    public static func watchdogInterval(environment: [String: String]) -> Duration? {
        guard let text = environment["WATCHDOG_USEC"], let usec = UInt64(text), usec > 0 else { return nil }
        if let pid = environment["WATCHDOG_PID"], let expected = Int32(pid), expected != getpid() { return nil }
        return .microseconds(Int64(usec))
    }
}

/// Whether the dispatch loops are alive: each lane's loop beats on every wake (at most `maxSleep`
/// apart, plus a request in flight). A loop that hangs stops beating, so the watchdog pings stop
/// and systemd restarts refreshd.
public struct Liveness: Sendable {
    /// How long a loop may go without a beat and still count as alive.
    public let tolerance: Duration

    public init(tolerance: Duration) { self.tolerance = tolerance }

    /// Alive when every loop beat within `tolerance` of `now` (no loops: alive). A loop that has
    /// not beaten yet counts as alive for `tolerance` after `start` (the service's start): a lane
    /// starting up is not a hang, one that never beats is.
    public func alive(beats: [ContinuousClock.Instant?], now: ContinuousClock.Instant, start: ContinuousClock.Instant)
        -> Bool
    {
        beats.allSatisfy { beat in now - (beat ?? start) <= tolerance }
    }
}

/// Keeps systemd informed: WATCHDOG=1 while the dispatch loops are alive, STATUS= with the queue
/// and the next send, STOPPING=1 at shutdown. READY=1 is sent by the composition root once the
/// ledger is open and the spool scanned.
public final class SystemdNotifyService: Service, Sendable {
    let notifier: SystemdNotifier
    let watchdog: Duration?
    let liveness: Liveness
    let beats: @Sendable () -> [ContinuousClock.Instant?]
    let status: @Sendable () async -> String
    let logger: Logger
    /// When the service was made: loops that have not beaten yet are measured from here.
    let start = ContinuousClock.now

    public init(
        notifier: SystemdNotifier, watchdog: Duration?, liveness: Liveness,
        beats: @escaping @Sendable () -> [ContinuousClock.Instant?],
        status: @escaping @Sendable () async -> String, logger: Logger
    ) {
        self.notifier = notifier
        self.watchdog = watchdog
        self.liveness = liveness
        self.beats = beats
        self.status = status
        self.logger = logger
    }

    /// One tick: the status line, and a watchdog ping if the loops are alive. Returns whether it pinged.
    @discardableResult
    public func tick() async -> Bool {
        var message = "STATUS=" + (await status())
        let alive = liveness.alive(beats: beats(), now: .now, start: start)
        if watchdog != nil {
            if alive {
                message += "\nWATCHDOG=1"
            } else {
                logger.error(
                    "a dispatch loop has not run for too long; no watchdog ping (systemd will restart refreshd)")
            }
        }
        notifier.send(message)
        return alive
    }

    public func run() async throws {
        guard notifier.isEnabled else {
            try? await gracefulShutdown()
            return
        }
        // Ping at half the watchdog interval; without a watchdog, refresh STATUS every 30 s.
        let period = watchdog.map { $0 / 2 } ?? .seconds(30)
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await self.tick()
                try? await Task.sleep(for: period)
            }
        }
        notifier.send("STOPPING=1\nSTATUS=stopping")
    }
}
