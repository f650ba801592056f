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

    static func known(_ id: Int64, _ outcome: AttemptOutcome, _ zone: String, _ start: Double, _ end: Double? = nil)
        -> Reconciliation.Known
    {
        Reconciliation.Known(id: id, outcome: outcome, timeZone: zone, startedAt: at(start), finishedAt: end.map(at))
    }

    static let santiago = "America/Santiago"
    static let dayStart = 1725768000.0  // Santiago 2024-09-08 01:00 -03
    static let now = dayStart + 5 * 3600

    static let cases: [Case] = [
        Case(
            name: "same count", zone: santiago, now: now, reading: SegmentReading(refreshesUsed: 1),
            attempts: [known(1, .accepted, santiago, now - 7200, now - 7199)], expected: .agrees),
        Case(
            name: "nothing on either side", zone: santiago, now: now, reading: SegmentReading(refreshesUsed: 0),
            attempts: [], expected: .agrees),
        Case(
            name: "web UI refresh: external at last_refreshed_at", zone: santiago, now: now,
            reading: SegmentReading(refreshesUsed: 1, lastRefreshedAt: at(now - 1800)), attempts: [],
            expected: .external(count: 1, at: at(now - 1800))),
        Case(
            name: "no last_refreshed_at: external now (blocks longest)", zone: santiago, now: now,
            reading: SegmentReading(refreshesUsed: 2), attempts: [], expected: .external(count: 2, at: at(now))),
        Case(
            name: "last_refreshed_at yesterday: external at the local day's start", zone: santiago, now: now,
            reading: SegmentReading(refreshesUsed: 1, lastRefreshedAt: at(dayStart - 600)), attempts: [],
            expected: .external(count: 1, at: at(dayStart))),
        Case(
            name: "last_refreshed_at ahead of our clock: external now", zone: santiago, now: now,
            reading: SegmentReading(refreshesUsed: 1, lastRefreshedAt: at(now + 900)), attempts: [],
            expected: .external(count: 1, at: at(now))),
        Case(
            name: "yesterday's refresh does not count today (day starts 01:00)", zone: santiago, now: now,
            reading: SegmentReading(refreshesUsed: 1, lastRefreshedAt: at(now - 60)),
            attempts: [known(1, .accepted, santiago, dayStart - 1200, dayStart - 1)],
            expected: .external(count: 1, at: at(now - 60))),
        Case(
            name: "a refresh finished at the day's first second counts", zone: santiago, now: now,
            reading: SegmentReading(refreshesUsed: 1),
            attempts: [known(1, .accepted, santiago, dayStart - 1, dayStart)], expected: .agrees),
        Case(
            name: "only refreshes count: 429, not_sent, rejected, unrecorded do not", zone: santiago, now: now,
            reading: SegmentReading(refreshesUsed: 1, lastRefreshedAt: at(now - 100)),
            attempts: [
                known(1, .rateLimited, santiago, now - 900, now - 899),
                known(2, .notSent, santiago, now - 800, now - 800),
                known(3, .rejected, santiago, now - 700, now - 699),
                known(4, .unrecorded, santiago, now - 3000, now - 2990),
            ],
            expected: .external(count: 1, at: at(now - 100))),
        Case(
            name: "reserved, uncertain and dry-run count", zone: santiago, now: now,
            reading: SegmentReading(refreshesUsed: 3),
            attempts: [
                known(1, .reserved, santiago, now - 10), known(2, .uncertain, santiago, now - 9000, now - 8970),
                known(3, .dryRun, santiago, now - 5000, now - 5000),
            ],
            expected: .confirmed(attemptIDs: [2])),
        Case(
            name: "SendGrid's count includes an unanswered request: it is confirmed (its jobs are not sent again)",
            zone: santiago,
            now: now, reading: SegmentReading(refreshesUsed: 2),
            attempts: [
                known(4, .accepted, santiago, now - 9000, now - 8999),
                known(5, .uncertain, santiago, now - 5000, now - 4970),
            ],
            expected: .confirmed(attemptIDs: [5])),
        Case(
            name: "an unanswered request with two zones used is never confirmed", zone: santiago, now: now,
            reading: SegmentReading(refreshesUsed: 1),
            attempts: [
                known(5, .uncertain, santiago, now - 5000, now - 4970),
                known(6, .rateLimited, "UTC", now - 90000, now - 90000),
            ],
            expected: .agrees),
        Case(
            name: "25 h day: a refresh 24.5 h after midnight is still today", zone: "Atlantic/Azores",
            now: 1729987200 + 24.9 * 3600,
            reading: SegmentReading(refreshesUsed: 1),
            attempts: [known(1, .accepted, "Atlantic/Azores", 1729987200 + 24.5 * 3600, 1729987200 + 24.5 * 3600)],
            expected: .agrees),
        Case(
            name: "+05:45: the day starts at 18:15 UTC", zone: "Asia/Kathmandu", now: 1717179300 + 600,
            reading: SegmentReading(refreshesUsed: 0),
            attempts: [known(1, .accepted, "Asia/Kathmandu", 1717179300 - 60, 1717179300 - 59)],
            expected: .agrees),
        Case(
            name: "unanswered and not recorded: freed once 5 min old", zone: santiago, now: now,
            reading: SegmentReading(refreshesUsed: 0),
            attempts: [known(7, .uncertain, santiago, now - 400, now - 301)], expected: .unrecorded(attemptIDs: [7])),
        Case(
            name: "unanswered, too recent: SendGrid's counter may lag", zone: santiago, now: now,
            reading: SegmentReading(refreshesUsed: 0),
            attempts: [known(7, .uncertain, santiago, now - 400, now - 299)], expected: .agrees),
        Case(
            name: "oldest unanswered freed first, at most the difference", zone: santiago, now: now,
            reading: SegmentReading(refreshesUsed: 1),
            attempts: [
                known(9, .uncertain, santiago, now - 4000, now - 3970),
                known(8, .uncertain, santiago, now - 8000, now - 7970),
            ],
            expected: .unrecorded(attemptIDs: [8])),
        Case(
            name: "an accepted refresh is never freed", zone: santiago, now: now,
            reading: SegmentReading(refreshesUsed: 0),
            attempts: [known(1, .accepted, santiago, now - 8000, now - 7999)], expected: .agrees),
        Case(
            name: "two zones used: the sides may count different days, nothing freed", zone: santiago, now: now,
            reading: SegmentReading(refreshesUsed: 0),
            attempts: [
                known(1, .uncertain, santiago, now - 8000, now - 7970),
                known(2, .accepted, "UTC", now - 90000, now - 90000),
            ], expected: .agrees),
    ]

    @Test(arguments: cases)
    func reconcile(_ c: Case) {
        #expect(
            Reconciliation.reconcile(reading: c.reading, attempts: c.attempts, zone: rules(c.zone), now: at(c.now))
                == c.expected)
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
        Case(
            name: "a Unix time already past (clocks apart) ignored: 1 h", header: "1725785000", segment: now + 3600,
            newStreak: 1),
        Case(name: "a Unix time right now ignored: 1 h", header: "1725786000", segment: now + 3600, newStreak: 1),
        Case(name: "nothing said, first time: 1 h", segment: now + 3600, newStreak: 1),
        Case(
            name: "nothing said again: the next local midnight (after a 23 h day)", streak: 1, segment: localMidnight,
            newStreak: 2),
        Case(
            name: "nothing said, 25 h day: midnight comes 25 h after the last", zone: "Atlantic/Azores",
            now: 1729987200 + 3600, streak: 1,
            segment: 1730077200, newStreak: 2),
        Case(
            name: "the day's refreshes used: next local midnight",
            reading: SegmentReading(refreshesUsed: 2, maxRefreshes: 2), segment: localMidnight),
        Case(
            name: "max_refreshes missing: 2 assumed", reading: SegmentReading(refreshesUsed: 2), segment: localMidnight),
        Case(
            name: "used up and a shorter header: the later wins", header: "60",
            reading: SegmentReading(refreshesUsed: 2), segment: localMidnight),
        Case(
            name: "used up and a later header: the later wins", header: "200000",
            reading: SegmentReading(refreshesUsed: 2), segment: now + 200000),
        Case(
            name: "used up, last refresh 5 min before midnight: the hour runs past midnight", now: localMidnight - 60,
            reading: SegmentReading(refreshesUsed: 2, lastRefreshedAt: at(localMidnight - 300)),
            segment: localMidnight + 3300),
        Case(
            name: "refreshed 20 min ago: last + 1 h",
            reading: SegmentReading(refreshesUsed: 1, lastRefreshedAt: at(now - 1200)), segment: now + 2400),
        Case(
            name: "segment looks free: the account's day is used up elsewhere",
            reading: SegmentReading(refreshesUsed: 1, lastRefreshedAt: at(now - 7200)),
            segment: now + 3600, account: utcMidnight, newStreak: 1),
        Case(
            name: "max_refreshes 3, 2 used, long ago: free",
            reading: SegmentReading(refreshesUsed: 2, maxRefreshes: 3, lastRefreshedAt: at(now - 9000)),
            segment: now + 3600, account: utcMidnight, newStreak: 1),
        Case(
            name: "a second segment refused in a row: account blocked", header: "120", previous: "other",
            segment: now + 120, account: utcMidnight),
        Case(name: "the same segment again: no account block", header: "120", previous: "seg", segment: now + 120),
        Case(
            name: "Lord Howe: UTC midnight for the account, local for the segment", zone: "Australia/Lord_Howe",
            now: 1728135000 + 600,
            reading: SegmentReading(refreshesUsed: 2), previous: "other", segment: 1728219600, account: 1728172800),
    ]

    @Test(arguments: cases)
    func learn(_ c: Case) {
        let lesson = RateLimitLesson.learn(
            resetHeader: c.header, reading: c.reading, segment: "seg", zone: rules(c.zone), at: at(c.now),
            uninformativeStreak: c.streak,
            previousRateLimitedSegment: c.previous)
        #expect(lesson.segmentBlockedUntil == at(c.segment), "\(lesson.reasons)")
        #expect(lesson.accountBlockedUntil == c.account.map(at))
        #expect(lesson.uninformativeStreak == c.newStreak)
        #expect(!lesson.reasons.isEmpty)
        // Never less than the shortest rule a 429 can stand for here, never before now.
        #expect(lesson.segmentBlockedUntil > at(c.now))
    }
}

@Suite("Pre-flight reconciliation, properties")
struct ReconciliationPropertyTests {
    /// Random segment histories against random SendGrid readings, on DST days and odd offsets:
    /// after the decision is carried out, refreshd never counts fewer refreshes today than
    /// SendGrid does; it only frees unanswered attempts old enough, oldest first, never more than
    /// the difference, and frees as many as it can; an external refresh is timed inside today.
    @Test func neverCountsFewerThanSendGrid() {
        let zones = [
            "America/Santiago", "Atlantic/Azores", "Australia/Lord_Howe", "Asia/Kathmandu", "America/Havana", "UTC",
            "Pacific/Apia",
        ]
        let anchors: [Double] = [1725768000, 1729987200, 1728135000, 1717179300, 1710046800, 1730606400]
        var random = SplitMix64(seed: 0x5EED_0F_F11E)
        for _ in 0..<5_000 {
            let zone = rules(zones.randomElement(using: &random)!)
            let now =
                anchors.randomElement(using: &random)! + Double(Int.random(in: -30 * 3600...30 * 3600, using: &random))
            let oneZone = Bool.random(using: &random) || Bool.random(using: &random)
            let attempts: [Reconciliation.Known] = (0..<Int.random(in: 0...6, using: &random)).map { index in
                let start = now - Double(Int.random(in: 0...40 * 3600, using: &random))
                let end: Double? =
                    Int.random(in: 0..<5, using: &random) == 0
                    ? nil : min(now, start + Double(Int.random(in: 0...120, using: &random)))
                return Reconciliation.Known(
                    id: Int64(index + 1), outcome: AttemptOutcome.allCases.randomElement(using: &random)!,
                    timeZone: oneZone ? zone.name : ["UTC", zone.name].randomElement(using: &random)!,
                    startedAt: Date(timeIntervalSince1970: start),
                    finishedAt: end.map { Date(timeIntervalSince1970: $0) })
            }
            let last: Date? =
                Bool.random(using: &random)
                ? Date(timeIntervalSince1970: now - Double(Int.random(in: -600...50 * 3600, using: &random))) : nil
            let reading = SegmentReading(refreshesUsed: Int.random(in: 0...3, using: &random), lastRefreshedAt: last)
            let t = Date(timeIntervalSince1970: now)
            let dayStart = Date(
                timeIntervalSince1970: Double(zone.dayWindow(containing: Int64(now.rounded(.down))).start))
            let today = attempts.filter { $0.outcome.countsAsRefresh && ($0.finishedAt ?? $0.startedAt) >= dayStart }
            let eligible = today.filter {
                $0.outcome == .uncertain && ($0.finishedAt ?? $0.startedAt) <= t.addingTimeInterval(-300)
            }
            let decision = Reconciliation.reconcile(reading: reading, attempts: attempts, zone: zone, now: t)
            switch decision {
            case .agrees:
                #expect(today.count >= reading.refreshesUsed, "\(decision) \(attempts) \(reading)")
                if today.count > reading.refreshesUsed && attempts.allSatisfy({ $0.timeZone == zone.name }) {
                    #expect(eligible.isEmpty, "freeable attempts left counting: \(attempts) \(reading)")
                }
            case .confirmed(let ids):
                #expect(today.count == reading.refreshesUsed, "confirmed only when SendGrid's count includes them")
                #expect(
                    Set(ids) == Set(today.filter { $0.outcome == .uncertain }.map(\.id)),
                    "every unanswered attempt of today")
                #expect(!ids.isEmpty && attempts.allSatisfy { $0.timeZone == zone.name })
            case .external(let count, let at):
                #expect(today.count + count == reading.refreshesUsed)
                #expect(at >= dayStart && at <= t)
            case .unrecorded(let ids):
                let freed = eligible.filter { ids.contains($0.id) }
                #expect(freed.count == ids.count, "only old unanswered attempts of today are freed")
                #expect(today.count - ids.count >= reading.refreshesUsed, "never below SendGrid's count")
                #expect(
                    today.count - ids.count == reading.refreshesUsed || ids.count == eligible.count, "frees all it can")
                #expect(attempts.allSatisfy { $0.timeZone == zone.name })
                let kept = eligible.filter { !ids.contains($0.id) }
                #expect(kept.allSatisfy { k in freed.allSatisfy { $0.startedAt <= k.startedAt } }, "oldest first")
            }
        }
    }
}

@Suite("What a 429 teaches, properties")
struct RateLimitLessonPropertyTests {
    /// The block lasts at least until every instant the evidence names, and is always in the future.
    @Test func blockCoversEveryEvidence() {
        let zones = [
            "America/Santiago", "Atlantic/Azores", "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Chatham", "UTC",
        ]
        var random = SplitMix64(seed: 0x429)
        for _ in 0..<5_000 {
            let zone = rules(zones.randomElement(using: &random)!)
            let now = 1725768000 + Double(Int.random(in: -90 * 86400...90 * 86400, using: &random))
            let t = Date(timeIntervalSince1970: now)
            let header: String? = [
                nil, "\(Int.random(in: 1...7200, using: &random))",
                "\(Int(now) + Int.random(in: -100...90000, using: &random))", "x",
            ]
            .randomElement(using: &random)!
            let reading: SegmentReading? =
                Bool.random(using: &random)
                ? nil
                : SegmentReading(
                    refreshesUsed: Int.random(in: 0...3, using: &random),
                    maxRefreshes: [nil, 2, 3].randomElement(using: &random)!,
                    lastRefreshedAt: Bool.random(using: &random)
                        ? t.addingTimeInterval(-Double(Int.random(in: 0...7200, using: &random))) : nil)
            let streak = Int.random(in: 0...3, using: &random)
            let lesson = RateLimitLesson.learn(
                resetHeader: header, reading: reading, segment: "a", zone: zone, at: t, uninformativeStreak: streak,
                previousRateLimitedSegment: [nil, "a", "b"].randomElement(using: &random)!)
            let until = lesson.segmentBlockedUntil
            #expect(until > t, "a 429 always blocks for some time")
            if let value = header.flatMap(Double.init) {
                #expect(until >= (value < 1e9 ? t.addingTimeInterval(value) : Date(timeIntervalSince1970: value)))
            }
            let midnight = Date(timeIntervalSince1970: Double(zone.dayWindow(containing: Int64(now)).end))
            if let reading, reading.refreshesUsed >= (reading.maxRefreshes ?? 2) { #expect(until >= midnight) }
            if let last = reading?.lastRefreshedAt, t.timeIntervalSince(last) < 3600 {
                #expect(until >= last.addingTimeInterval(3600))
            }
            #expect(
                until <= max(midnight, t.addingTimeInterval(90000)), "nothing invents a longer block than the evidence")
            #expect(lesson.uninformativeStreak == streak || lesson.uninformativeStreak == streak + 1)
            if let midnight = lesson.accountBlockedUntil {
                #expect(
                    midnight > t && midnight.timeIntervalSince(t) <= 86400
                        && Int(midnight.timeIntervalSince1970) % 86400 == 0)
            }
        }
    }
}

@Suite("SendGrid's answers and backoffs")
struct AnswerClassTests {
    @Test(arguments: [
        (200, AnswerClass.accepted), (201, .accepted), (202, .accepted), (299, .accepted),
        (400, .rejected), (404, .rejected), (405, .rejected), (413, .rejected), (415, .rejected), (422, .rejected),
        (401, .unauthorized), (403, .forbidden), (429, .rateLimited),
        (100, .unclear), (301, .unclear), (402, .unclear), (408, .unclear), (409, .unclear), (500, .unclear),
        (502, .unclear),
        (503, .unclear), (504, .unclear), (599, .unclear), (0, .unclear),
    ])
    func status(_ status: Int, _ expected: AnswerClass) {
        #expect(AnswerClass(status: status) == expected)
    }

    @Test(arguments: [
        (0, 30.0), (1, 30.0), (2, 60.0), (3, 120.0), (4, 240.0), (5, 480.0), (6, 960.0), (7, 1800.0), (8, 1800.0),
        (1000, 1800.0), (Int.max, 1800.0),
    ])
    func unclear(_ tries: Int, _ seconds: Double) {
        #expect(Backoff.unclear(tries: tries) == seconds)
    }

    @Test(arguments: [(1, 5.0), (2, 10.0), (3, 20.0), (6, 160.0), (7, 300.0), (50, 300.0), (Int.max, 300.0)])
    func notSent(_ failures: Int, _ seconds: Double) {
        #expect(Backoff.notSent(failures: failures) == seconds)
    }

    @Test(arguments: [(1, 5.0), (2, 10.0), (3, 20.0), (4, 40.0), (5, 60.0), (100, 60.0)])
    func ledgerWrite(_ failures: Int, _ seconds: Double) {
        #expect(Backoff.ledgerWrite(failures: failures) == seconds)
    }
}

@Suite("What X-RateLimit headers on a 202 teach")
struct QuotaReportTests {
    let t = Date(timeIntervalSince1970: 1_795_586_400)  // 2026-11-25T06:00Z
    let midnightUTC = Date(timeIntervalSince1970: 1_795_651_200)

    @Test func onlyHeadersThatDescribeTheDailyQuotaCount() {
        #expect(QuotaReport(headers: [:]) == nil)
        #expect(
            QuotaReport(headers: ["x-ratelimit-limit": "600", "x-ratelimit-remaining": "599"]) == nil,
            "a per-minute API limit")
        #expect(QuotaReport(headers: ["x-ratelimit-limit": "10", "x-ratelimit-remaining": "eleven"]) == nil)
        #expect(QuotaReport(headers: ["x-ratelimit-limit": "10", "x-ratelimit-remaining": "11"]) == nil)
        #expect(QuotaReport(headers: ["x-ratelimit-remaining": "3"]) == nil)
        #expect(QuotaReport(headers: ["x-ratelimit-limit": " 10", "x-ratelimit-remaining": "6 "])?.remaining == 6)
    }

    @Test func usageElsewhereAndTheEndOfTheDay() throws {
        let some = try #require(QuotaReport(headers: ["x-ratelimit-limit": "10", "x-ratelimit-remaining": "4"]))
        #expect(
            some.lesson(ledgerUsed: 2, at: t)
                == .init(
                    requestsElsewhere: 4, accountBlockedUntil: nil,
                    reason: "X-RateLimit-Limit 10, X-RateLimit-Remaining 4"))
        #expect(
            some.lesson(ledgerUsed: 7, at: t).requestsElsewhere == 0,
            "the ledger counting more is the safe side: nothing to learn")
        let none = try #require(QuotaReport(headers: ["x-ratelimit-limit": "10", "x-ratelimit-remaining": "0"]))
        #expect(none.lesson(ledgerUsed: 10, at: t).accountBlockedUntil == midnightUTC)
        // A reset later than 00:00 UTC, in either reading, wins; an earlier one does not.
        let seconds = QuotaReport(headers: [
            "x-ratelimit-limit": "10", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "90000",
        ])!
        #expect(seconds.lesson(ledgerUsed: 10, at: t).accountBlockedUntil == t.addingTimeInterval(90000))
        let epoch = QuotaReport(headers: [
            "x-ratelimit-limit": "10", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1795600000",
        ])!
        #expect(epoch.lesson(ledgerUsed: 10, at: t).accountBlockedUntil == midnightUTC)
    }
}
