// What SendGrid tells refreshd besides "accepted": a segment read (pre-flight) and a 429. Both are
// turned into decisions here, as values, so the dispatcher only carries them out.
//
// Everything chooses the reading that cannot cause a 429: refreshes SendGrid counts are counted,
// as late as SendGrid's own clock allows; a refusal blocks at least until the latest instant any
// evidence names.

import Foundation
import TZData

/// A segment as SendGrid shows it (`GET /v3/marketing/segments/2.0/{segment_id}`).
public struct SegmentReading: Sendable, Equatable {
    /// Manual refreshes today in the segment's zone.
    public var refreshesUsed: Int
    public var maxRefreshes: Int?
    /// Moves with manual and automatic refreshes.
    public var lastRefreshedAt: Date?

    public init(refreshesUsed: Int, maxRefreshes: Int? = nil, lastRefreshedAt: Date? = nil) {
        self.refreshesUsed = refreshesUsed
        self.maxRefreshes = maxRefreshes
        self.lastRefreshedAt = lastRefreshedAt
    }
}

/// What a pre-flight read means against the ledger's own count of today's refreshes.
public enum Reconciliation: Sendable, Equatable {
    /// Both count the same: the rules decide on the ledger alone.
    case agrees
    /// SendGrid counts refreshes refreshd did not send (web UI, another tool): record `count`
    /// external refreshes at `at` (SendGrid's last_refreshed_at, kept inside today and not in the future).
    case external(count: Int, at: Date)
    /// Requests that got no answer and that SendGrid shows it did not record: they stop counting.
    case unrecorded(attemptIDs: [Int64])

    /// One of the segment's attempts in the ledger.
    public struct Known: Sendable, Equatable {
        public var id: Int64
        public var outcome: AttemptOutcome
        public var timeZone: String
        public var startedAt: Date
        public var finishedAt: Date?

        public init(id: Int64, outcome: AttemptOutcome, timeZone: String, startedAt: Date, finishedAt: Date?) {
            self.id = id
            self.outcome = outcome
            self.timeZone = timeZone
            self.startedAt = startedAt
            self.finishedAt = finishedAt
        }
    }

    /// An unanswered request is only taken as unrecorded this long after it ended: SendGrid's
    /// counter may lag the request.
    public static let unrecordedAfter: TimeInterval = 300

    /// Compares `reading` with `attempts` (the segment's recent attempts, any zone) on today's
    /// local day in `zone`, the zone the next refresh would use.
    ///
    /// - More on SendGrid's side: the difference becomes external refreshes.
    /// - Fewer: the oldest unanswered (`uncertain`) attempts at least `unrecordedAfter` old are
    ///   freed, at most the difference, and only when every known attempt used `zone` (with two
    ///   zones the two sides may be counting different days).
    public static func reconcile(
        reading: SegmentReading, attempts: [Known], zone: ZoneRules, now t: Date, unrecordedAfter: TimeInterval = Reconciliation.unrecordedAfter
    ) -> Reconciliation {
        let dayStart = Date(timeIntervalSince1970: Double(zone.dayWindow(containing: Int64(t.timeIntervalSince1970.rounded(.down))).start))
        let today = attempts.filter { $0.outcome.countsAsRefresh && ($0.finishedAt ?? $0.startedAt) >= dayStart }
        if reading.refreshesUsed > today.count {
            let at = min(t, max(dayStart, reading.lastRefreshedAt ?? t))
            return .external(count: reading.refreshesUsed - today.count, at: at)
        }
        if reading.refreshesUsed < today.count, attempts.allSatisfy({ $0.timeZone == zone.name }) {
            let freeable = today.filter { $0.outcome == .uncertain && ($0.finishedAt ?? $0.startedAt) <= t.addingTimeInterval(-unrecordedAfter) }
                .sorted { ($0.startedAt, $0.id) < ($1.startedAt, $1.id) }
            let n = min(today.count - reading.refreshesUsed, freeable.count)
            if n > 0 { return .unrecorded(attemptIDs: freeable.prefix(n).map(\.id)) }
        }
        return .agrees
    }
}

/// What a 429 teaches: how long the segment is blocked, and whether the account's day is used up.
public struct RateLimitLesson: Sendable, Equatable {
    /// The segment gets nothing before this instant.
    public var segmentBlockedUntil: Date
    /// Set when the account's day seems exhausted elsewhere: nothing for the account before 00:00 UTC.
    public var accountBlockedUntil: Date?
    /// Why, for the ledger and the log ("X-RateLimit-Reset 1700000000", "refreshes_used 2", ...).
    public var reasons: [String]
    /// 429s in a row for this segment that said nothing about when (carry it to the next 429).
    public var uninformativeStreak: Int

    public init(segmentBlockedUntil: Date, accountBlockedUntil: Date?, reasons: [String], uninformativeStreak: Int) {
        self.segmentBlockedUntil = segmentBlockedUntil
        self.accountBlockedUntil = accountBlockedUntil
        self.reasons = reasons
        self.uninformativeStreak = uninformativeStreak
    }

    /// - Parameters:
    ///   - resetHeader: X-RateLimit-Reset as sent, if any: seconds from now when below 10^9, else a
    ///     Unix time (the docs allow both readings). An instant not in the future is ignored.
    ///   - reading: a pre-flight read made after the 429, if one could be made.
    ///   - uninformativeStreak: this segment's 429s in a row so far that named no instant.
    ///   - previousRateLimitedSegment: the segment of the last 429 with no success since.
    ///
    /// The segment is blocked until the latest instant the header and the reading name (the next
    /// local midnight when SendGrid counts the day's refreshes used, last_refreshed_at + 1 h when
    /// that is less than an hour ago). Without any: 1 h, then, on the next uninformative 429 in
    /// a row, the next local midnight. The account is blocked until 00:00 UTC when the segment
    /// itself looks free, or when a different segment was refused just before.
    public static func learn(
        resetHeader: String?, reading: SegmentReading?, segment: String, zone: ZoneRules, at t: Date, uninformativeStreak: Int,
        previousRateLimitedSegment: String?
    ) -> RateLimitLesson {
        let second = Int64(t.timeIntervalSince1970.rounded(.down))
        var until: Date?
        var reasons: [String] = []
        func extend(to instant: Date, _ reason: String) {
            until = max(until ?? instant, instant)
            reasons.append(reason)
        }
        if let text = resetHeader?.trimmingCharacters(in: .whitespaces), let value = Double(text), value.isFinite, value > 0 {
            let instant = value < 1e9 ? t.addingTimeInterval(value) : Date(timeIntervalSince1970: value)
            // An instant already past (clocks apart) says nothing: retrying at once would only
            // spend the account's day on more 429s.
            if instant > t { extend(to: instant, "X-RateLimit-Reset \(text)") }
        }
        var segmentLooksFree = false
        if let reading {
            // Both can hold: the day used up, the last refresh minutes before midnight.
            let usedUp = reading.refreshesUsed >= (reading.maxRefreshes ?? 2)
            if usedUp {
                extend(to: Date(timeIntervalSince1970: Double(zone.dayWindow(containing: second).end)), "refreshes_used \(reading.refreshesUsed)")
            }
            let recent = reading.lastRefreshedAt.map { t.timeIntervalSince($0) < 3600 } ?? false
            if let last = reading.lastRefreshedAt, recent {
                extend(to: last.addingTimeInterval(3600), "last_refreshed_at \(Timestamp.rfc3339(last))")
            }
            segmentLooksFree = !usedUp && !recent
        }
        var streak = uninformativeStreak
        if until == nil {
            streak += 1
            if streak <= 1 {
                extend(to: t.addingTimeInterval(3600), "no reset given: 1 h")
            } else {
                extend(to: Date(timeIntervalSince1970: Double(zone.dayWindow(containing: second).end)), "no reset given again: next local midnight")
            }
        }
        let accountExhausted = segmentLooksFree || (previousRateLimitedSegment.map { $0 != segment } ?? false)
        return RateLimitLesson(
            segmentBlockedUntil: until!,
            accountBlockedUntil: accountExhausted ? Date(timeIntervalSince1970: Double(ZoneRules.utcDay(containing: second).end)) : nil,
            reasons: reasons, uninformativeStreak: streak)
    }
}

/// What SendGrid's HTTP status for a refresh request means (docs/dispatcher.md, "What each answer does").
public enum AnswerClass: String, Sendable, Equatable, CaseIterable {
    /// 2xx: the refresh was accepted.
    case accepted
    /// 400, 404, 405, 413, 415, 422: the request itself is wrong; resending cannot help.
    case rejected
    /// 401: the key was refused; the account pauses until a reload.
    case unauthorized
    /// 403: the plan or the key's scopes lack the feature; the account pauses.
    case forbidden
    /// 429.
    case rateLimited
    /// Anything else (5xx, unexpected statuses): SendGrid may have recorded it.
    case unclear

    public init(status: Int) {
        switch status {
        case 200..<300: self = .accepted
        case 400, 404, 405, 413, 415, 422: self = .rejected
        case 401: self = .unauthorized
        case 403: self = .forbidden
        case 429: self = .rateLimited
        default: self = .unclear
        }
    }
}

/// How long to wait before trying a job again after a failure that was not a refusal.
public enum Backoff {
    /// After the `tries`-th request with no clear answer (5xx, timeout, reset): 30 s doubling, at most 30 min.
    public static func unclear(tries: Int) -> TimeInterval { doubling(from: 30, upTo: 1800, times: tries) }

    /// After the `failures`-th failure in a row before a request was written (refused, DNS, TLS):
    /// 5 s doubling, at most 5 min.
    public static func notSent(failures: Int) -> TimeInterval { doubling(from: 5, upTo: 300, times: failures) }

    static func doubling(from first: TimeInterval, upTo cap: TimeInterval, times: Int) -> TimeInterval {
        guard times > 1 else { return first }
        // Past 2^20 the cap has long been reached; avoid overflowing pow for absurd counts.
        return min(first * pow(2, Double(min(times - 1, 20))), cap)
    }
}
