import Foundation
import TZData

/// A queued job as the dispatcher's queue holds it.
public struct PendingJob: Sendable, Equatable {
    /// The ledger's id: also the FIFO sequence.
    public var id: Int64
    public var segment: String
    /// The zone the job asks to send as `user_time_zone`.
    public var zone: ZoneRules
    /// Higher goes first.
    public var priority: Int
    /// Not sent before this instant (the job's `not_before` and any retry backoff).
    public var dueAt: Date?
    /// Expires, unsent, at this instant.
    public var expiresAt: Date?

    public init(
        id: Int64, segment: String, zone: ZoneRules, priority: Int = 0, dueAt: Date? = nil, expiresAt: Date? = nil
    ) {
        self.id = id
        self.segment = segment
        self.zone = zone
        self.priority = priority
        self.dueAt = dueAt
        self.expiresAt = expiresAt
    }
}

/// What the dispatcher should do next for one account.
public enum SendStep: Sendable, Equatable {
    /// Send one refresh of `segment` now, with `zone` (the leading job's), for `jobs` (every due
    /// job of the segment, leader first).
    case send(segment: String, zone: ZoneRules, jobs: [Int64])
    /// These jobs' `expires_at` has passed: mark them expired (they are out of the queue).
    case expire([PendingJob])
    /// Nothing can happen before this instant (nil: not until something changes).
    case wait(until: Date?)
}

/// One account's queue as the dispatcher works it: the same order as `Planner` (priority, then
/// FIFO; every due job of a segment served by one refresh), kept incrementally so a decision
/// touches only the tops of its heaps, not every queued job.
///
/// Each segment with queued jobs has one instant at which it next becomes eligible: the latest of
/// its rules' earliest instant (I1, I2, I5, with the zones of all its queued jobs) and its first
/// due job. Segments wait in a heap keyed by that instant; eligible ones move to a heap keyed by
/// their best job; the account's own rules (I3, its blocks, a pause) gate the whole account. Any
/// change to a segment (a job, an attempt, a block) bumps its version, which retires its old heap
/// entries, and schedules it for re-evaluation.
///
/// Pure: the caller passes "now" and reports what happened (`record`, `setJobs`, ...).
public struct SendQueue: Sendable {
    public let account: String
    public private(set) var limits: Limits

    struct Group: Sendable {
        var jobs: [Int64: PendingJob] = [:]
        var history: [Attempt] = []
        var blocks: [LearnedBlock] = []
        /// Held back until this instant, whatever the rules say (a denial from the ledger).
        var hold: Double?
        var version = 0
    }

    private var groups: [String: Group] = [:]
    /// The end of the UTC day of each of the account's requests, ascending (the margin is added
    /// when they are read, so a reload that changes it needs nothing else).
    private var accountDayEnds: [Double] = []
    private var accountBlocks: [LearnedBlock] = []
    /// Paused (401, 403): nothing goes out until `resume`.
    public private(set) var pauseReason: String?
    private var waiting = BinaryHeap<WaitEntry>()
    private var ready = BinaryHeap<ReadyEntry>()
    private var expiries = BinaryHeap<ExpiryEntry>()
    /// Queued jobs held.
    public private(set) var count = 0

    public init(account: String, limits: Limits) {
        self.account = account
        self.limits = limits
    }

    // MARK: What changed

    /// Replaces the limits (a reload): every segment is evaluated again.
    public mutating func setLimits(_ limits: Limits, now: Date) {
        self.limits = limits
        for segment in groups.keys { touch(segment, now: now) }
    }

    /// Replaces the queued jobs of one segment (the ledger's view after a send, a cancel, a reload).
    /// With `history`, the segment's attempts (the last days) and blocks are replaced too.
    public mutating func setJobs(
        segment: String, _ jobs: [PendingJob], history: [Attempt]? = nil, blocks: [LearnedBlock]? = nil, now: Date
    ) {
        var group = groups[segment] ?? Group()
        count -= group.jobs.count
        group.jobs = Dictionary(uniqueKeysWithValues: jobs.map { ($0.id, $0) })
        count += group.jobs.count
        if let history { group.history = history.filter { $0.segment == segment && $0.account == account } }
        if let blocks { group.blocks = blocks.filter { $0.scope == .segment(account: account, segment: segment) } }
        if group.jobs.isEmpty {
            groups[segment] = nil
            return
        }
        groups[segment] = group
        for job in jobs {
            if let expiry = job.expiresAt {
                expiries.push(ExpiryEntry(at: expiry.timeIntervalSince1970, job: job.id, segment: segment))
            }
        }
        touch(segment, now: now)
    }

    /// The queued jobs of a segment.
    public func jobs(of segment: String) -> [PendingJob] { groups[segment].map { Array($0.jobs.values) } ?? [] }

    /// Whether the queue holds jobs of this segment (its history is then known).
    public func knows(segment: String) -> Bool { groups[segment] != nil }

    /// Adds one job to a segment already known (otherwise use `setJobs` with its history).
    public mutating func add(_ job: PendingJob, now: Date) {
        precondition(groups[job.segment] != nil, "add(_:) needs the segment's history: use setJobs")
        if groups[job.segment]!.jobs.updateValue(job, forKey: job.id) == nil { count += 1 }
        if let expiry = job.expiresAt {
            expiries.push(ExpiryEntry(at: expiry.timeIntervalSince1970, job: job.id, segment: job.segment))
        }
        touch(job.segment, now: now)
    }

    /// Removes jobs (sent, cancelled, expired).
    public mutating func remove(_ ids: [Int64], segment: String, now: Date) {
        guard var group = groups[segment] else { return }
        for id in ids where group.jobs.removeValue(forKey: id) != nil { count -= 1 }
        if group.jobs.isEmpty {
            groups[segment] = nil
        } else {
            groups[segment] = group
            touch(segment, now: now)
        }
    }

    /// Replaces the account's history (requests of the last two UTC days).
    public mutating func setAccountHistory(_ attempts: [Attempt]) {
        accountDayEnds = attempts.filter { $0.account == account && $0.outcome.countsTowardAccount }
            .map { utcDayEnd($0.finish(now: $0.startedAt.timeIntervalSince1970)) }.sorted()
    }

    /// Replaces the blocks: the account's and every known segment's.
    public mutating func setBlocks(_ blocks: [LearnedBlock], now: Date) {
        accountBlocks = blocks.filter { $0.scope == .account(account) }
        for segment in Array(groups.keys) {
            groups[segment]!.blocks = blocks.filter { $0.scope == .segment(account: account, segment: segment) }
            touch(segment, now: now)
        }
    }

    /// Records a finished attempt (ours or one learned from SendGrid).
    public mutating func record(_ attempt: Attempt, now: Date) {
        guard attempt.account == account else { return }
        if attempt.outcome.countsTowardAccount {
            let end = utcDayEnd(attempt.finish(now: now.timeIntervalSince1970))
            let position = accountDayEnds.lastIndex { $0 <= end }.map { $0 + 1 } ?? 0
            accountDayEnds.insert(end, at: position)
            // Requests of days long gone no longer count.
            let t = now.timeIntervalSince1970
            if let first = accountDayEnds.first, first + limits.safetyMarginSeconds + 86400 < t {
                accountDayEnds.removeAll { $0 + limits.safetyMarginSeconds + 86400 < t }
            }
        }
        if groups[attempt.segment] != nil {
            groups[attempt.segment]!.history.append(attempt)
            touch(attempt.segment, now: now)
        }
    }

    /// Holds a segment back until an instant (the ledger denied what the queue thought allowed).
    public mutating func hold(segment: String, until: Date, now: Date) {
        guard groups[segment] != nil else { return }
        groups[segment]!.hold = until.timeIntervalSince1970
        touch(segment, now: now)
    }

    /// A segment `next` handed out that the caller did not send (another host leads the
    /// account): offered again by the next `next`, as if never handed out.
    public mutating func putBack(segment: String, now: Date) {
        guard groups[segment] != nil else { return }
        touch(segment, now: now)
    }

    public mutating func pause(reason: String) { pauseReason = reason }
    public mutating func resume() { pauseReason = nil }

    // MARK: Deciding

    /// What to do at `now`.
    public mutating func next(now: Date) -> SendStep {
        let t = now.timeIntervalSince1970
        // Expired jobs first: they must not be sent.
        var expired: [PendingJob] = []
        while let top = expiries.peek, top.at <= t {
            expiries.pop()
            if let job = groups[top.segment]?.jobs[top.job], job.expiresAt?.timeIntervalSince1970 == top.at {
                expired.append(job)
            }
        }
        if !expired.isEmpty {
            for job in expired { remove([job.id], segment: job.segment, now: now) }
            return .expire(expired)
        }
        // Segments whose instant has come are evaluated again.
        while let top = waiting.peek, top.at <= t {
            waiting.pop()
            guard let group = groups[top.segment], group.version == top.version else { continue }
            schedule(top.segment, group, at: t)
        }
        let nextExpiry = expiries.peek.map { $0.at }
        if pauseReason != nil { return .wait(until: nextExpiry.map(Date.init(timeIntervalSince1970:))) }
        let account = accountBudgets(at: t)
        if account.contains(where: { $0.earliest == nil }) {
            return .wait(until: nextExpiry.map(Date.init(timeIntervalSince1970:)))
        }
        let accountReady = account.map { $0.earliest!.timeIntervalSince1970 }.max() ?? t
        while let top = ready.peek {
            guard let group = groups[top.segment], group.version == top.version else {
                ready.pop()
                continue
            }
            if accountReady > t { break }
            ready.pop()
            let due = dueJobs(group, at: t)
            guard let leader = due.first else {
                touch(top.segment, now: now)
                continue
            }
            // Taken out until the caller reports what happened (record / setJobs / remove).
            groups[top.segment]!.version += 1
            return .send(segment: top.segment, zone: leader.zone, jobs: due.map(\.id))
        }
        var wake = nextExpiry ?? .infinity
        if ready.peek != nil { wake = min(wake, accountReady) }
        while let top = waiting.peek, groups[top.segment]?.version != top.version { waiting.pop() }
        if let top = waiting.peek { wake = min(wake, max(top.at, accountReady)) }
        return .wait(until: wake.isFinite ? Date(timeIntervalSince1970: wake) : nil)
    }

    /// The account's budgets at `now` (I3 and its blocks), for status displays.
    public func accountBudgets(now: Date) -> [RuleBudget] { accountBudgets(at: now.timeIntervalSince1970) }

    // MARK: Internals

    private func utcDayEnd(_ finish: Double) -> Double {
        Double(ZoneRules.utcDay(containing: Int64(finish.rounded(.down))).end)
    }

    private func accountBudgets(at t: Double) -> [RuleBudget] {
        let m = limits.safetyMarginSeconds
        var low = 0
        var high = accountDayEnds.count
        while low < high {
            let mid = (low + high) / 2
            if accountDayEnds[mid] + m <= t { low = mid + 1 } else { high = mid }
        }
        let live = accountDayEnds[low...].map { $0 + m }
        var result = [
            CountingRule.evaluate(
                rule: .accountDaily, sortedLiveExpiries: live[...], limit: limits.accountDaily, now: t,
                idleReset: utcDayEnd(t) + m)
        ]
        if let block = LearnedBlockRule.budget(accountBlocks, margin: limits.safetyMarginSeconds, now: t) {
            result.append(block)
        }
        return result
    }

    /// Due jobs of a group at t, best first (priority, then FIFO).
    private func dueJobs(_ group: Group, at t: Double) -> [PendingJob] {
        group.jobs.values.filter {
            ($0.dueAt?.timeIntervalSince1970 ?? -.infinity) <= t
                && ($0.expiresAt?.timeIntervalSince1970 ?? .infinity) > t
        }
        .sorted { (-$0.priority, $0.id) < (-$1.priority, $1.id) }
    }

    /// Marks a segment changed: old heap entries retire, it is evaluated at the next step.
    private mutating func touch(_ segment: String, now: Date) {
        guard groups[segment] != nil else { return }
        groups[segment]!.version += 1
        waiting.push(WaitEntry(at: -.infinity, segment: segment, version: groups[segment]!.version))
    }

    /// Evaluates a segment at t: ready now (into `ready`), or waiting until its instant.
    private mutating func schedule(_ segment: String, _ group: Group, at t: Double) {
        // Old attempts no longer matter (a refresh counts at most ~26 h, zones look 48 h around it).
        var group = group
        group.history.removeAll { $0.finish(now: t) < t - 4 * 86400 }
        group.version += 1
        let pending = group.jobs.values.sorted { $0.id < $1.id }
        var zones: [ZoneRules] = []
        for job in pending where !zones.contains(job.zone) { zones.append(job.zone) }
        let budgets = SegmentState(
            account: account, segment: segment, zone: zones[0], otherZones: zones, history: group.history,
            blocks: group.blocks
        ).evaluate(limits: limits, now: t)
        groups[segment] = group
        if budgets.contains(where: { $0.earliest == nil }) { return }  // never, under these limits
        var eligible = budgets.map { $0.earliest!.timeIntervalSince1970 }.max() ?? t
        if let hold = group.hold { eligible = max(eligible, hold) }
        let firstDue = pending.filter { ($0.expiresAt?.timeIntervalSince1970 ?? .infinity) > t }
            .map { max(t, $0.dueAt?.timeIntervalSince1970 ?? t) }.min()
        guard let firstDue else { return }  // all expire: the expiry heap handles them
        eligible = max(eligible, firstDue)
        if eligible <= t {
            let best = dueJobs(group, at: t)[0]
            ready.push(
                ReadyEntry(priority: -best.priority, sequence: best.id, segment: segment, version: group.version))
            // A job that becomes due later may lead with a better key: look again then.
            let laterDue = pending.compactMap { $0.dueAt?.timeIntervalSince1970 }.filter { $0 > t }.min()
            if let laterDue { waiting.push(WaitEntry(at: laterDue, segment: segment, version: group.version)) }
        } else {
            waiting.push(WaitEntry(at: eligible, segment: segment, version: group.version))
        }
    }
}

private struct WaitEntry: Comparable, Sendable {
    let at: Double
    let segment: String
    let version: Int
    static func < (a: WaitEntry, b: WaitEntry) -> Bool { a.at < b.at }
}

private struct ReadyEntry: Comparable, Sendable {
    let priority: Int
    let sequence: Int64
    let segment: String
    let version: Int
    static func < (a: ReadyEntry, b: ReadyEntry) -> Bool { (a.priority, a.sequence) < (b.priority, b.sequence) }
}

private struct ExpiryEntry: Comparable, Sendable {
    let at: Double
    let job: Int64
    let segment: String
    static func < (a: ExpiryEntry, b: ExpiryEntry) -> Bool { a.at < b.at }
}
