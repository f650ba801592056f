import Foundation
import TZData

/// A job waiting in the queue, as the planner sees it.
public struct QueuedJob: Sendable, Equatable {
    public var id: String
    public var account: String
    public var segment: String
    /// The zone the job asks to send as `user_time_zone`.
    public var zone: ZoneRules
    /// Higher goes first (-100...100).
    public var priority: Int
    /// Arrival order in the queue; lower goes first among equal priorities (FIFO).
    public var sequence: Int64
    /// Not sent before this instant.
    public var notBefore: Date?
    /// Expires, unsent, at this instant.
    public var expiresAt: Date?

    public init(
        id: String, account: String, segment: String, zone: ZoneRules, priority: Int = 0, sequence: Int64,
        notBefore: Date? = nil, expiresAt: Date? = nil
    ) {
        self.id = id
        self.account = account
        self.segment = segment
        self.zone = zone
        self.priority = priority
        self.sequence = sequence
        self.notBefore = notBefore
        self.expiresAt = expiresAt
    }
}

/// Why a planned send happens when it does rather than earlier.
public enum PlanReason: String, Sendable, Equatable, Hashable, Codable, CaseIterable {
    case segmentDaily = "segment_daily"
    case segmentInterval = "segment_interval"
    case accountDaily = "account_daily"
    case learnedBlock = "learned_block"
    /// The job's `not_before`.
    case notBefore = "not_before"
    /// Other jobs of the account take the slots first (priority, then FIFO).
    case queue

    /// One line for help texts and documents.
    public var meaning: String {
        switch self {
        case .segmentDaily: return "the segment's 2 per local day"
        case .segmentInterval: return "1 per hour per segment"
        case .accountDaily: return "the account's 10 per UTC day"
        case .learnedBlock: return "a block SendGrid told us"
        case .notBefore: return "the job's not_before"
        case .queue: return "other jobs of the account go first"
        }
    }

    init(_ rule: Rule) {
        switch rule {
        case .segmentDaily: self = .segmentDaily
        case .segmentInterval: self = .segmentInterval
        case .accountDaily: self = .accountDaily
        case .learnedBlock: self = .learnedBlock
        }
    }
}

/// One refresh the plan expects to send.
public struct PlannedSend: Sendable, Equatable {
    public var at: Date
    public var account: String
    public var segment: String
    /// The zone sent: the leading job's.
    public var zone: String
    /// The jobs it serves; the first leads, the rest are coalesced into it.
    public var jobs: [String]
    /// Why not earlier; empty when it goes out at `now`.
    public var reasons: [PlanReason]
}

/// What the plan expects to become of one job.
public enum JobFate: Sendable, Equatable {
    /// Sent at the instant, by the refresh led by `leader` (itself, or coalesced into another job).
    case send(at: Date, leader: String)
    /// Expires at its `expires_at` before a refresh may serve it.
    case expire(at: Date)
    /// Never sent under the configured limits (a limit of 0).
    case never
}

/// The forecast: when each queued job would go out if every send were accepted.
public struct Plan: Sendable, Equatable {
    /// Every planned refresh, ascending by instant (ties in send order).
    public var sends: [PlannedSend]
    /// Each job's fate, by job id.
    public var fates: [String: JobFate]
}

/// Plans the queue the way the dispatcher works it: at each instant, among segments whose jobs are
/// due and whose rules allow a refresh, the one whose best job has the highest priority (then the
/// lowest sequence) goes first; every due job of that segment is served by the one refresh.
/// Accounts are independent. Runs in O((jobs + sends) log jobs) plus the rule evaluations.
public enum Planner {
    public static func plan(queue: [QueuedJob], history: [Attempt], blocks: [LearnedBlock], limits: Limits, now: Date)
        -> Plan
    {
        var sends: [PlannedSend] = []
        var fates: [String: JobFate] = [:]
        let byAccount = Dictionary(grouping: queue.indices, by: { queue[$0].account })
        let historyByAccount = Dictionary(grouping: history, by: \.account)
        for account in byAccount.keys.sorted() {
            var simulation = AccountSimulation(
                account: account, jobs: byAccount[account]!.map { queue[$0] }, history: historyByAccount[account] ?? [],
                blocks: blocks, limits: limits, now: now.timeIntervalSince1970)
            simulation.run()
            sends += simulation.sends
            fates.merge(simulation.fates) { a, _ in a }
        }
        sends.sort { $0.at < $1.at }
        return Plan(sends: sends, fates: fates)
    }
}

/// The event-driven simulation of one account.
private struct AccountSimulation {
    struct Group {
        var segment: String
        var jobs: [Int]  // indices into `jobs`, all of the segment
        var arrived: [Int] = []  // due, not yet served
        var history: [Attempt]
        var segmentReady: Double? = nil  // earliest instant I1, I2, I5 allow; nil: never
        var segmentBudgets: [RuleBudget] = []
        var version = 0
        /// Zones of the pending jobs the cached `segmentReady` was computed with; nil after a send.
        /// I1, I2 and I5 depend only on the segment's history, that set and the blocks, so
        /// arrivals that leave the set alone need no new evaluation.
        var evaluatedZones: Set<String>? = nil
    }

    let account: String
    let jobs: [QueuedJob]
    let blocks: [LearnedBlock]
    let limits: Limits
    let now: Double
    var groups: [Group] = []
    var finished: [Bool]
    var accountExpiries: [Double]  // ascending
    var sends: [PlannedSend] = []
    var fates: [String: JobFate] = [:]

    init(account: String, jobs: [QueuedJob], history: [Attempt], blocks: [LearnedBlock], limits: Limits, now: Double) {
        self.account = account
        self.jobs = jobs
        self.blocks = blocks
        self.limits = limits
        self.now = now
        self.finished = Array(repeating: false, count: jobs.count)
        // An attempt in flight is taken to finish at the plan's "now", not at each simulated instant.
        let history = history.map { attempt in
            var fixed = attempt
            fixed.finishedAt = Date(timeIntervalSince1970: attempt.finish(now: now))
            return fixed
        }
        accountExpiries = history.filter { $0.outcome.countsTowardAccount }
            .map { Self.accountExpiry(finish: $0.finish(now: now), margin: limits.safetyMarginSeconds) }.sorted()
        let segmentHistory = Dictionary(grouping: history, by: \.segment)
        var groupIndex: [String: Int] = [:]
        for (index, job) in jobs.enumerated() {
            if let g = groupIndex[job.segment] {
                groups[g].jobs.append(index)
            } else {
                groupIndex[job.segment] = groups.count
                groups.append(Group(segment: job.segment, jobs: [index], history: segmentHistory[job.segment] ?? []))
            }
        }
    }

    static func accountExpiry(finish: Double, margin: Double) -> Double {
        Double(ZoneRules.utcDay(containing: Int64(finish.rounded(.down))).end) + margin
    }

    func arrival(_ job: Int) -> Double { max(now, jobs[job].notBefore?.timeIntervalSince1970 ?? now) }

    func expired(_ job: Int, at t: Double) -> Bool {
        guard let expiry = jobs[job].expiresAt?.timeIntervalSince1970 else { return false }
        return expiry <= t
    }

    /// (-priority, sequence) of the group's best due job.
    func leaderKey(_ g: Int) -> (Int, Int64, Int)? {
        groups[g].arrived.map { (-jobs[$0].priority, jobs[$0].sequence, $0) }.min { ($0.0, $0.1) < ($1.0, $1.1) }
    }

    /// Re-evaluates I1, I2 and I5 for a group at t, with the zones of its pending jobs (expired
    /// ones left out), and returns when its waiting entry should come up: when it becomes ready,
    /// or earlier, when a pending job with a zone of its own expires (Z may then shrink).
    @discardableResult
    mutating func refreshSegmentReady(_ g: Int, at t: Double) -> Double? {
        groups[g].version += 1
        let pending = groups[g].jobs.filter { !finished[$0] && !expired($0, at: t) }
        guard let first = pending.first else { return nil }
        let zoneNames = Set(pending.map { jobs[$0].zone.name })
        if groups[g].evaluatedZones != zoneNames {
            groups[g].evaluatedZones = zoneNames
            // Every pending job's zone is a candidate zone (the refresh may be sent with any of them,
            // and which leads can change), which is conservative; only the set matters.
            let state = SegmentState(
                account: account, segment: groups[g].segment, zone: jobs[first].zone,
                otherZones: pending.map { jobs[$0].zone },
                history: groups[g].history, blocks: blocks)
            let budgets = state.evaluate(limits: limits, now: t)
            groups[g].segmentBudgets = budgets
            groups[g].segmentReady =
                budgets.contains { $0.earliest == nil } ? nil : budgets.map { $0.earliest!.timeIntervalSince1970 }.max()
        }
        let zoneExpiries = pending.compactMap { job -> Double? in
            guard let expiry = jobs[job].expiresAt?.timeIntervalSince1970 else { return nil }
            return pending.contains { $0 != job && jobs[$0].zone == jobs[job].zone } ? nil : expiry
        }
        let reevaluate = zoneExpiries.min()
        switch (groups[g].segmentReady, reevaluate) {
        case (let ready?, let again?): return min(ready, again)
        case (let ready?, nil): return ready
        case (nil, let again?): return again
        case (nil, nil): return nil
        }
    }

    /// I3 and the account's blocks at t, from the sorted expiries (binary search: no scan).
    func accountBudgets(at t: Double) -> [RuleBudget] {
        var low = 0
        var high = accountExpiries.count
        while low < high {
            let mid = (low + high) / 2
            if accountExpiries[mid] <= t { low = mid + 1 } else { high = mid }
        }
        let nextMidnight = Self.accountExpiry(finish: t, margin: limits.safetyMarginSeconds)
        var result = [
            CountingRule.evaluate(
                rule: .accountDaily, sortedLiveExpiries: accountExpiries[low...], limit: limits.accountDaily, now: t,
                idleReset: nextMidnight)
        ]
        let scoped = blocks.filter { $0.scope == .account(account) }
        if let block = LearnedBlockRule.budget(scoped, margin: limits.safetyMarginSeconds, now: t) {
            result.append(block)
        }
        return result
    }

    mutating func run() {
        var arrivals = jobs.indices.sorted { (arrival($0), jobs[$0].sequence) < (arrival($1), jobs[$1].sequence) }[...]
        let groupOf = Dictionary(uniqueKeysWithValues: groups.indices.flatMap { g in groups[g].jobs.map { ($0, g) } })
        var waiting = BinaryHeap<WaitingEntry>()
        var ready = BinaryHeap<ReadyEntry>()
        var t = now

        func pushReady(_ g: Int, _ groups: [Group], _ ready: inout BinaryHeap<ReadyEntry>, _ key: (Int, Int64, Int)) {
            ready.push(ReadyEntry(priority: key.0, sequence: key.1, group: g, version: groups[g].version))
        }

        while true {
            // Jobs that are due by t join their group; a group's rules are re-read when it changes.
            while let job = arrivals.first, arrival(job) <= t {
                arrivals.removeFirst()
                let g = groupOf[job]!
                if expired(job, at: arrival(job)) {
                    finished[job] = true
                    fates[jobs[job].id] = .expire(at: jobs[job].expiresAt!)
                    continue
                }
                groups[g].arrived.append(job)
                if let at = refreshSegmentReady(g, at: t) {
                    waiting.push(WaitingEntry(at: at, group: g, version: groups[g].version))
                }
            }
            while let top = waiting.peek, top.at <= t {
                waiting.pop()
                guard top.version == groups[top.group].version, let key = leaderKey(top.group) else { continue }
                if let segmentReady = groups[top.group].segmentReady, segmentReady <= t {
                    pushReady(top.group, groups, &ready, key)
                } else if let at = refreshSegmentReady(top.group, at: t) {
                    // A job's expiry may have shrunk the zones: evaluate again.
                    waiting.push(WaitingEntry(at: max(at, t), group: top.group, version: groups[top.group].version))
                }
            }
            let accountBudgets = self.accountBudgets(at: t)
            if accountBudgets.contains(where: { $0.earliest == nil }) { break }
            let accountReady = accountBudgets.map { $0.earliest!.timeIntervalSince1970 }.max()!
            if accountReady > t {
                t = accountReady
                continue
            }
            var sent = false
            while let top = ready.pop() {
                let g = top.group
                guard top.version == groups[g].version else { continue }
                // Jobs whose expiry has come leave; the group's key may change.
                let live = groups[g].arrived.filter { !expired($0, at: t) }
                if live.count != groups[g].arrived.count {
                    for job in groups[g].arrived where expired(job, at: t) {
                        finished[job] = true
                        fates[jobs[job].id] = .expire(at: jobs[job].expiresAt!)
                    }
                    groups[g].arrived = live
                    groups[g].version += 1
                    if let key = leaderKey(g) { pushReady(g, groups, &ready, key) }
                    continue
                }
                send(group: g, at: t)
                sent = true
                break
            }
            if sent { continue }
            // Nothing can go now: jump to the next arrival or the next segment becoming ready.
            var next = Double.infinity
            if let job = arrivals.first { next = arrival(job) }
            while let top = waiting.peek, top.version != groups[top.group].version { waiting.pop() }
            if let top = waiting.peek { next = min(next, top.at) }
            guard next.isFinite else { break }
            t = next
        }
        for (index, job) in jobs.enumerated() where !finished[index] {
            if let expiry = job.expiresAt { fates[job.id] = .expire(at: expiry) } else { fates[job.id] = .never }
        }
    }

    mutating func send(group g: Int, at t: Double) {
        let leader = leaderKey(g)!.2
        let served =
            [leader]
            + groups[g].arrived.filter { $0 != leader }.sorted {
                (-jobs[$0].priority, jobs[$0].sequence) < (-jobs[$1].priority, jobs[$1].sequence)
            }
        let at = Date(timeIntervalSince1970: t)
        sends.append(
            PlannedSend(
                at: at, account: account, segment: groups[g].segment, zone: jobs[leader].zone.name,
                jobs: served.map { jobs[$0].id },
                reasons: reasons(group: g, served: served, at: t)))
        for job in served {
            finished[job] = true
            fates[jobs[job].id] = .send(at: at, leader: jobs[leader].id)
        }
        groups[g].arrived = []
        groups[g].evaluatedZones = nil
        groups[g].history.append(
            Attempt(
                account: account, segment: groups[g].segment, zone: jobs[leader].zone, outcome: .accepted,
                startedAt: at, finishedAt: at))
        let expiry = Self.accountExpiry(finish: t, margin: limits.safetyMarginSeconds)
        // Sends happen in time order, so appending keeps the expiries sorted.
        let position = accountExpiries.lastIndex { $0 <= expiry }.map { $0 + 1 } ?? 0
        accountExpiries.insert(expiry, at: position)
        refreshSegmentReady(g, at: t)
    }

    /// Why a send goes out at t rather than when its jobs became due.
    func reasons(group g: Int, served: [Int], at t: Double) -> [PlanReason] {
        let due = served.map(arrival).min()!
        guard t > now else { return [] }
        var reasons: [PlanReason] = []
        if due == t, due > now { reasons.append(.notBefore) }
        // Rules as they stood when the jobs became due (with the sends made since): those that
        // held out until exactly t are the reasons.
        for budget in groups[g].segmentBudgets + accountBudgets(at: due)
        where budget.earliest?.timeIntervalSince1970 == t && t > due {
            reasons.append(PlanReason(budget.rule))
        }
        if reasons.isEmpty { reasons.append(.queue) }
        return reasons
    }
}

private struct WaitingEntry: Comparable {
    let at: Double
    let group: Int
    let version: Int
    static func < (a: WaitingEntry, b: WaitingEntry) -> Bool { (a.at, a.group) < (b.at, b.group) }
}

private struct ReadyEntry: Comparable {
    let priority: Int  // negated: lower is better
    let sequence: Int64
    let group: Int
    let version: Int
    static func < (a: ReadyEntry, b: ReadyEntry) -> Bool { (a.priority, a.sequence) < (b.priority, b.sequence) }
}

/// A minimal binary min-heap.
struct BinaryHeap<Element: Comparable> {
    private var items: [Element] = []

    var peek: Element? { items.first }
    var isEmpty: Bool { items.isEmpty }

    mutating func push(_ element: Element) {
        items.append(element)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child] < items[parent] else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    @discardableResult
    mutating func pop() -> Element? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < items.count, items[left] < items[smallest] { smallest = left }
            if right < items.count, items[right] < items[smallest] { smallest = right }
            if smallest == parent { break }
            items.swapAt(parent, smallest)
            parent = smallest
        }
        return top
    }
}

extension BinaryHeap: Sendable where Element: Sendable {}
