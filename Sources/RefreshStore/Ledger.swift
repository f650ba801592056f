import Foundation
import RefreshCore
import TZData

/// What a decision needs from the ledger: one segment's recent attempts, the account's recent
/// attempts, and the blocks that apply.
public struct LedgerHistory: Sendable, Equatable {
    /// The segment's attempts that started in the last four days (a refresh counts at most until
    /// the end of the local day of its finish, about 26 hours later, and the requests within 48
    /// hours of it name the zones that day may be counted in).
    public var segmentAttempts: [StoredAttempt]
    /// The account's attempts that started since the previous UTC day began.
    public var accountAttempts: [StoredAttempt]
    /// Learned blocks for the segment or the account that have not yet ended.
    public var blocks: [StoredBlock]

    public init(segmentAttempts: [StoredAttempt], accountAttempts: [StoredAttempt], blocks: [StoredBlock]) {
        self.segmentAttempts = segmentAttempts
        self.accountAttempts = accountAttempts
        self.blocks = blocks
    }

    /// Every attempt once (the two lists overlap).
    public var allAttempts: [StoredAttempt] {
        var seen = Set<Int64>()
        return (segmentAttempts + accountAttempts).filter { seen.insert($0.id).inserted }
    }
}

/// What the rules and the budget questions read of one account, in one read: its attempts inside
/// the widest window (`HistoryWindows.segmentLookback`), its blocks, its holds and the zones of
/// its queued jobs. The control API answers from it (memory, not SQLite) until the ledger's
/// `changeCount` moves; `history(segmentID:now:)` equals `Ledger.history` for any `now` at or
/// after `readAt` (the windows only shrink; a test checks it on random ledgers).
public struct AccountView: Sendable, Equatable {
    public var account: String
    /// When it was read (the windows are taken from this instant).
    public var readAt: Date
    /// The ledger's change count before the read (the view is current while it is unchanged).
    public var changeCount: UInt64
    /// Attempts that started at or after `readAt` - 4 days, by segment, in start order.
    public var attemptsBySegment: [String: [StoredAttempt]]
    /// The same attempts, all segments, in start order.
    public var attempts: [StoredAttempt]
    /// Blocks of the account or its segments ending after `readAt` - 1 day, in id order.
    public var blocks: [StoredBlock]
    /// Holds in force on the account or its segments, oldest first.
    public var holds: [StoredHold]
    /// Each segment with queued jobs: their zones, in job id order.
    public var queuedZones: [String: [String]]

    public init(
        account: String, readAt: Date, changeCount: UInt64, attempts: [StoredAttempt], blocks: [StoredBlock],
        holds: [StoredHold], queuedZones: [String: [String]]
    ) {
        self.account = account
        self.readAt = readAt
        self.changeCount = changeCount
        self.attempts = attempts
        self.attemptsBySegment = Dictionary(grouping: attempts, by: \.segmentID)
        self.blocks = blocks
        self.holds = holds
        self.queuedZones = queuedZones
    }

    /// The history a decision for a segment at `now` needs, as `Ledger.history` reads it; nil when
    /// `now` is before `readAt` (the clock went back: read again).
    public func history(segmentID: String, now: Date) -> LedgerHistory? {
        guard now >= readAt else { return nil }
        let segmentSince = HistoryWindows.segmentSince(now)
        let accountSince = HistoryWindows.accountSince(now)
        let blocksSince = HistoryWindows.blocksSince(now)
        return LedgerHistory(
            segmentAttempts: (attemptsBySegment[segmentID] ?? []).filter {
                $0.startedAt.timeIntervalSince1970 >= segmentSince
            },
            accountAttempts: attempts.filter { $0.startedAt.timeIntervalSince1970 >= accountSince },
            blocks: blocks.filter {
                ($0.segmentID == nil || $0.segmentID == segmentID) && $0.until.timeIntervalSince1970 >= blocksSince
            })
    }
}

/// An `AccountView` as the rule engine takes it, converted once (zones resolved) and then shared
/// by every budget question until the view is read again: per question only the windows are cut.
/// `decide(segmentID:...)` equals `RuleEngine.decide` over `history(segmentID:now:)`'s
/// `engineInputs` (a test checks it on random ledgers).
public struct EngineView: Sendable {
    /// The view's attempts as the engine takes them, by segment, in start order.
    public let attemptsBySegment: [String: [Attempt]]
    /// All of them, in start order.
    public let attempts: [Attempt]
    /// The view's blocks as the engine takes them.
    public let blocks: [LearnedBlock]
    public let readAt: Date

    public init(_ view: AccountView, resolve: (String) -> ZoneRules?) {
        // Per zone name, once: the tz directory caches the zones it loads but not a name it no
        // longer knows (each miss would search for suggestions again).
        var memo: [String: ZoneRules?] = [:]
        let converted = view.attempts.map { attempt in
            attempt.engineAttempt { name in
                if let known = memo[name] { return known }
                let rules = resolve(name)
                memo[name] = rules
                return rules
            }
        }
        attempts = converted
        attemptsBySegment = Dictionary(grouping: converted, by: \.segment)
        blocks = view.blocks.map(\.engineBlock)
        readAt = view.readAt
    }

    /// The decision for a segment at `now`, as the lane would take it from the ledger's history
    /// (the same windows, `HistoryWindows`); nil when `now` is before `readAt` (read again).
    public func decide(
        account: String, segmentID: String, zone: ZoneRules, alsoZones: [ZoneRules], limits: Limits, now: Date
    ) -> Decision? {
        guard now >= readAt else { return nil }
        let segmentSince = Date(timeIntervalSince1970: HistoryWindows.segmentSince(now))
        let accountSince = Date(timeIntervalSince1970: HistoryWindows.accountSince(now))
        let blocksSince = Date(timeIntervalSince1970: HistoryWindows.blocksSince(now))
        let segment = (attemptsBySegment[segmentID] ?? []).filter { $0.startedAt >= segmentSince }
        // The account's attempts of its window, and the segment's older ones (the ledger's history
        // holds both lists, and the engine counts every attempt of the account it is given).
        var accountHistory = segment.filter { $0.startedAt < accountSince }
        accountHistory.append(contentsOf: attempts.filter { $0.startedAt >= accountSince })
        // The window the ledger's history reads; the engine itself keeps the blocks in scope.
        let blocks = blocks.filter { $0.until >= blocksSince }
        return RuleEngine.decide(
            account: account, segment: segmentID, zone: zone, alsoZones: alsoZones, segmentHistory: segment,
            accountHistory: accountHistory, blocks: blocks, limits: limits, now: now)
    }
}

/// The outcome of a reservation.
public enum ReservationResult: Sendable, Equatable {
    /// A `reserved` attempt is durable; the request may now be sent. `jobs` are the jobs it
    /// serves, leader first, now in state `sending`.
    case reserved(attemptID: Int64, jobs: [StoredJob])
    /// The rules, re-checked inside the transaction, do not allow it (nothing was written).
    case denied(Decision)
    /// No queued job of the segment is due: nothing to send.
    case nothingDue
    /// An operator holds the account or the segment (nothing was written).
    case held(StoredHold)
}

/// A job read from a spool file, with the file's identity.
public struct SpoolFileJob: Sendable, Equatable {
    /// `device:inode:size:mtime`.
    public var identity: String
    public var contentDigest: String
    public var name: String
    public var job: NewJob

    public init(identity: String, contentDigest: String, name: String, job: NewJob) {
        self.identity = identity
        self.contentDigest = contentDigest
        self.name = name
        self.job = job
    }
}

extension Ledger {
    public var outsideChanges: UInt64 { 0 }
    public var unreachableReason: String? { nil }
    public func dispatch(account: String) -> Dispatch { .leads }
    public func serve(identities: [String: String], maxClockSkew: Double) {}
    public func cluster(now: Date) async throws -> ClusterView? { nil }

    /// `reserve` for every due job of the segment.
    public func reserve(
        account: String, segmentID: String, timeZone: String, now: Date, check: (LedgerHistory) -> Decision
    ) async throws -> ReservationResult {
        try await reserve(
            account: account, segmentID: segmentID, timeZone: timeZone, now: now, admit: { _ in true }, check: check)
    }

    /// One spool file (see `ingestSpoolFiles`).
    public func ingestSpoolFile(identity: String, contentDigest: String, name: String, job: NewJob, now: Date)
        async throws -> SpoolIngestResult
    {
        let file = SpoolFileJob(identity: identity, contentDigest: contentDigest, name: name, job: job)
        return try await ingestSpoolFiles([file], now: now)[0].get()
    }
}

/// What became of a spool file handed to the ledger.
public enum SpoolIngestResult: Sendable, Equatable {
    /// Its job is in the ledger (new, or the same idempotency key and content as before).
    case enqueued(EnqueueResult)
    /// This very file was taken before (a crash came between commit and unlink).
    case alreadyTaken(jobID: Int64?)
}

/// The ledger's operations, so a shared ledger (PostgreSQL for several hosts on one SendGrid
/// account, issue #13) can be added without touching the core.
///
/// Every operation is `async`: a backend that talks to a server suspends while it waits and
/// never blocks a thread of the concurrency pool on a network answer. `SQLiteLedger`'s
/// synchronous methods satisfy these requirements and run on the caller's thread; that is why
/// every caller runs on a thread of its own (the lanes, intake and hooks on `BlockingExecutor`s,
/// the control API inside `APIWork`'s read and write threads), never on the pool that answers
/// requests. Code holding a `SQLiteLedger` itself (its tests, the benchmarks) may call it
/// synchronously.
///
/// The reservation protocol: a request to SendGrid is preceded by a durable `reserved` attempt,
/// written by `reserve` in the same IMMEDIATE transaction that re-reads the history and re-checks
/// the rules; after the answer, `complete` updates it. On open, every attempt still `reserved`
/// becomes `uncertain` (it may have reached SendGrid; it counts). No code path sends without a
/// reservation.
public protocol Ledger: Sendable {
    /// Adds a job, or returns the existing one for the same idempotency key and content.
    /// - Throws: `LedgerError.idempotencyConflict` for the same key with different content.
    func enqueue(_ job: NewJob, now: Date) async throws -> EnqueueResult
    func job(id: Int64) async throws -> StoredJob?
    /// Jobs by state (nil: all), ascending id, after the cursor.
    func jobs(state: JobState?, segmentID: String?, after cursor: Int64?, limit: Int) async throws -> [StoredJob]
    /// Every job still waiting (queued), in id order.
    func queuedJobs() async throws -> [StoredJob]
    /// The queued jobs of one segment of one account, in id order.
    func queuedJobs(account: String, segmentID: String) async throws -> [StoredJob]
    /// How many jobs are in each state.
    func jobCounts() async throws -> [JobState: Int]
    /// When the oldest job still queued was submitted (nil: none queued).
    func oldestQueuedAt() async throws -> Date?
    /// Cancels a job that has not been sent.
    func cancel(jobID: Int64, now: Date) async throws -> StoredJob
    /// Cancels every queued job the filter takes, in one transaction; returns them.
    func cancelJobs(matching filter: JobFilter, now: Date) async throws -> [StoredJob]
    /// The jobs a filter takes, in id order (what a bulk operation would change).
    func jobs(matching filter: JobFilter) async throws -> [StoredJob]
    /// Queues a failed or expired job again: tries, backoff and reason start afresh, an expired
    /// job loses its passed `expires_at`; its earlier attempts stay in the history.
    /// - Throws: `LedgerError.notFound`, or `.invalidState` for a job that is not failed or expired.
    func retry(jobID: Int64, now: Date) async throws -> StoredJob
    /// Retries every failed or expired job the filter takes, in one transaction; returns them.
    func retryJobs(matching filter: JobFilter, now: Date) async throws -> [StoredJob]
    /// Changes a queued job's priority, `not_before` or `expires_at` (the idempotency digest stays
    /// the submitted content's, so the submitter's retry of the same file is still a no-op).
    /// - Throws: `.notFound`, `.invalidState` (not queued), `.invalidInput` (expires_at not after not_before).
    func edit(jobID: Int64, change: JobChange, now: Date) async throws -> StoredJob
    /// Holds an account (segmentID nil) or a segment; an active hold of the same scope is returned
    /// as it is (R10).
    func hold(account: String, segmentID: String?, reason: String, who: String, now: Date) async throws -> StoredHold
    /// Ends a hold in force; nil when there is none with that id.
    func release(holdID: Int64, now: Date) async throws -> StoredHold?
    /// The holds in force, of one account or all, oldest first.
    func activeHolds(account: String?) async throws -> [StoredHold]
    /// Jobs that reached a final state after event `id`, oldest first (R9).
    func jobEvents(after id: Int64, limit: Int) async throws -> [JobEvent]
    /// The newest event's id (0 when there is none).
    func latestJobEventID() async throws -> Int64
    /// Where the hook runner stands (nil: it never ran on this ledger).
    func hookCursor() async throws -> Int64?
    func setHookCursor(_ id: Int64) async throws
    /// Marks queued jobs whose `expires_at` has passed as expired; returns them.
    func expireJobs(now: Date) async throws -> [StoredJob]

    /// The history a decision for (account, segment) at `now` needs.
    func history(account: String, segmentID: String, now: Date) async throws -> LedgerHistory
    /// One account's attempts, blocks, holds and queued zones in one read (see `AccountView`).
    func accountView(account: String, now: Date) async throws -> AccountView
    /// The attempts since an instant, newest first, optionally for one segment or account.
    func attempts(since: Date, account: String?, segmentID: String?, limit: Int) async throws -> [StoredAttempt]

    /// Reserves a refresh of (account, segment), sent with `timeZone`, for every due queued job
    /// of the segment, if `check` (the rules over the history read inside the transaction) allows.
    /// Only due jobs that `admit` accepts ride along (the lane leaves out jobs it holds).
    func reserve(
        account: String, segmentID: String, timeZone: String, now: Date, admit: (StoredJob) -> Bool,
        check: (LedgerHistory) -> Decision
    ) async throws -> ReservationResult
    /// Records the answer to a reserved attempt and what becomes of its jobs.
    func complete(
        attemptID: Int64, outcome: AttemptOutcome, httpStatus: Int?, sendGridJobID: String?, error: String?,
        finishedAt: Date,
        jobs disposition: JobDisposition
    ) async throws

    /// Records an attempt that did not come from a reservation of ours (a refresh made elsewhere,
    /// learned from SendGrid's `refreshes_used`).
    func recordExternal(account: String, segmentID: String, timeZone: String, at: Date) async throws -> StoredAttempt
    /// Adds a learned block.
    func addBlock(account: String, segmentID: String?, until: Date, reason: String, now: Date) async throws
    /// The blocks of an account (its own and its segments') that end after `now` - 1 day.
    func blocks(account: String, now: Date) async throws -> [StoredBlock]
    /// The blocks still in force (ending after `now`), of one account or of all, oldest first.
    func activeBlocks(account: String?, now: Date) async throws -> [StoredBlock]
    /// Lifts a block still in force by hand: it ends at `now` and its reason says so (the row stays,
    /// as a record). nil when no block with that id is in force.
    func liftBlock(id: Int64, now: Date) async throws -> StoredBlock?
    /// Turns `uncertain` attempts into `accepted` (a pre-flight read showed SendGrid counted them)
    /// and marks the queued jobs still linked to them sent (the leader) or coalesced; returns those
    /// jobs (R5).
    func confirmRecorded(attemptIDs: [Int64], now: Date) async throws -> [StoredJob]
    /// Goes up with every committed write through this ledger (a cache key for derived views),
    /// and, for a shared ledger, with every change another process made.
    var changeCount: UInt64 { get }
    /// Goes up when another process may have changed the ledger (a shared ledger's notices; always
    /// 0 for a ledger with one writer). Job ids of several hosts commit out of order, so a reader
    /// that follows new jobs by id reads everything again when this moves.
    var outsideChanges: UInt64 { get }
    /// Why the ledger's database cannot be reached right now (nil: it can, or it is a local file).
    var unreachableReason: String? { get }
    /// Where the ledger is, for logs and status ("SQLite /var/lib/refreshd/ledger.sqlite").
    var location: String { get }
    /// Whether this process may send for `account` now (#14): on a ledger several hosts share,
    /// only the host that leads the account, and only while its clock agrees with the database's.
    /// A ledger with one host: always.
    func dispatch(account: String) -> Dispatch
    /// What a reload changes for the ledger: the accounts this process serves, local name ->
    /// SendGrid identity, and how far its clock may be from the database's (seconds). A shared
    /// ledger stores rows by identity, leads exactly these accounts and checks the clock against
    /// the limit; a ledger of one host keeps local names and ignores both.
    func serve(identities: [String: String], maxClockSkew: Double)
    /// The hosts sharing the ledger and who leads each account (nil: a ledger of one host).
    func cluster(now: Date) async throws -> ClusterView?
    /// Turns `uncertain` attempts into `unrecorded` (a pre-flight read showed SendGrid did not
    /// record them); returns how many changed.
    func markUnrecorded(attemptIDs: [Int64]) async throws -> Int
    /// SendGrid's last known `refreshes_used` for a segment.
    func recordUsage(account: String, segmentID: String, refreshesUsed: Int, lastRefreshedAt: Date?, observedAt: Date)
        async throws

    /// Records jobs read from spool files, each with its file's identity (device, inode, size,
    /// mtime) and content digest, all in one transaction; the same file read again is recognised.
    /// An idempotency conflict fails that file alone.
    func ingestSpoolFiles(_ files: [SpoolFileJob], now: Date) async throws -> [Result<SpoolIngestResult, LedgerError>]
    /// How many jobs are queued (an index count, cheap).
    func queuedCount() async throws -> Int

    /// Deletes finished jobs and attempts older than `retentionDays` (never fewer than 3 days, so
    /// nothing inside a rule window goes) and ended blocks; returns how many rows went.
    func prune(retentionDays: Int, now: Date) async throws -> Int
}

extension LedgerHistory {
    /// The history as the rule engine takes it. `resolve` maps a stored zone name to its rules;
    /// an attempt whose zone the host cannot load keeps counting with no zone of its own (I1:
    /// until a midnight has passed in every zone known for the segment). Never UTC in its place.
    public func engineInputs(resolve: (String) -> ZoneRules?) -> (attempts: [Attempt], blocks: [LearnedBlock]) {
        (allAttempts.map { $0.engineAttempt(resolve: resolve) }, blocks.map(\.engineBlock))
    }
}

extension StoredAttempt {
    /// The attempt as the rule engine takes it (zone nil when `resolve` cannot load it).
    public func engineAttempt(resolve: (String) -> ZoneRules?) -> Attempt {
        Attempt(
            account: account, segment: segmentID, zone: resolve(timeZone), outcome: outcome, startedAt: startedAt,
            finishedAt: finishedAt)
    }
}

extension StoredJob {
    /// The job as the lane's queue takes it; nil when `resolve` cannot load its zone (the job is
    /// held, `JobHold`: never sent or planned under another zone).
    public func pendingJob(resolve: (String) -> ZoneRules?) -> PendingJob? {
        guard let zone = resolve(job.timeZone) else { return nil }
        return PendingJob(
            id: id, segment: job.segmentID, zone: zone, priority: job.priority, dueAt: dueAt, expiresAt: job.expiresAt)
    }

    /// The job as the planner takes it (the same fields as `pendingJob`; the id is also the FIFO
    /// sequence); nil when `resolve` cannot load its zone.
    public func plannedJob(resolve: (String) -> ZoneRules?) -> QueuedJob? {
        guard let pending = pendingJob(resolve: resolve) else { return nil }
        return QueuedJob(
            id: String(id), account: job.account, segment: pending.segment, zone: pending.zone,
            priority: pending.priority, sequence: id, notBefore: pending.dueAt, expiresAt: pending.expiresAt)
    }
}

extension StoredBlock {
    /// The block as the rule engine takes it.
    public var engineBlock: LearnedBlock {
        LearnedBlock(
            scope: segmentID.map { .segment(account: account, segment: $0) } ?? .account(account), until: until,
            reason: reason)
    }
}

/// Why a queued job is held back instead of planned: the one place that decides it, for the lane,
/// the plan, the job list, status and metrics.
public enum JobHold {
    /// Why a job naming `timeZone` cannot be sent with `zones`, or nil when it can. A zone is never
    /// replaced (by UTC or anything else): that would move SendGrid's day for the segment by up
    /// to 14 hours. The hold lasts while the zone cannot be loaded: tz data that brings it back
    /// (a reload, the hourly check) releases the job.
    public static func reason(timeZone: String, zones: ZoneInfoDirectory) -> String? {
        do {
            _ = try zones.rules(for: timeZone)
            return nil
        } catch {
            return
                "held: time zone \"\(timeZone)\" cannot be loaded from the host's tz data (\(zones.version ?? "unknown version")): "
                + "\(error.message); refreshd never sends it with another zone. Reinstall the zone, or cancel the job and queue it "
                + "again with a current IANA name"
        }
    }
}

/// Whether a host sends for an account (`Ledger.dispatch(account:)`).
public enum Dispatch: Sendable, Equatable {
    /// This host sends for the account.
    case leads
    /// Another host leads the account and sends; this host keeps taking and showing its jobs.
    case standsBy(String)
    /// No host of this process may send now: its clock disagrees with the database's, or the
    /// database cannot be reached. It keeps taking jobs.
    case refused(String)

    /// Why this host does not send (nil: it does).
    public var standbyReason: String? {
        switch self {
        case .leads: return nil
        case .standsBy(let reason), .refused(let reason): return reason
        }
    }

    /// Why this host may send nothing at all (nil: it leads or stands by).
    public var refusal: String? {
        if case .refused(let reason) = self { return reason }
        return nil
    }
}

/// The hosts of a shared ledger, as one of them sees it.
public struct ClusterView: Sendable, Equatable {
    public struct Host: Sendable, Equatable {
        public var hostID: String
        public var heartbeatAt: Date
        /// Its heartbeat is within the lease.
        public var alive: Bool

        public init(hostID: String, heartbeatAt: Date, alive: Bool) {
            (self.hostID, self.heartbeatAt, self.alive) = (hostID, heartbeatAt, alive)
        }
    }

    /// This host.
    public var hostID: String
    public var hosts: [Host]
    /// Local account name -> the host that leads it now (absent: none does).
    public var leaders: [String: String]
    /// This host's clock minus the database's, in seconds, at the last measurement.
    public var clockSkewSeconds: Double?
    /// Why this host dispatches nothing at all (its clock), if so.
    public var refusal: String?

    public init(
        hostID: String, hosts: [Host], leaders: [String: String], clockSkewSeconds: Double?, refusal: String?
    ) {
        (self.hostID, self.hosts, self.leaders) = (hostID, hosts, leaders)
        (self.clockSkewSeconds, self.refusal) = (clockSkewSeconds, refusal)
    }
}
