import Foundation
import RefreshCore
import TZData
import Testing

// Day windows used below (from DayWindowTests, checked against Python's zoneinfo):
//   America/Santiago 2024-09-08 starts 1725768000 (01:00, 00:00 does not exist), ends 1725850800
//   Atlantic/Azores  2024-10-27 starts 1729987200 (midnight happens twice: 25 h), ends 1730077200
//   Australia/Lord_Howe 2024-10-06 starts 1728135000, ends 1728219600 (23.5 h)
//   Asia/Kathmandu   2024-06-01 starts 1717179300 (+05:45), ends 1717265700

private func at(_ seconds: Double) -> Date { Date(timeIntervalSince1970: seconds) }

@Suite("Pre-flight reconciliation")
struct ReconciliationTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let zone: String
        let now: Double
        let reading: SegmentReading
        let attempts: [Reconciliation.Known]
        let expected: Reconciliation
        var testDescription: String { name }
    }

    static func known(_ id: Int64, _ outcome: AttemptOutcome, _ zone: String, _ start: Double, _ end: Double? = nil) -> Reconciliation.Known {
        Reconciliation.Known(id: id, outcome: outcome, timeZone: zone, startedAt: at(start), finishedAt: end.map(at))
    }

    static let santiago = "America/Santiago"
    static let dayStart = 1725768000.0  // Santiago 2024-09-08 01:00 -03
    static let now = dayStart + 5 * 3600

    static let cases: [Case] = [
        Case(name: "same count", zone: santiago, now: now, reading: SegmentReading(refreshesUsed: 1),
             attempts: [known(1, .accepted, santiago, now - 7200, now - 7199)], expected: .agrees),
        Case(name: "nothing on either side", zone: santiago, now: now, reading: SegmentReading(refreshesUsed: 0), attempts: [], expected: .agrees),
        Case(name: "web UI refresh: external at last_refreshed_at", zone: santiago, now: now,
             reading: SegmentReading(refreshesUsed: 1, lastRefreshedAt: at(now - 1800)), attempts: [], expected: .external(count: 1, at: at(now - 1800))),
        Case(name: "no last_refreshed_at: external now (blocks longest)", zone: santiago, now: now,
             reading: SegmentReading(refreshesUsed: 2), attempts: [], expected: .external(count: 2, at: at(now))),
        Case(name: "last_refreshed_at yesterday: external at the local day's start", zone: santiago, now: now,
             reading: SegmentReading(refreshesUsed: 1, lastRefreshedAt: at(dayStart - 600)), attempts: [], expected: .external(count: 1, at: at(dayStart))),
        Case(name: "last_refreshed_at ahead of our clock: external now", zone: santiago, now: now,
             reading: SegmentReading(refreshesUsed: 1, lastRefreshedAt: at(now + 900)), attempts: [], expected: .external(count: 1, at: at(now))),
        Case(name: "yesterday's refresh does not count today (day starts 01:00)", zone: santiago, now: now,
             reading: SegmentReading(refreshesUsed: 1, lastRefreshedAt: at(now - 60)),
             attempts: [known(1, .accepted, santiago, dayStart - 1200, dayStart - 1)], expected: .external(count: 1, at: at(now - 60))),
        Case(name: "a refresh finished at the day's first second counts", zone: santiago, now: now,
             reading: SegmentReading(refreshesUsed: 1), attempts: [known(1, .accepted, santiago, dayStart - 1, dayStart)], expected: .agrees),
        Case(name: "only refreshes count: 429, not_sent, rejected, unrecorded do not", zone: santiago, now: now,
             reading: SegmentReading(refreshesUsed: 1, lastRefreshedAt: at(now - 100)),
             attempts: [known(1, .rateLimited, santiago, now - 900, now - 899), known(2, .notSent, santiago, now - 800, now - 800),
                        known(3, .rejected, santiago, now - 700, now - 699), known(4, .unrecorded, santiago, now - 3000, now - 2990)],
             expected: .external(count: 1, at: at(now - 100))),
        Case(name: "reserved, uncertain and dry-run count", zone: santiago, now: now, reading: SegmentReading(refreshesUsed: 3),
             attempts: [known(1, .reserved, santiago, now - 10), known(2, .uncertain, santiago, now - 9000, now - 8970), known(3, .dryRun, santiago, now - 5000, now - 5000)],
             expected: .agrees),
        Case(name: "25 h day: a refresh 24.5 h after midnight is still today", zone: "Atlantic/Azores", now: 1729987200 + 24.9 * 3600,
             reading: SegmentReading(refreshesUsed: 1), attempts: [known(1, .accepted, "Atlantic/Azores", 1729987200 + 24.5 * 3600, 1729987200 + 24.5 * 3600)],
             expected: .agrees),
        Case(name: "+05:45: the day starts at 18:15 UTC", zone: "Asia/Kathmandu", now: 1717179300 + 600,
             reading: SegmentReading(refreshesUsed: 0), attempts: [known(1, .accepted, "Asia/Kathmandu", 1717179300 - 60, 1717179300 - 59)],
             expected: .agrees),
        Case(name: "unanswered and not recorded: freed once 5 min old", zone: santiago, now: now, reading: SegmentReading(refreshesUsed: 0),
             attempts: [known(7, .uncertain, santiago, now - 400, now - 301)], expected: .unrecorded(attemptIDs: [7])),
        Case(name: "unanswered, too recent: SendGrid's counter may lag", zone: santiago, now: now, reading: SegmentReading(refreshesUsed: 0),
             attempts: [known(7, .uncertain, santiago, now - 400, now - 299)], expected: .agrees),
        Case(name: "oldest unanswered freed first, at most the difference", zone: santiago, now: now, reading: SegmentReading(refreshesUsed: 1),
             attempts: [known(9, .uncertain, santiago, now - 4000, now - 3970), known(8, .uncertain, santiago, now - 8000, now - 7970)],
             expected: .unrecorded(attemptIDs: [8])),
        Case(name: "an accepted refresh is never freed", zone: santiago, now: now, reading: SegmentReading(refreshesUsed: 0),
             attempts: [known(1, .accepted, santiago, now - 8000, now - 7999)], expected: .agrees),
        Case(name: "two zones used: the sides may count different days, nothing freed", zone: santiago, now: now, reading: SegmentReading(refreshesUsed: 0),
             attempts: [known(1, .uncertain, santiago, now - 8000, now - 7970), known(2, .accepted, "UTC", now - 90000, now - 90000)], expected: .agrees),
    ]

    @Test(arguments: cases)
    func reconcile(_ c: Case) {
        #expect(Reconciliation.reconcile(reading: c.reading, attempts: c.attempts, zone: rules(c.zone), now: at(c.now)) == c.expected)
    }
}

@Suite("What a 429 teaches")
struct RateLimitLessonTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        var zone = "America/Santiago"
        var now = 1725768000.0 + 5 * 3600  // Santiago 2024-09-08 06:00 -03 (09:00 UTC)
        var header: String? = nil
        var reading: SegmentReading? = nil
        var streak = 0
        var previous: String? = nil
        let segment: Double
        var account: Double? = nil
        var newStreak = 0
        var testDescription: String { name }
    }

    static let now = 1725768000.0 + 5 * 3600
    static let localMidnight = 1725850800.0  // Santiago 2024-09-09 00:00 -03
    static let utcMidnight = 1725840000.0  // 2024-09-09 00:00 UTC

    static let cases: [Case] = [
        Case(name: "X-RateLimit-Reset in seconds", header: "120", segment: now + 120),
        Case(name: "X-RateLimit-Reset as a Unix time", header: "1725800000", segment: 1725800000),
        Case(name: "X-RateLimit-Reset with spaces", header: " 90 ", segment: now + 90),
        Case(name: "garbage header: 1 h", header: "soon", segment: now + 3600, newStreak: 1),
        Case(name: "infinite header ignored: 1 h", header: "inf", segment: now + 3600, newStreak: 1),
        Case(name: "zero header ignored: 1 h", header: "0", segment: now + 3600, newStreak: 1),
        Case(name: "negative header ignored: 1 h", header: "-30", segment: now + 3600, newStreak: 1),
        Case(name: "nothing said, first time: 1 h", segment: now + 3600, newStreak: 1),
        Case(name: "nothing said again: the next local midnight (after a 23 h day)", streak: 1, segment: localMidnight, newStreak: 2),
        Case(name: "nothing said, 25 h day: midnight comes 25 h after the last", zone: "Atlantic/Azores", now: 1729987200 + 3600, streak: 1,
             segment: 1730077200, newStreak: 2),
        Case(name: "the day's refreshes used: next local midnight", reading: SegmentReading(refreshesUsed: 2, maxRefreshes: 2), segment: localMidnight),
        Case(name: "max_refreshes missing: 2 assumed", reading: SegmentReading(refreshesUsed: 2), segment: localMidnight),
        Case(name: "used up and a shorter header: the later wins", header: "60", reading: SegmentReading(refreshesUsed: 2), segment: localMidnight),
        Case(name: "used up and a later header: the later wins", header: "200000", reading: SegmentReading(refreshesUsed: 2), segment: now + 200000),
        Case(name: "refreshed 20 min ago: last + 1 h", reading: SegmentReading(refreshesUsed: 1, lastRefreshedAt: at(now - 1200)), segment: now + 2400),
        Case(name: "segment looks free: the account's day is used up elsewhere", reading: SegmentReading(refreshesUsed: 1, lastRefreshedAt: at(now - 7200)),
             segment: now + 3600, account: utcMidnight, newStreak: 1),
        Case(name: "max_refreshes 3, 2 used, long ago: free", reading: SegmentReading(refreshesUsed: 2, maxRefreshes: 3, lastRefreshedAt: at(now - 9000)),
             segment: now + 3600, account: utcMidnight, newStreak: 1),
        Case(name: "a second segment refused in a row: account blocked", header: "120", previous: "other", segment: now + 120, account: utcMidnight),
        Case(name: "the same segment again: no account block", header: "120", previous: "seg", segment: now + 120),
        Case(name: "Lord Howe: UTC midnight for the account, local for the segment", zone: "Australia/Lord_Howe", now: 1728135000 + 600,
             reading: SegmentReading(refreshesUsed: 2), previous: "other", segment: 1728219600, account: 1728172800),
    ]

    @Test(arguments: cases)
    func learn(_ c: Case) {
        let lesson = RateLimitLesson.learn(
            resetHeader: c.header, reading: c.reading, segment: "seg", zone: rules(c.zone), at: at(c.now), uninformativeStreak: c.streak,
            previousRateLimitedSegment: c.previous)
        #expect(lesson.segmentBlockedUntil == at(c.segment), "\(lesson.reasons)")
        #expect(lesson.accountBlockedUntil == c.account.map(at))
        #expect(lesson.uninformativeStreak == c.newStreak)
        #expect(!lesson.reasons.isEmpty)
        // Never less than the shortest rule a 429 can stand for here, never before now.
        #expect(lesson.segmentBlockedUntil > at(c.now))
    }
}
