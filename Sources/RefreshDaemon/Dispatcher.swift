import Foundation
import Logging
import RefreshCore
import RefreshStore
import RefreshWire
import ServiceLifecycle
import TZData

/// A wake-up for a sleeping loop: new jobs, a cancel, a reload, a shutdown. Signals sent while
/// nobody waits are kept (one), so none is lost between two waits.
public final class WakeSignal: @unchecked Sendable {
    private let lock = NSLock()
    private var pending = false
    private var waiter: CheckedContinuation<Void, Never>?

    public init() {}

    public func signal() {
        lock.lock()
        if let waiter {
            self.waiter = nil
            lock.unlock()
            waiter.resume()
        } else {
            pending = true
            lock.unlock()
        }
    }

    /// Returns at the next signal (or at once if one is pending), or when the task is cancelled.
    public func next() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                lock.lock()
                if pending || Task.isCancelled {
                    pending = false
                    lock.unlock()
                    continuation.resume()
                    return
                }
                waiter = continuation
                lock.unlock()
            }
        } onCancel: {
            lock.lock()
            let waiter = self.waiter
            self.waiter = nil
            lock.unlock()
            waiter?.resume()
        }
    }

    /// Returns at the next signal or after `duration` on `clock`, whichever comes first.
    public func next<C: Clock>(orAfter duration: C.Duration, on clock: C) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await clock.sleep(for: duration) }
            group.addTask { await self.next() }
            await group.next()
            group.cancelAll()
        }
    }
}

/// What a lane shows of itself (status line, API).
public struct LaneStatus: Sendable, Equatable {
    public var account: String
    public var queued = 0
    /// When the next refresh is expected to go out (nil: nothing queued can go).
    public var nextSendAt: Date?
    /// Why the account is paused, if it is.
    public var paused: String?
    /// The last error talking to SendGrid or the ledger, if any.
    public var lastError: String?
    /// When the loop last completed a step (the liveness the watchdog follows).
    public var lastStepAt: Date?
    /// SendGrid's last answer is not in the ledger yet (full disk): nothing goes out until it is.
    public var waitingForLedger = false
    /// Queued jobs held because their time zone cannot be loaded (never sent with another zone).
    public var held = 0
    /// Why this host does not send for the account (another host leads it, the clock), if so.
    public var standby: String?
}

// Notes on the design of the lane
// ===============================
//
// A lane is split by concern: the loop and its status here; the ledger sync (what is read into
// the queue, and when) in AccountLaneLedger.swift; sending and the answer handling (carrying out
// RefreshCore's AnswerMeaning) in AccountLaneAnswers.swift.
//
// Invariants of one account's lane (the ledger's R1-R10 and the rules' I1-I5 hold beneath them).
// The tests name the one they check.
//
//   D1 (one in flight)   At most one request per account is in flight: a lane is one loop, and it
//                        sends only between a reservation (R1) and the recording of its answer.
//   D2 (earliest)        A queued job is sent at the first instant the rules allow it (the queue's
//                        `next`), never earlier (the reservation re-checks, R1) and never later than
//                        a wake-up: intake, a cancel, a reload or the planned instant.
//   D3 (same zones)      The lane decides with the send's zone and every queued job's zone of the
//                        segment (I1's Z); the API's segment budget passes the same zones.
//   D4 (answers)         Every answer is recorded once with its meaning (AnswerMeaning): 2xx sent,
//                        rejected statuses failed, 401/403 pause the account, 429 blocks and
//                        requeues, anything unclear counts and backs off; never a resend without a
//                        new reservation.
//   D5 (fail closed)     When the ledger cannot be read or written, nothing is sent: the lane waits
//                        and retries (`Backoff.ledgerWrite`), and an answer it could not record is
//                        kept in memory and recorded before anything else is sent.
//   D6 (held zones)      A job whose zone the tz data cannot load is never sent, nor coalesced into
//                        a send under another zone; it still expires.
//   D7 (one leader)      On a ledger several hosts share, a lane sends only while its host leads the
//                        account (the ledger's R16) and its clock agrees with the database's (R17),
//                        asked before the reservation and again before the request; a standby lane
//                        keeps its queue current (the plan and budgets stay right) and sends nothing.
//                        A reservation made as leadership was lost is recorded not sent, its jobs
//                        requeued untried.
//
// Checked by: D1 `accountsRunInParallel`, `faultStorm`; D2 `threeWeeksFiftySegmentsTwelveZones`,
// `notBeforeAndExpiry`, `sleepsWakesAndStops`, `clockSteps`; D3 `segmentBudgetCountsEveryQueuedZone`;
// D4 `accepted`, `rejected`, `pausesAccount`, `rateLimitedWithReset`, `noClearAnswer`; D5
// `fullDiskWhileInFlight`; D6 `jobWithUnknownZoneIsHeld`; D7 `putBackOffersTheSegmentAgain`,
// `threeHostsOneAccount`, `oneLeaderPerAccountAndFailover`.

/// The dispatcher for one account: takes its queued jobs, waits until the rules allow each,
/// reserves, sends, records the answer. One request in flight per account by construction: a lane
/// is one loop (D1).
public final class AccountLane: @unchecked Sendable {
    /// The account's name (fixed for the lane's life).
    public let name: String
    // Read and written by the lane's loop only; a reload hands new values over through `pending`.
    private(set) var account: AccountConfiguration
    let ledger: any Ledger
    /// nil: dry-run (everything but the HTTP request).
    private(set) var client: SendGridClient?
    private(set) var zones: ZoneInfoDirectory
    private(set) var preflight: Bool
    private(set) var maxAttempts: Int
    let now: @Sendable () -> Date
    let logger: Logger
    let observer: (any DispatchObserver)?
    let signal = WakeSignal()

    var queue: SendQueue
    var lastSeenJobID: Int64 = 0
    /// The operators' holds in force on this account or its segments (read with the queue).
    var holds: [StoredHold] = []
    var loaded = false
    /// The ledger's `outsideChanges` when the queue was last read whole.
    var seenOutsideChanges: UInt64 = 0
    var connectFailures = 0
    /// Consecutive 429s that said nothing about when, per segment (1 h, then the next local midnight).
    var uninformativeRateLimits: [String: Int] = [:]
    var lastRateLimitedSegment: String?
    /// An answer SendGrid gave that the ledger could not take (full disk, I/O error): written again
    /// before anything else is done, so a freed disk needs no restart.
    var unwritten: Unwritten?
    let statusLock = NSLock()
    var published: LaneStatus
    var stopping = false
    var beat: ContinuousClock.Instant?
    var pending: Reconfiguration?
    /// Queued jobs whose zone cannot be loaded, by id (with the zone): held, never sent.
    var held: [Int64: (segment: String, zone: String, expiresAt: Date?)] = [:]
    var heldExpiry: Date? { held.values.compactMap(\.expiresAt).min() }
    /// Held jobs already named in the journal (named again after a reload).
    var warnedHeld = Set<Int64>()
    var rereadRequested = false

    /// What a reload changes, applied by the loop between two sends (never during one).
    public struct Reconfiguration: Sendable {
        public var account: AccountConfiguration
        public var client: SendGridClient?
        public var zones: ZoneInfoDirectory
        public var limits: Limits
        public var preflight: Bool
        public var maxAttempts: Int

        public init(
            account: AccountConfiguration, client: SendGridClient?, zones: ZoneInfoDirectory, limits: Limits,
            preflight: Bool, maxAttempts: Int
        ) {
            self.account = account
            self.client = client
            self.zones = zones
            self.limits = limits
            self.preflight = preflight
            self.maxAttempts = maxAttempts
        }
    }

    public init(
        account: AccountConfiguration, ledger: any Ledger, client: SendGridClient?, zones: ZoneInfoDirectory,
        limits: Limits,
        preflight: Bool, maxAttempts: Int, now: @escaping @Sendable () -> Date, logger: Logger,
        observer: (any DispatchObserver)? = nil
    ) {
        self.observer = observer
        self.name = account.name
        self.account = account
        self.ledger = ledger
        self.client = client
        self.zones = zones
        self.preflight = preflight
        self.maxAttempts = maxAttempts
        self.now = now
        var logger = logger
        logger[metadataKey: "account"] = "\(account.name)"
        self.logger = logger
        self.queue = SendQueue(account: account.name, limits: limits)
        self.published = LaneStatus(account: account.name)
    }

    public var status: LaneStatus { statusLock.withLock { published } }

    /// Wakes the lane (new jobs, cancel).
    public func wake() { signal.signal() }

    /// When the loop last ran (the watchdog's liveness source).
    public var lastBeat: ContinuousClock.Instant? { statusLock.withLock { beat } }

    /// Hands a reload's values to the loop: applied before its next step, a request in flight
    /// finishes first. A pause (401, 403) is lifted: the key may have been fixed.
    public func reconfigure(_ change: Reconfiguration) {
        statusLock.withLock { pending = change }
        signal.signal()
    }

    func applyPendingConfiguration(now t: Date) {
        if statusLock.withLock({ () -> Bool in
            defer { rereadRequested = false }
            return rereadRequested
        }) {
            loaded = false
        }
        guard
            let change = statusLock.withLock({ () -> Reconfiguration? in
                defer { pending = nil }
                return pending
            })
        else { return }
        account = change.account
        client = change.client
        zones = change.zones
        warnedHeld = []
        preflight = change.preflight
        maxAttempts = change.maxAttempts
        if queue.pauseReason != nil {
            logger.notice("account resumed after a reload", metadata: ["was": "\(queue.pauseReason!)"])
            queue.resume()
        }
        queue.setLimits(change.limits, now: t)
        // Zones may have changed (tz data upgrade): read the queue again with the new rules.
        loaded = false
        statusLock.withLock { published.paused = nil }
    }

    /// Reads the queue, history and blocks from the ledger again before the next step (something
    /// the lane keeps in memory changed in the ledger, such as a block lifted by hand).
    public func reread() {
        statusLock.withLock { rereadRequested = true }
        signal.signal()
    }

    /// Stops after the request in flight, if any.
    public func stop() {
        statusLock.withLock { stopping = true }
        signal.signal()
    }

    var isStopping: Bool { statusLock.withLock { stopping } }

    // MARK: The loop

    /// Runs until `stop`: a step, then sleep until the next instant (at most 60 s, re-reading the
    /// wall clock each time, so clock steps in either direction are survived) or a wake-up.
    public func run<C: Clock>(clock: C, maxSleep: C.Duration) async where C.Duration == Duration {
        while !isStopping {
            statusLock.withLock { beat = .now }
            let next = await step()
            statusLock.withLock { beat = .now }
            if isStopping { break }
            let wait = next.map { $0.timeIntervalSince(now()) } ?? .infinity
            if wait > 0 {
                let capped = wait.isFinite ? min(Duration.milliseconds(Int64(wait * 1000) + 1), maxSleep) : maxSleep
                await signal.next(orAfter: capped, on: clock)
            }
        }
    }

    /// Does everything due now: expiries and sends, one after another. Returns when to look again
    /// (nil: not before something changes).
    public func step() async -> Date? {
        var iterations = 0
        while !isStopping {
            iterations += 1
            let t = now()
            applyPendingConfiguration(now: t)
            // The last answer first: nothing else goes out for the account until it is in the ledger.
            if let waiting = unwritten, await !writeAgain(waiting, now: t) {
                return t.addingTimeInterval(Backoff.ledgerWrite(failures: unwritten?.failures ?? 1))
            }
            // Another host changed a shared ledger: its jobs' ids may be below the last one seen
            // (ids commit out of order across hosts), so the queue is read again whole.
            let outside = ledger.outsideChanges
            if outside != seenOutsideChanges {
                seenOutsideChanges = outside
                loaded = false
            }
            do {
                if !loaded { try await load(now: t) }
                try await pullNewJobs(now: t)
            } catch {
                note(error: "ledger: \(error)")
                logger.error("cannot read the queue from the ledger; retrying in 5 s", metadata: ["error": "\(error)"])
                return t.addingTimeInterval(5)
            }
            // A safety valve against a disagreement between the queue and the ledger.
            if iterations > 10_000 { return t.addingTimeInterval(1) }
            // A held job still expires at its expires_at (it is not in the queue that would say so).
            if let due = heldExpiry, due <= t {
                await expire([], now: t)
                if let still = heldExpiry, still <= t { return t.addingTimeInterval(5) }
            }
            switch queue.next(now: t) {
            case .wait(let until):
                publish(next: until, at: t)
                return [until, heldExpiry].compactMap { $0 }.min()
            case .expire(let jobs):
                await expire(jobs, now: t)
            case .send(let segment, let zone, _):
                // Another host leads the account (or this one may not send now, #14): it sends;
                // this lane keeps its queue current and looks again in a second.
                if let reason = ledger.dispatch(account: name).standbyReason {
                    queue.putBack(segment: segment, now: t)
                    publish(next: t, at: t, standby: reason)
                    return t.addingTimeInterval(1)
                }
                // The reservation takes every due, admitted job of the segment from the ledger
                // itself (jobs queued since the queue last read it ride along too).
                await send(segment: segment, zone: zone, at: t)
            }
        }
        return nil
    }

    // MARK: Status

    func note(error: String) { statusLock.withLock { published.lastError = error } }

    func publish(next: Date?, at t: Date, standby: String? = nil) {
        let standby = standby ?? ledger.dispatch(account: name).standbyReason
        let paused = queue.pauseReason
        let count = queue.count
        let heldCount = held.count
        let was = statusLock.withLock {
            defer {
                published.nextSendAt = next
                published.paused = paused
                published.queued = count + heldCount
                published.held = heldCount
                published.lastStepAt = t
                published.standby = standby
            }
            return published.standby
        }
        if was != standby {
            if let standby {
                logger.notice("this host does not send for the account", metadata: ["reason": "\(standby)"])
            } else {
                logger.notice("this host sends for the account")
            }
        }
    }
}

/// Runs one lane per account until shutdown; the composition root wires intake's wake-ups to it.
/// Lanes can be added (an account appears in a reloaded configuration) and stopped while it runs.
public final class DispatcherService: Service, @unchecked Sendable {
    private let lock = NSLock()
    private var current: [AccountLane]
    /// The same lanes by account (the control API asks for one on every budget request).
    private var byName: [String: AccountLane]
    private var clients: [SendGridClient]
    let maxSleep: Duration
    /// What the lanes sleep on (the composition root's; a test may pass its own).
    let clock: any Clock<Duration>
    private let added: AsyncStream<AccountLane>
    private let addedContinuation: AsyncStream<AccountLane>.Continuation

    public init(
        lanes: [AccountLane], client: SendGridClient?, clock: any Clock<Duration>, maxSleep: Duration = .seconds(60)
    ) {
        self.current = lanes
        self.byName = Dictionary(lanes.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        self.clients = client.map { [$0] } ?? []
        self.clock = clock
        self.maxSleep = maxSleep
        (added, addedContinuation) = AsyncStream.makeStream(of: AccountLane.self)
    }

    public var lanes: [AccountLane] { lock.withLock { current } }

    /// One account's lane.
    public func lane(named name: String) -> AccountLane? { lock.withLock { byName[name] } }

    /// The client the lanes were made with (nil: every account runs dry).
    public var client: SendGridClient? { lock.withLock { clients.first } }

    /// Every client made for the lanes, the first and those reloads made (shut down at the end).
    public var allClients: [SendGridClient] { lock.withLock { clients } }

    /// New jobs or a cancel: every lane looks again.
    public func wakeUp() { for lane in lanes { lane.wake() } }

    /// Every lane reads its queue, history and blocks from the ledger again (a block was lifted).
    public func rereadLedger() { for lane in lanes { lane.reread() } }

    /// Starts a lane for a new account.
    public func add(_ lane: AccountLane) {
        lock.withLock {
            current.append(lane)
            if byName[lane.name] == nil { byName[lane.name] = lane }
        }
        addedContinuation.yield(lane)
    }

    /// Stops the lane of an account that left the configuration (its jobs stay queued).
    public func remove(account: String) {
        let lane = lock.withLock { () -> AccountLane? in
            guard let index = current.firstIndex(where: { $0.name == account }) else { return nil }
            let lane = current.remove(at: index)
            byName[account] = current.first { $0.name == account }
            return lane
        }
        lane?.stop()
    }

    /// A client made by a reload: shut down with the others at the end.
    public func adopt(_ client: SendGridClient) { lock.withLock { clients.append(client) } }

    public func run() async throws {
        let initial = lanes
        let maxSleep = self.maxSleep
        let clock = self.clock
        let added = self.added
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                // Each lane on a thread of its own: its ledger calls block (busy timeout, fsync), and
                // must never hold up the concurrency pool that answers the control API.
                for lane in initial {
                    group.addTask(executorPreference: BlockingExecutor("lane.\(lane.name)")) {
                        await lane.run(clock: clock, maxSleep: maxSleep)
                    }
                }
                for await lane in added {
                    group.addTask(executorPreference: BlockingExecutor("lane.\(lane.name)")) {
                        await lane.run(clock: clock, maxSleep: maxSleep)
                    }
                }
            }
        } onGracefulShutdown: {
            for lane in self.lanes { lane.stop() }
            self.addedContinuation.finish()
        }
        for client in lock.withLock({ clients }) { await client.shutdown() }
    }
}
