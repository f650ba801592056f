// What SendGrid tells refreshd besides "accepted" is turned into decisions here, as values, so the
// dispatcher only carries them out. Everything chooses the reading that cannot cause a 429:
// refreshes SendGrid counts are counted, as late as SendGrid's own clock allows.

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
    /// Requests that got no answer and that SendGrid shows it did record (its count equals the
    /// ledger's with them): they are accepted refreshes, and the jobs they carried are sent.
    case confirmed(attemptIDs: [Int64])

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
    /// - The same, with unanswered attempts among today's: SendGrid counted them (same zone
    ///   condition); they are confirmed, so their jobs are not sent a second time.
    public static func reconcile(
        reading: SegmentReading, attempts: [Known], zone: ZoneRules, now t: Date,
        unrecordedAfter: TimeInterval = Reconciliation.unrecordedAfter
    ) -> Reconciliation {
        let dayStart = Date(
            timeIntervalSince1970: Double(
                zone.dayWindow(containing: Int64(t.timeIntervalSince1970.rounded(.down))).start))
        let today = attempts.filter { $0.outcome.countsAsRefresh && ($0.finishedAt ?? $0.startedAt) >= dayStart }
        if reading.refreshesUsed > today.count {
            let at = min(t, max(dayStart, reading.lastRefreshedAt ?? t))
            return .external(count: reading.refreshesUsed - today.count, at: at)
        }
        let sameZone = attempts.allSatisfy { $0.timeZone == zone.name }
        if reading.refreshesUsed == today.count, sameZone {
            let unanswered = today.filter { $0.outcome == .uncertain }.sorted {
                ($0.startedAt, $0.id) < ($1.startedAt, $1.id)
            }
            if !unanswered.isEmpty { return .confirmed(attemptIDs: unanswered.map(\.id)) }
        }
        if reading.refreshesUsed < today.count, sameZone {
            let freeable = today.filter {
                $0.outcome == .uncertain && ($0.finishedAt ?? $0.startedAt) <= t.addingTimeInterval(-unrecordedAfter)
            }
            .sorted { ($0.startedAt, $0.id) < ($1.startedAt, $1.id) }
            let n = min(today.count - reading.refreshesUsed, freeable.count)
            if n > 0 { return .unrecorded(attemptIDs: freeable.prefix(n).map(\.id)) }
        }
        return .agrees
    }
}
