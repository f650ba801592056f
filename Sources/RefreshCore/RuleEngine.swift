// Notes on the design of the rule engine
// =======================================
//
// Terms. A *refresh* is an attempt to call SendGrid's refresh endpoint for one segment of one
// account. Its *finish instant* f is when the response arrived or the attempt gave up; while it
// is in flight, f is taken as "now". A *counting refresh* is one SendGrid accepted or may have
// accepted (outcomes accepted, reserved, uncertain, dry_run, external). A *request* is any
// attempt that may have reached SendGrid (every outcome but not_sent). The *margin* m is the
// configured safety margin. For a refresh r of segment s, Z(r) is the set of zones named by s's
// requests that finished within 48 hours of r's finish (r's own zone among them), plus the zone
// of the candidate refresh: SendGrid keeps one zone per segment and does not say which request's
// zone governs a count, so any zone named around r may be the one its day is counted in.
//
// Invariants. A refresh of segment s of account a may go out at instant c only if:
//
//   I1 (segment day)  fewer than `segmentDaily` counting refreshes r of s still count at c, where
//                     r counts at c while c < max over z in Z(r) of end_z(f_r) + m, end_z(t)
//                     being the end of the local day of zone z containing t. With one zone this
//                     is "in the same local day"; with several, r stops counting only once a local
//                     midnight has passed in every one of those zones and the candidate's.
//                     A request whose zone this host cannot load (a name a tzdata upgrade dropped,
//                     a damaged file) names no zone of its own: it counts until a midnight has
//                     passed in every zone known for the segment (the rest of Z(r) and the
//                     candidate's), the latest of the midnights this host can compute.
//   I2 (interval)     c >= f_r + `segmentIntervalSeconds` + m for every counting refresh r of s.
//   I3 (account day)  fewer than `accountDaily` requests of a still count at c, where a request
//                     counts while c < end_UTC(f) + m: whatever SendGrid answered.
//   I4 (margin)       m is added after every reset instant and interval (I1-I3, I5), against
//                     clock skew between this host and SendGrid.
//   I5 (learned)      c >= until + m for every block learned from SendGrid for s or for a (a 429,
//                     or its own `refreshes_used`), exactly like history.
//
// Consequences the code relies on. For a fixed history each rule's set of allowed instants is
// [e, infinity): counts only fall and intervals only pass as c grows. So the earliest allowed
// instant is the largest of the per-rule earliest instants, the binding rules are those that
// reach it, and a decision is a value: allowed now, or not before T (or never, for a limit of 0).
// The engine reads no clock: "now" is an input.

import Foundation
import TZData

/// The limits the engine enforces. SendGrid's documented values are the defaults and the maxima.
public struct Limits: Sendable, Equatable {
    /// Manual refreshes per segment per local day (SendGrid: 2).
    public var segmentDaily: Int
    /// Minimum seconds between two refreshes of one segment (SendGrid: 3600).
    public var segmentIntervalSeconds: Double
    /// Requests per account per UTC day (SendGrid: 10).
    public var accountDaily: Int
    /// Seconds added after every reset instant and interval.
    public var safetyMarginSeconds: Double

    public init(
        segmentDaily: Int = 2, segmentIntervalSeconds: Double = 3600, accountDaily: Int = 10,
        safetyMarginSeconds: Double = 60
    ) {
        self.segmentDaily = segmentDaily
        self.segmentIntervalSeconds = segmentIntervalSeconds
        self.accountDaily = accountDaily
        self.safetyMarginSeconds = safetyMarginSeconds
    }

    /// SendGrid's documented limits with the default 60 s margin.
    public static let sendGrid = Limits()
}

/// What became of an attempt, as the ledger records it.
public enum AttemptOutcome: String, Sendable, Equatable, CaseIterable, Codable {
    /// Written before the request; still in flight (or the process died: see `uncertain`).
    case reserved
    /// 202: SendGrid accepted the refresh.
    case accepted
    /// One of `AnswerClass.rejectedStatuses`: SendGrid refused the request itself.
    case rejected
    /// 429.
    case rateLimited = "rate_limited"
    /// 401: the key was refused.
    case unauthorized
    /// 403: the plan lacks the feature.
    case forbidden
    /// 5xx, timeout or a reset after the request was written: SendGrid may have recorded it.
    case uncertain
    /// Dry-run: no request, but scheduled as if accepted.
    case dryRun = "dry_run"
    /// Failed before any byte reached SendGrid (connection refused, DNS, TLS).
    case notSent = "not_sent"
    /// A refresh made elsewhere (web UI, another tool), learned from SendGrid's `refreshes_used`.
    case external
    /// Was `uncertain` until a later pre-flight read showed SendGrid did not record it as a
    /// refresh: it still counts toward the account's day, no longer toward the segment's rules.
    case unrecorded

    /// One line for help texts and documents (the statuses come from `AnswerClass`).
    public var meaning: String {
        switch self {
        case .reserved: return "in flight"
        case .accepted: return "202"
        case .rejected: return AnswerClass.rejectedStatuses.map(String.init).joined(separator: "/")
        case .rateLimited: return "429"
        case .unauthorized: return "401"
        case .forbidden: return "403"
        case .uncertain: return "no clear answer: counted"
        case .dryRun: return "no request: dry-run"
        case .notSent: return "failed before a byte was sent"
        case .external: return "made elsewhere, seen by a pre-flight read"
        case .unrecorded: return "uncertain, later shown not recorded"
        }
    }

    /// Counts toward the segment's rules (I1, I2): SendGrid accepted or may have accepted it.
    public var countsAsRefresh: Bool {
        switch self {
        case .reserved, .accepted, .uncertain, .dryRun, .external: return true
        case .rejected, .rateLimited, .unauthorized, .forbidden, .notSent, .unrecorded: return false
        }
    }

    /// Counts toward the account's day (I3): the request may have reached SendGrid.
    public var countsTowardAccount: Bool { self != .notSent }
}

/// One attempt from the ledger, as the engine sees it.
public struct Attempt: Sendable, Equatable {
    public var account: String
    public var segment: String
    /// The zone sent as `user_time_zone`; nil when this host cannot load it (see I1).
    public var zone: ZoneRules?
    public var outcome: AttemptOutcome
    /// When the request started (the reservation).
    public var startedAt: Date
    /// When the response arrived or the attempt gave up; nil while in flight.
    public var finishedAt: Date?

    public init(
        account: String, segment: String, zone: ZoneRules?, outcome: AttemptOutcome, startedAt: Date, finishedAt: Date?
    ) {
        self.account = account
        self.segment = segment
        self.zone = zone
        self.outcome = outcome
        self.startedAt = startedAt
        self.finishedAt = finishedAt
    }

    /// The finish instant in seconds; an attempt in flight finishes no earlier than `now`.
    func finish(now: Double) -> Double {
        finishedAt.map { $0.timeIntervalSince1970 } ?? max(now, startedAt.timeIntervalSince1970)
    }
}

/// A block learned from SendGrid (I5).
public struct LearnedBlock: Sendable, Equatable {
    /// What the block holds back.
    public enum Scope: Sendable, Equatable, Hashable {
        case segment(account: String, segment: String)
        case account(String)
    }

    public var scope: Scope
    /// Nothing in scope goes out before this instant (plus the margin).
    public var until: Date
    /// Why, for people: "429 with X-RateLimit-Reset", "refreshes_used 2 of 2".
    public var reason: String

    public init(scope: Scope, until: Date, reason: String) {
        self.scope = scope
        self.until = until
        self.reason = reason
    }
}

/// The rules, by the names the API and the docs use.
public enum Rule: String, Sendable, Equatable, Hashable, CaseIterable, Codable, Comparable {
    case segmentDaily = "segment_daily"
    case segmentInterval = "segment_interval"
    case accountDaily = "account_daily"
    case learnedBlock = "learned_block"

    public static func < (lhs: Rule, rhs: Rule) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// How much of one rule's budget is used at an instant.
public struct RuleBudget: Sendable, Equatable {
    public var rule: Rule
    /// Refreshes (or requests) that still count.
    public var used: Int
    public var limit: Int
    public var remaining: Int { max(0, limit - used) }
    /// When `used` next falls (the next reset, margin included); nil when nothing counts and no
    /// reset applies (the interval rule with no recent refresh).
    public var resetsAt: Date?
    /// The earliest instant this rule alone allows; nil when it never does (a limit of 0).
    public var earliest: Date?
}

/// The engine's answer for one candidate refresh: a value, never an error.
public struct Decision: Sendable, Equatable {
    /// Allowed now, not before an instant, or never under the configured limits.
    public enum Verdict: Sendable, Equatable {
        case allowed
        case notBefore(Date)
        case never
    }

    public var verdict: Verdict
    /// The rules that hold the refresh back until the verdict's instant (empty when allowed).
    public var binding: [Rule]
    /// Every rule's budget at `now`.
    public var budgets: [RuleBudget]

    public init(verdict: Verdict, binding: [Rule], budgets: [RuleBudget]) {
        self.verdict = verdict
        self.binding = binding
        self.budgets = budgets
    }

    /// The earliest instant a refresh may go out (now when allowed); nil for never.
    public func earliest(now: Date) -> Date? {
        switch verdict {
        case .allowed: return now
        case .notBefore(let date): return date
        case .never: return nil
        }
    }

    public func budget(_ rule: Rule) -> RuleBudget? { budgets.first { $0.rule == rule } }
}

/// The pure rule engine: given limits, history, learned blocks and now, may this refresh go out?
public enum RuleEngine {
    /// Decides whether a refresh of `segment` (sent with `zone`) for `account` may go out at `now`.
    ///
    /// `history` should hold at least the segment's attempts of the last two days and the
    /// account's attempts of the current UTC day; others are ignored.
    /// `alsoZones` are other zones the segment may be sent with (other queued jobs' zones); they
    /// join Z(s) like the zones of past requests.
    public static func decide(
        account: String, segment: String, zone: ZoneRules, alsoZones: [ZoneRules] = [], history: [Attempt],
        blocks: [LearnedBlock], limits: Limits, now: Date
    ) -> Decision {
        decide(
            account: account, segment: segment, zone: zone, alsoZones: alsoZones,
            segmentHistory: history.filter { $0.account == account && $0.segment == segment },
            accountHistory: history.filter { $0.account == account }, blocks: blocks, limits: limits, now: now)
    }

    /// The same decision from histories already split: `segmentHistory` holds only the segment's
    /// attempts (at least those of the last two days), `accountHistory` only the account's (at
    /// least the current UTC day's; the segment's among them). For a caller that keeps them apart
    /// (the control API's per-account views), so nothing is filtered or merged per question.
    public static func decide(
        account: String, segment: String, zone: ZoneRules, alsoZones: [ZoneRules] = [], segmentHistory: [Attempt],
        accountHistory: [Attempt], blocks: [LearnedBlock], limits: Limits, now: Date
    ) -> Decision {
        let t = now.timeIntervalSince1970
        var accountFinishes: [Double] = []
        accountFinishes.reserveCapacity(accountHistory.count)
        for attempt in accountHistory where attempt.outcome.countsTowardAccount {
            accountFinishes.append(attempt.finish(now: t))
        }
        let segmentPart = SegmentState(
            account: account, segment: segment, zone: zone, otherZones: alsoZones, history: segmentHistory,
            blocks: blocks
        )
        .evaluate(limits: limits, now: t)
        let accountPart = AccountState(account: account, finishes: accountFinishes, blocks: blocks)
            .evaluate(limits: limits, now: t)
        return combine(segmentPart + accountPart, now: t)
    }

    /// The account's own budgets at `now` (I3 and the account's blocks), whatever the segment.
    public static func accountBudgets(
        account: String, history: [Attempt], blocks: [LearnedBlock], limits: Limits, now: Date
    ) -> [RuleBudget] {
        let t = now.timeIntervalSince1970
        let finishes = history.filter { $0.account == account && $0.outcome.countsTowardAccount }.map {
            $0.finish(now: t)
        }
        return AccountState(account: account, finishes: finishes, blocks: blocks).evaluate(limits: limits, now: t)
    }

    /// Folds per-rule budgets into a decision (the largest earliest instant wins).
    static func combine(_ budgets: [RuleBudget], now: Double) -> Decision {
        let sorted = budgets.sorted { $0.rule < $1.rule }
        if sorted.contains(where: { $0.earliest == nil }) {
            return Decision(verdict: .never, binding: sorted.filter { $0.earliest == nil }.map(\.rule), budgets: sorted)
        }
        let latest = sorted.map { $0.earliest!.timeIntervalSince1970 }.max() ?? now
        if latest <= now { return Decision(verdict: .allowed, binding: [], budgets: sorted) }
        let binding = sorted.filter { $0.earliest!.timeIntervalSince1970 == latest }.map(\.rule)
        return Decision(verdict: .notBefore(Date(timeIntervalSince1970: latest)), binding: binding, budgets: sorted)
    }
}

/// Counting for one segment: I1, I2 and the segment's blocks (I5).
struct SegmentState {
    let account: String
    let segment: String
    let zone: ZoneRules
    let otherZones: [ZoneRules]
    let history: [Attempt]
    let blocks: [LearnedBlock]

    /// Requests within this many seconds of a refresh name zones that may govern its count.
    static let zoneNeighbourhood: Double = 48 * 3600

    func evaluate(limits: Limits, now t: Double) -> [RuleBudget] {
        let m = limits.safetyMarginSeconds
        // The candidate's zone, and any other zone the segment may be sent with.
        var candidateZones = [zone]
        for other in otherZones where !candidateZones.contains(other) { candidateZones.append(other) }
        // A request with an unknown zone adds none (I1): the candidate's zones are always in Z(r).
        let requests = history.filter { $0.outcome.countsTowardAccount }.compactMap { attempt in
            attempt.zone.map { (zone: $0, finish: attempt.finish(now: t)) }
        }
        let finishes = history.filter { $0.outcome.countsAsRefresh }.map { $0.finish(now: t) }
        // I1: each counting refresh stops counting once the local day of its finish has ended in
        // every zone of Z(r), + m.
        let expiries = finishes.map { f in
            var zones = candidateZones
            for request in requests
            where abs(request.finish - f) <= Self.zoneNeighbourhood && !zones.contains(request.zone) {
                zones.append(request.zone)
            }
            return zones.map { Double($0.dayWindow(containing: Int64(f.rounded(.down))).end) }.max()! + m
        }
        let nextMidnight =
            candidateZones.map { Double($0.dayWindow(containing: Int64(t.rounded(.down))).end) }.max()! + m
        let daily = CountingRule.evaluate(
            rule: .segmentDaily, expiries: expiries, limit: limits.segmentDaily, now: t, idleReset: nextMidnight)
        // I2: the interval runs from the last counting refresh's finish.
        let intervalEnd = finishes.max().map { $0 + limits.segmentIntervalSeconds + m }
        let inInterval = intervalEnd.map { $0 > t } ?? false
        let interval = RuleBudget(
            rule: .segmentInterval, used: inInterval ? 1 : 0, limit: 1,
            resetsAt: inInterval ? intervalEnd.map(Date.init(timeIntervalSince1970:)) : nil,
            earliest: Date(timeIntervalSince1970: max(t, intervalEnd ?? t)))
        var result = [daily, interval]
        if let block = blockUntil(margin: m, now: t) { result.append(block) }
        return result
    }

    private func blockUntil(margin: Double, now t: Double) -> RuleBudget? {
        let scope = LearnedBlock.Scope.segment(account: account, segment: segment)
        return LearnedBlockRule.budget(blocks.filter { $0.scope == scope }, margin: margin, now: t)
    }
}

/// Counting for one account: I3 and the account's blocks (I5).
struct AccountState {
    let account: String
    /// Finish instants of the account's requests (every outcome but not_sent).
    let finishes: [Double]
    let blocks: [LearnedBlock]

    func evaluate(limits: Limits, now t: Double) -> [RuleBudget] {
        let m = limits.safetyMarginSeconds
        let expiries = finishes.map { Double(ZoneRules.utcDay(containing: Int64($0.rounded(.down))).end) + m }
        let nextMidnight = Double(ZoneRules.utcDay(containing: Int64(t.rounded(.down))).end) + m
        var result = [
            CountingRule.evaluate(
                rule: .accountDaily, expiries: expiries, limit: limits.accountDaily, now: t, idleReset: nextMidnight)
        ]
        let scoped = blocks.filter { $0.scope == .account(account) }
        if let block = LearnedBlockRule.budget(scoped, margin: m, now: t) { result.append(block) }
        return result
    }
}

/// "Fewer than `limit` items still count", where each item counts until its expiry.
enum CountingRule {
    static func evaluate(rule: Rule, expiries: [Double], limit: Int, now t: Double, idleReset: Double) -> RuleBudget {
        evaluate(
            rule: rule, sortedLiveExpiries: expiries.filter { $0 > t }.sorted()[...], limit: limit, now: t,
            idleReset: idleReset)
    }

    /// The same, for expiries already filtered to those after t and sorted ascending.
    static func evaluate(
        rule: Rule, sortedLiveExpiries live: ArraySlice<Double>, limit: Int, now t: Double, idleReset: Double
    ) -> RuleBudget {
        let used = live.count
        let resetsAt = Date(timeIntervalSince1970: live.first ?? idleReset)
        guard limit > 0 else {
            return RuleBudget(rule: rule, used: used, limit: limit, resetsAt: resetsAt, earliest: nil)
        }
        // Allowed once at most limit - 1 still count: after the (used - limit + 1)-th expiry.
        let earliest = used < limit ? t : live[live.startIndex + used - limit]
        return RuleBudget(
            rule: rule, used: used, limit: limit, resetsAt: resetsAt, earliest: Date(timeIntervalSince1970: earliest))
    }
}

/// I5: blocks learned from SendGrid.
enum LearnedBlockRule {
    static func budget(_ blocks: [LearnedBlock], margin: Double, now t: Double) -> RuleBudget? {
        guard let until = blocks.map({ $0.until.timeIntervalSince1970 + margin }).max(), until > t else { return nil }
        return RuleBudget(
            rule: .learnedBlock, used: 1, limit: 1, resetsAt: Date(timeIntervalSince1970: until),
            earliest: Date(timeIntervalSince1970: until))
    }
}
