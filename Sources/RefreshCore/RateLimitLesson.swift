// A refusal blocks at least until the latest instant any evidence names.

import Foundation
import TZData

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
        resetHeader: String?, reading: SegmentReading?, segment: String, zone: ZoneRules, at t: Date,
        uninformativeStreak: Int,
        previousRateLimitedSegment: String?
    ) -> RateLimitLesson {
        let second = Int64(t.timeIntervalSince1970.rounded(.down))
        var until: Date?
        var reasons: [String] = []
        func extend(to instant: Date, _ reason: String) {
            until = max(until ?? instant, instant)
            reasons.append(reason)
        }
        if let text = resetHeader?.trimmingCharacters(in: .whitespaces), let value = Double(text), value.isFinite,
            value > 0
        {
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
                extend(
                    to: Date(timeIntervalSince1970: Double(zone.dayWindow(containing: second).end)),
                    "refreshes_used \(reading.refreshesUsed)")
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
                extend(
                    to: Date(timeIntervalSince1970: Double(zone.dayWindow(containing: second).end)),
                    "no reset given again: next local midnight")
            }
        }
        let accountExhausted = segmentLooksFree || (previousRateLimitedSegment.map { $0 != segment } ?? false)
        return RateLimitLesson(
            segmentBlockedUntil: until!,
            accountBlockedUntil: accountExhausted
                ? Date(timeIntervalSince1970: Double(ZoneRules.utcDay(containing: second).end)) : nil,
            reasons: reasons, uninformativeStreak: streak)
    }
}

/// What SendGrid's `X-RateLimit-*` headers on an accepted refresh say about the account's day,
/// used like a pre-flight (I5): SendGrid counting more requests today than the ledger does means
/// requests made elsewhere (another tool, the web UI), which count for I3 too; nothing left means
/// the account's day is over. Only headers that plausibly describe the refresh endpoint's daily
/// quota count (`X-RateLimit-Limit` present and at most SendGrid's documented 10 per account per
/// day); a generic API rate limit (hundreds per minute), garbled or absent headers change nothing.
public struct QuotaReport: Sendable, Equatable {
    public var limit: Int
    public var remaining: Int
    public var resetHeader: String?

    /// - Parameter headers: lower-cased names.
    public init?(headers: [String: String], documentedDailyLimit: Int = 10) {
        guard let limitText = headers["x-ratelimit-limit"],
            let limit = Int(limitText.trimmingCharacters(in: .whitespaces)),
            let remainingText = headers["x-ratelimit-remaining"],
            let remaining = Int(remainingText.trimmingCharacters(in: .whitespaces)),
            (1...documentedDailyLimit).contains(limit), (0...limit).contains(remaining)
        else { return nil }
        self.limit = limit
        self.remaining = remaining
        resetHeader = headers["x-ratelimit-reset"]
    }

    /// What the report teaches.
    public struct Lesson: Sendable, Equatable {
        /// Requests SendGrid counts today that the ledger does not: to record as external.
        public var requestsElsewhere: Int
        /// Set when nothing is left: no request for the account before this instant.
        public var accountBlockedUntil: Date?
        public var reason: String

        public init(requestsElsewhere: Int, accountBlockedUntil: Date?, reason: String) {
            self.requestsElsewhere = requestsElsewhere
            self.accountBlockedUntil = accountBlockedUntil
            self.reason = reason
        }
    }

    /// - Parameters:
    ///   - ledgerUsed: requests the ledger counts for the account's UTC day, this one included.
    ///   - t: when the answer came.
    public func lesson(ledgerUsed: Int, at t: Date) -> Lesson {
        let used = limit - remaining
        var blocked: Date?
        if remaining == 0 {
            // The later of the day's documented end (00:00 UTC) and the header's instant, read both
            // ways it may be meant (seconds from now below 10^9, else a Unix time).
            var until = Date(
                timeIntervalSince1970: Double(
                    ZoneRules.utcDay(containing: Int64(t.timeIntervalSince1970.rounded(.down))).end))
            if let text = resetHeader?.trimmingCharacters(in: .whitespaces), let value = Double(text), value.isFinite,
                value > 0
            {
                until = max(until, value < 1e9 ? t.addingTimeInterval(value) : Date(timeIntervalSince1970: value))
            }
            blocked = until
        }
        return Lesson(
            requestsElsewhere: max(0, used - ledgerUsed), accountBlockedUntil: blocked,
            reason: "X-RateLimit-Limit \(limit), X-RateLimit-Remaining \(remaining)"
                + (resetHeader.map { ", X-RateLimit-Reset \($0)" } ?? ""))
    }
}
