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
}

// Notes on the design of the lane
// ===============================
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
//   D4 (answers)         Every answer is recorded once with its meaning (AnswerClass): 2xx sent,
//                        rejected statuses failed, 401/403 pause the account, 429 blocks and
//                        requeues, anything unclear counts and backs off; never a resend without a
//                        new reservation.
//   D5 (fail closed)     When the ledger cannot be read or written, nothing is sent: the lane waits
//                        and retries (`Backoff.ledgerWrite`), and an answer it could not record is
//                        kept in memory and recorded before anything else is sent.
//   D6 (held zones)      A job whose zone the tz data cannot load is never sent, nor coalesced into
//                        a send under another zone; it still expires.
//
// Checked by: D1 `accountsRunInParallel`, `faultStorm`; D2 `threeWeeksFiftySegmentsTwelveZones`,
// `notBeforeAndExpiry`, `sleepsWakesAndStops`, `clockSteps`; D3 `segmentBudgetCountsEveryQueuedZone`;
// D4 `accepted`, `rejected`, `pausesAccount`, `rateLimitedWithReset`, `noClearAnswer`; D5
// `fullDiskWhileInFlight`; D6 `jobWithUnknownZoneIsHeld`.

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

    private var queue: SendQueue
    private var lastSeenJobID: Int64 = 0
    /// The operators' holds in force on this account or its segments (read with the queue).
    private var holds: [StoredHold] = []
    private var loaded = false
    private var connectFailures = 0
    /// Consecutive 429s that said nothing about when, per segment (1 h, then the next local midnight).
    private var uninformativeRateLimits: [String: Int] = [:]
    private var lastRateLimitedSegment: String?
    /// An answer SendGrid gave that the ledger could not take (full disk, I/O error): written again
    /// before anything else is done, so a freed disk needs no restart.
    private var unwritten: Unwritten?
    private let statusLock = NSLock()
    private var published: LaneStatus
    private var stopping = false
    private var beat: ContinuousClock.Instant?
    private var pending: Reconfiguration?
    /// Queued jobs whose zone cannot be loaded, by id (with the zone): held, never sent.
    private var held: [Int64: (segment: String, zone: String, expiresAt: Date?)] = [:]
    private var heldExpiry: Date? { held.values.compactMap(\.expiresAt).min() }
    /// Held jobs already named in the journal (named again after a reload).
    private var warnedHeld = Set<Int64>()
    private var rereadRequested = false

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

    private func applyPendingConfiguration(now t: Date) {
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
            if let waiting = unwritten, !writeAgain(waiting, now: t) {
                return t.addingTimeInterval(Backoff.ledgerWrite(failures: unwritten?.failures ?? 1))
            }
            do {
                if !loaded { try load(now: t) }
                try pullNewJobs(now: t)
            } catch {
                note(error: "ledger: \(error)")
                logger.error("cannot read the queue from the ledger; retrying in 5 s", metadata: ["error": "\(error)"])
                return t.addingTimeInterval(5)
            }
            // A safety valve against a disagreement between the queue and the ledger.
            if iterations > 10_000 { return t.addingTimeInterval(1) }
            // A held job still expires at its expires_at (it is not in the queue that would say so).
            if let due = heldExpiry, due <= t {
                expire([], now: t)
                if let still = heldExpiry, still <= t { return t.addingTimeInterval(5) }
            }
            switch queue.next(now: t) {
            case .wait(let until):
                publish(next: until, at: t)
                return [until, heldExpiry].compactMap { $0 }.min()
            case .expire(let jobs):
                expire(jobs, now: t)
            case .send(let segment, let zone, _):
                // The reservation takes every due, admitted job of the segment from the ledger
                // itself (jobs queued since the queue last read it ride along too).
                await send(segment: segment, zone: zone, at: t)
            }
        }
        return nil
    }

    // MARK: Reading the ledger

    /// A zone's rules, or nil when the host cannot load it (never another zone in its place).
    private func rules(_ name: String) -> ZoneRules? { try? zones.rules(for: name) }

    /// The queue's view of a job; nil when its zone cannot be loaded: the job is held (counted in
    /// `held`, shown by the API) and never sent with another zone.
    private func pending(_ job: StoredJob) -> PendingJob? {
        // An operator's hold keeps the job out of the queue until it is released (R10).
        if holds.contains(where: { $0.covers(account: account.name, segmentID: job.job.segmentID) }) { return nil }
        guard let zone = rules(job.job.timeZone) else {
            held[job.id] = (job.job.segmentID, job.job.timeZone, job.job.expiresAt)
            if warnedHeld.insert(job.id).inserted {
                logger.warning(
                    "job held: its time zone cannot be loaded from the host's tz data; it is never sent with another zone",
                    metadata: [
                        "job": "\(job.id)", "segment": "\(job.job.segmentID)", "time_zone": "\(job.job.timeZone)",
                    ])
            }
            return nil
        }
        held[job.id] = nil
        return PendingJob(
            id: job.id, segment: job.job.segmentID, zone: zone, priority: job.job.priority, dueAt: job.dueAt,
            expiresAt: job.job.expiresAt)
    }

    private func attempt(_ stored: StoredAttempt) -> Attempt { stored.engineAttempt(resolve: rules) }

    private func learned(_ block: StoredBlock) -> LearnedBlock { block.engineBlock }

    /// Reads every queued job of the account, its recent attempts and blocks.
    func load(now t: Date) throws {
        holds = try ledger.activeHolds(account: account.name)
        // A fresh queue (a reload may have changed zones or limits); a pause survives.
        let pause = queue.pauseReason
        queue = SendQueue(account: account.name, limits: queue.limits)
        held = [:]
        if let pause { queue.pause(reason: pause) }
        let all = try ledger.queuedJobs()
        lastSeenJobID = all.map(\.id).max() ?? 0
        let mine = all.filter { $0.job.account == account.name }
        let attempts = try ledger.attempts(
            since: Date(timeIntervalSince1970: HistoryWindows.segmentSince(t)), account: account.name, segmentID: nil,
            limit: Int.max
        )
        .map(attempt)
        let blocks = try ledger.blocks(account: account.name, now: t).map(learned)
        queue.setAccountHistory(attempts)
        queue.setBlocks(blocks, now: t)
        let bySegment = Dictionary(grouping: attempts, by: \.segment)
        for (segment, jobs) in Dictionary(grouping: mine, by: \.job.segmentID) {
            queue.setJobs(
                segment: segment, jobs.compactMap(pending), history: bySegment[segment] ?? [], blocks: blocks, now: t)
        }
        loaded = true
        if !mine.isEmpty { logger.info("dispatcher loaded the queue", metadata: ["queued": "\(mine.count)"]) }
    }

    /// Jobs added since the last look (spool, API, CLI).
    func pullNewJobs(now t: Date) throws {
        while true {
            let batch = try ledger.jobs(state: .queued, segmentID: nil, after: lastSeenJobID, limit: 5000)
            guard let last = batch.last else { return }
            lastSeenJobID = last.id
            for (segment, jobs) in Dictionary(
                grouping: batch.filter { $0.job.account == account.name }, by: \.job.segmentID)
            {
                if queue.knows(segment: segment) {
                    for job in jobs { if let job = pending(job) { queue.add(job, now: t) } }
                } else {
                    try reload(segment: segment, now: t)
                }
            }
            if batch.count < 5000 { return }
        }
    }

    /// The segment's queued jobs, attempts and blocks, as the ledger has them.
    private func reload(segment: String, now t: Date) throws {
        let jobs = try ledger.queuedJobs(account: account.name, segmentID: segment)
        let history = try ledger.history(account: account.name, segmentID: segment, now: t)
        // Held jobs of this segment that are no longer queued (cancelled, expired) stop being held.
        for (id, entry) in held where entry.segment == segment && !jobs.contains(where: { $0.id == id }) {
            held[id] = nil
        }
        queue.setJobs(
            segment: segment, jobs.compactMap(pending), history: history.segmentAttempts.map(attempt),
            blocks: history.blocks.map(learned),
            now: t)
    }

    private func reloadBlocks(now t: Date) throws {
        queue.setBlocks(try ledger.blocks(account: account.name, now: t).map(learned), now: t)
    }

    // MARK: Expiry

    private func expire(_ jobs: [PendingJob], now t: Date) {
        do {
            let expired = try ledger.expireJobs(now: t)
            for job in expired {
                held[job.id] = nil
                logger.notice(
                    "job expired before the rules allowed a refresh",
                    metadata: [
                        "job": "\(job.id)", "segment": "\(job.job.segmentID)",
                        "expires_at": "\(Timestamp.rfc3339(job.job.expiresAt!))",
                    ])
            }
        } catch {
            note(error: "ledger: \(error)")
            logger.error("cannot mark expired jobs", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Sending

    private func send(segment: String, zone: ZoneRules, at t: Date) async {
        var segmentLogger = logger
        segmentLogger[metadataKey: "segment"] = "\(segment)"
        let key = account.apiKey
        // 1. Pre-flight: learn refreshes made elsewhere before spending a slot.
        if let client, let key, preflight {
            switch await client.readSegment(segment: segment, key: key, onBehalfOf: account.onBehalfOf) {
            case .success(let reading):
                do {
                    if try reconcile(segment: segment, zone: zone, reading: reading, at: t, logger: segmentLogger) {
                        return
                    }
                } catch {
                    segmentLogger.error(
                        "cannot record what the pre-flight read showed", metadata: ["error": "\(error)"])
                }
            case .failure(let failure):
                segmentLogger.notice(
                    "pre-flight read failed; the ledger decides alone", metadata: ["reason": "\(failure)"])
            }
        }
        // 2. Reserve: the rules are checked again on the ledger's own history, in the transaction.
        let alsoZones = queue.jobs(of: segment).map(\.zone)
        let limits = queue.limits
        let accountName = account.name
        let zones = self.zones
        let reservation: ReservationResult
        do {
            // Only jobs whose zone loads ride along (a held job is never sent under another zone).
            reservation = try ledger.reserve(
                account: accountName, segmentID: segment, timeZone: zone.name, now: t,
                admit: { (try? zones.rules(for: $0.job.timeZone)) != nil }
            ) { history in
                let inputs = history.engineInputs(resolve: { try? zones.rules(for: $0) })
                return RuleEngine.decide(
                    account: accountName, segment: segment, zone: zone, alsoZones: alsoZones, history: inputs.attempts,
                    blocks: inputs.blocks, limits: limits, now: t)
            }
        } catch {
            note(error: "ledger: \(error)")
            segmentLogger.error(
                "cannot reserve a refresh in the ledger; retrying in 30 s", metadata: ["error": "\(error)"])
            queue.hold(segment: segment, until: t.addingTimeInterval(30), now: t)
            return
        }
        let attemptID: Int64
        let jobs: [StoredJob]
        switch reservation {
        case .nothingDue:
            try? reload(segment: segment, now: t)
            return
        case .denied(let decision):
            segmentLogger.debug(
                "the ledger's rules hold the refresh back", metadata: ["binding": "\(decision.binding.map(\.rawValue))"]
            )
            try? reload(segment: segment, now: t)
            if let earliest = decision.earliest(now: t) { queue.hold(segment: segment, until: earliest, now: t) }
            return
        case .held(let hold):
            // A hold placed since the queue was read: read everything again (the hold with it).
            segmentLogger.info(
                "held by an operator; not sent", metadata: ["hold": "\(hold.id)", "reason": "\(hold.reason)"])
            loaded = false
            return
        case .reserved(let id, let reserved):
            attemptID = id
            jobs = reserved
        }
        // 3. Send (or, in dry-run, don't); what the answer means is RefreshCore's AnswerMeaning.
        let meaning: AnswerMeaning
        var latency: Duration?
        if let client, let key {
            let began = ContinuousClock.now
            let result = await client.refresh(
                segment: segment, zone: zone.name, key: key, onBehalfOf: account.onBehalfOf)
            latency = ContinuousClock.now - began
            meaning = AnswerMeaning(
                result, segment: segment, tries: (jobs.map(\.tries).max() ?? 0) + 1, maxAttempts: maxAttempts,
                connectFailures: connectFailures, finished: max(now(), t))
            await carryOut(meaning, segment: segment, zone: zone, jobs: jobs, logger: segmentLogger)
        } else {
            meaning = .dryRun(at: t)
            segmentLogger.info(
                "dry-run: refresh recorded, not sent",
                metadata: ["jobs": "\(jobs.map(\.id))", "time_zone": "\(zone.name)"])
        }
        var answer = Unwritten(
            attemptID: attemptID, segment: segment, zone: zone, startedAt: t, meaning: meaning, latency: latency)
        do {
            try write(answer)
        } catch let error as LedgerError where error.code == .notFound || error.code == .invalidState {
            // Writing again cannot help (the attempt is gone or already has an answer): say so and
            // go on; the ledger's row stands (R4 records late answers, so this is not expected).
            note(error: "ledger: \(error)")
            segmentLogger.error(
                "SendGrid's answer cannot be recorded: the attempt is no longer open in the ledger",
                metadata: ["error": "\(error)", "outcome": "\(meaning.outcome.rawValue)"])
            loaded = false
            return
        } catch {
            // The attempt stays reserved (it counts; a restart makes it uncertain). The loop writes
            // the answer again, from 5 s doubling to 60 s, before it does anything else.
            note(error: "ledger: \(error)")
            segmentLogger.critical(
                "cannot record SendGrid's answer in the ledger; nothing more is sent for the account until it is recorded",
                metadata: ["error": "\(error)", "outcome": "\(meaning.outcome.rawValue)"])
            answer.failures = 1
            unwritten = answer
            statusLock.withLock { published.waitingForLedger = true }
            observer?.ledgerUnwritable(account: account.name, error: "\(error)")
            return
        }
        recorded(answer, now: t, logger: segmentLogger)
    }

    /// SendGrid's answer to one request, on its way to the ledger.
    struct Unwritten {
        var attemptID: Int64
        var segment: String
        var zone: ZoneRules
        var startedAt: Date
        var meaning: AnswerMeaning
        var latency: Duration?
        var failures = 0
    }

    private func write(_ answer: Unwritten) throws {
        let meaning = answer.meaning
        try ledger.complete(
            attemptID: answer.attemptID, outcome: meaning.outcome, httpStatus: meaning.status,
            sendGridJobID: meaning.sendGridJobID,
            error: meaning.error, finishedAt: meaning.finished, jobs: meaning.jobs)
    }

    /// Another try at writing an answer the ledger refused. Returns whether it is written now.
    private func writeAgain(_ answer: Unwritten, now t: Date) -> Bool {
        var segmentLogger = logger
        segmentLogger[metadataKey: "segment"] = "\(answer.segment)"
        do {
            try write(answer)
        } catch let error as LedgerError where error.code == .notFound || error.code == .invalidState {
            segmentLogger.error(
                "SendGrid's answer cannot be recorded: the attempt is no longer open in the ledger",
                metadata: ["error": "\(error)"])
            unwritten = nil
            statusLock.withLock { published.waitingForLedger = false }
            loaded = false
            return true
        } catch {
            unwritten!.failures += 1
            if unwritten!.failures % 10 == 0 {
                segmentLogger.error(
                    "still cannot record SendGrid's answer in the ledger",
                    metadata: ["error": "\(error)", "tries": "\(unwritten!.failures)"])
            }
            return false
        }
        unwritten = nil
        statusLock.withLock { published.waitingForLedger = false }
        segmentLogger.notice(
            "SendGrid's answer is recorded in the ledger after all; sending resumes",
            metadata: ["outcome": "\(answer.meaning.outcome.rawValue)"])
        recorded(answer, now: t, logger: segmentLogger)
        // Jobs may have come and gone meanwhile: read the queue again.
        loaded = false
        return true
    }

    /// What follows a recorded answer: the queue learns the attempt, the segment is read again,
    /// then the answer's effects that need it recorded (blocks re-read, a pause, the quota).
    private func recorded(_ answer: Unwritten, now t: Date, logger segmentLogger: Logger) {
        let meaning = answer.meaning
        observer?.attemptFinished(account: account.name, outcome: meaning.outcome, latency: answer.latency)
        queue.record(
            Attempt(
                account: account.name, segment: answer.segment, zone: answer.zone, outcome: meaning.outcome,
                startedAt: answer.startedAt,
                finishedAt: meaning.finished),
            now: t)
        do {
            try reload(segment: answer.segment, now: t)
            if meaning.readsBlocksAgain { try reloadBlocks(now: t) }
        } catch {
            segmentLogger.error("cannot re-read the segment from the ledger", metadata: ["error": "\(error)"])
            queue.hold(segment: answer.segment, until: t.addingTimeInterval(30), now: t)
        }
        for effect in meaning.effects {
            switch effect {
            case .pause(let reason):
                queue.pause(reason: reason)
                observer?.accountPaused(account: account.name, reason: reason)
            case .compareQuota(let quota):
                learnFromQuota(quota, now: t, logger: segmentLogger)
            case .noteError, .learnFromRateLimit:
                break  // carried out when the answer came
            }
        }
    }

    /// The segment under which requests SendGrid counts for the account but refreshd did not make
    /// are recorded (the headers do not say which segment they were for): the nil UUID.
    static let elsewhereSegment = "00000000-0000-0000-0000-000000000000"

    /// X-RateLimit headers on an accepted refresh, used like a pre-flight (I5): requests SendGrid
    /// counts today beyond the ledger's are recorded as external (they count for the account's
    /// day), and nothing left blocks the account until its day is over.
    private func learnFromQuota(_ quota: QuotaReport, now t: Date, logger: Logger) {
        do {
            let attempts = try ledger.attempts(
                since: t.addingTimeInterval(-2 * 86400), account: account.name, segmentID: nil, limit: Int.max
            )
            .map(attempt)
            let daily = RuleEngine.accountBudgets(
                account: account.name, history: attempts, blocks: [], limits: queue.limits, now: t
            )
            .first { $0.rule == .accountDaily }
            let lesson = quota.lesson(ledgerUsed: daily?.used ?? 0, at: t)
            observer?.quotaReported(account: account.name, limit: quota.limit, remaining: quota.remaining)
            guard lesson.requestsElsewhere > 0 || lesson.accountBlockedUntil != nil else { return }
            for _ in 0..<min(lesson.requestsElsewhere, quota.limit) {
                _ = try ledger.recordExternal(
                    account: account.name, segmentID: Self.elsewhereSegment, timeZone: "UTC", at: t)
            }
            if let until = lesson.accountBlockedUntil {
                try ledger.addBlock(account: account.name, segmentID: nil, until: until, reason: lesson.reason, now: t)
            }
            logger.notice(
                "SendGrid counts requests today that refreshd did not make; recorded as external",
                metadata: [
                    "elsewhere": "\(lesson.requestsElsewhere)", "reason": "\(lesson.reason)",
                    "blocked_until": "\(lesson.accountBlockedUntil.map(Timestamp.rfc3339) ?? "-")",
                ])
            loaded = false
        } catch {
            logger.error("cannot record what SendGrid's rate-limit headers say", metadata: ["error": "\(error)"])
        }
    }

    /// What an answer means, carried out before it is recorded: the streaks, the log line, the
    /// status line's error and what a 429 teaches (its blocks are written before the answer).
    private func carryOut(
        _ meaning: AnswerMeaning, segment: String, zone: ZoneRules, jobs: [StoredJob], logger: Logger
    ) async {
        connectFailures = meaning.connectFailures
        if meaning.endsRateLimitStreak {
            uninformativeRateLimits[segment] = nil
            lastRateLimitedSegment = nil
        }
        if let note = meaning.note {
            logger.log(
                level: Self.level(note.level), "\(note.message)",
                metadata: note.metadata.mapValues { .string($0) })
        } else if meaning.outcome == .accepted {
            logger.info(
                "refresh accepted by SendGrid",
                metadata: [
                    "jobs": "\(jobs.map(\.id))", "time_zone": "\(zone.name)", "status": "\(meaning.status ?? 0)",
                ])
        }
        for effect in meaning.effects {
            switch effect {
            case .noteError(let text): note(error: text)
            case .learnFromRateLimit(let resetHeader):
                await learnFromRateLimit(
                    resetHeader: resetHeader, segment: segment, zone: zone, at: meaning.finished, logger: logger)
            case .pause, .compareQuota: break  // after the answer is recorded
            }
        }
    }

    static func level(_ level: AnswerMeaning.Note.Level) -> Logger.Level {
        switch level {
        case .info: return .info
        case .notice: return .notice
        case .warning: return .warning
        case .error: return .error
        case .critical: return .critical
        }
    }

    /// A 429: what it teaches (RateLimitLesson: the headers, a fresh segment read, the 429s before
    /// it) goes into the ledger as blocks.
    private func learnFromRateLimit(
        resetHeader: String?, segment: String, zone: ZoneRules, at t: Date, logger: Logger
    ) async {
        var reading: SegmentReading?
        if let client, let key = account.apiKey, preflight,
            case .success(let read) = await client.readSegment(
                segment: segment, key: key, onBehalfOf: account.onBehalfOf)
        {
            reading = read
        }
        let lesson = RateLimitLesson.learn(
            resetHeader: resetHeader, reading: reading, segment: segment, zone: zone, at: t,
            uninformativeStreak: uninformativeRateLimits[segment] ?? 0,
            previousRateLimitedSegment: lastRateLimitedSegment)
        uninformativeRateLimits[segment] = lesson.uninformativeStreak
        lastRateLimitedSegment = segment
        do {
            try ledger.addBlock(
                account: account.name, segmentID: segment, until: lesson.segmentBlockedUntil,
                reason: "429: " + lesson.reasons.joined(separator: ", "),
                now: t)
            if let midnight = lesson.accountBlockedUntil {
                try ledger.addBlock(
                    account: account.name, segmentID: nil, until: midnight,
                    reason: "429: the account's day seems exhausted", now: t)
                logger.warning(
                    "SendGrid answered 429 and the account's day seems used up elsewhere; paused until 00:00 UTC",
                    metadata: ["until": "\(Timestamp.rfc3339(midnight))"])
            }
        } catch {
            logger.error("cannot record a block learned from a 429", metadata: ["error": "\(error)"])
        }
        logger.warning(
            "SendGrid answered 429; the segment is blocked",
            metadata: [
                "until": "\(Timestamp.rfc3339(lesson.segmentBlockedUntil))",
                "reason": "\(lesson.reasons.joined(separator: ", "))",
            ])
    }

    /// What the pre-flight read says against the ledger (Reconciliation), carried out. Returns
    /// whether the ledger changed (the rules must then decide again).
    private func reconcile(segment: String, zone: ZoneRules, reading: SegmentReading, at t: Date, logger: Logger) throws
        -> Bool
    {
        try ledger.recordUsage(
            account: account.name, segmentID: segment, refreshesUsed: reading.refreshesUsed,
            lastRefreshedAt: reading.lastRefreshedAt,
            observedAt: t)
        let known = try ledger.history(account: account.name, segmentID: segment, now: t).segmentAttempts.map {
            Reconciliation.Known(
                id: $0.id, outcome: $0.outcome, timeZone: $0.timeZone, startedAt: $0.startedAt,
                finishedAt: $0.finishedAt)
        }
        switch Reconciliation.reconcile(reading: reading, attempts: known, zone: zone, now: t) {
        case .agrees:
            return false
        case .external(let missing, let at):
            for _ in 0..<missing {
                _ = try ledger.recordExternal(account: account.name, segmentID: segment, timeZone: zone.name, at: at)
            }
            logger.notice(
                "SendGrid counts refreshes today that refreshd did not send (web UI or another tool); recorded as external",
                metadata: [
                    "refreshes_used": "\(reading.refreshesUsed)", "missing": "\(missing)",
                    "at": "\(Timestamp.rfc3339(at))",
                ])
            let external = Attempt(
                account: account.name, segment: segment, zone: zone, outcome: .external, startedAt: at, finishedAt: at)
            for _ in 0..<missing { queue.record(external, now: t) }
        case .confirmed(let ids):
            let sent = try ledger.confirmRecorded(attemptIDs: ids, now: t)
            logger.notice(
                "pre-flight shows SendGrid recorded earlier unanswered requests; their jobs count as sent",
                metadata: ["attempts": "\(ids)", "jobs": "\(sent.map(\.id))"])
            queue.setAccountHistory(
                try ledger.attempts(
                    since: t.addingTimeInterval(-2 * 86400), account: account.name, segmentID: nil, limit: Int.max
                ).map(attempt))
        case .unrecorded(let ids):
            let changed = try ledger.markUnrecorded(attemptIDs: ids)
            logger.info(
                "pre-flight shows SendGrid did not record earlier unanswered requests",
                metadata: ["attempts": "\(changed)"])
            queue.setAccountHistory(
                try ledger.attempts(
                    since: t.addingTimeInterval(-2 * 86400), account: account.name, segmentID: nil, limit: Int.max
                ).map(attempt))
        }
        try reload(segment: segment, now: t)
        return true
    }

    // MARK: Status

    private func note(error: String) { statusLock.withLock { published.lastError = error } }

    private func publish(next: Date?, at t: Date) {
        let paused = queue.pauseReason
        let count = queue.count
        let heldCount = held.count
        statusLock.withLock {
            published.nextSendAt = next
            published.paused = paused
            published.queued = count + heldCount
            published.held = heldCount
            published.lastStepAt = t
        }
    }
}

/// Runs one lane per account until shutdown; the composition root wires intake's wake-ups to it.
/// Lanes can be added (an account appears in a reloaded configuration) and stopped while it runs.
public final class DispatcherService: Service, @unchecked Sendable {
    private let lock = NSLock()
    private var current: [AccountLane]
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
        self.clients = client.map { [$0] } ?? []
        self.clock = clock
        self.maxSleep = maxSleep
        (added, addedContinuation) = AsyncStream.makeStream(of: AccountLane.self)
    }

    public var lanes: [AccountLane] { lock.withLock { current } }

    /// One account's lane.
    public func lane(named name: String) -> AccountLane? { lock.withLock { current.first { $0.name == name } } }

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
        lock.withLock { current.append(lane) }
        addedContinuation.yield(lane)
    }

    /// Stops the lane of an account that left the configuration (its jobs stay queued).
    public func remove(account: String) {
        let lane = lock.withLock { () -> AccountLane? in
            guard let index = current.firstIndex(where: { $0.name == account }) else { return nil }
            return current.remove(at: index)
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
