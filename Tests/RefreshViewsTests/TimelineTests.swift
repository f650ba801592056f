import Foundation
import RefreshCore
import RefreshViews
import RefreshWire
import TZData
import Testing

/// The host's tz database, as refreshd reads it.
let hostZones: ZoneInfoDirectory = {
    do {
        return try ZoneInfoDirectory(
            path: ZoneInfoDirectory.defaultPath(environment: ProcessInfo.processInfo.environment))
    } catch {
        fatalError("the tests need the host's tz database: \(error)")
    }
}()

func zone(_ name: String) -> ZoneRules? { try? hostZones.rules(for: name) }

func at(_ text: String) -> Date {
    guard let date = Timestamp.parseRFC3339(text) else { fatalError("bad instant \(text)") }
    return date
}

/// The golden files beside this one: `REFRESHD_UPDATE_GOLDEN=1 swift test --filter RefreshViewsTests`
/// rewrites them (then read the diff before committing it).
func expectGolden(_ name: String, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    var url = URL(fileURLWithPath: #filePath)
    url.deleteLastPathComponent()
    url.appendPathComponent("Golden/\(name)")
    if ProcessInfo.processInfo.environment["REFRESHD_UPDATE_GOLDEN"] == "1" {
        try text.write(to: url, atomically: true, encoding: .utf8)
    }
    let golden = try String(contentsOf: url, encoding: .utf8)
    if golden != text {
        let ours = text.split(separator: "\n", omittingEmptySubsequences: false)
        let theirs = golden.split(separator: "\n", omittingEmptySubsequences: false)
        let first =
            zip(ours, theirs).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            ?? min(ours.count, theirs.count)
        Issue.record(
            "\(name) differs from the golden file at line \(first + 1):\n got: \(first < ours.count ? String(ours[first]) : "<end>")\nwant: \(first < theirs.count ? String(theirs[first]) : "<end>")\n\(text)",
            sourceLocation: sourceLocation)
    }
}

let segA = "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01"
let segB = "7d2b4c1a-2222-4b5c-8d6e-9f0a1b2c3d02"
let segC = "c3d4e5f6-3333-4a7b-9c8d-0e1f2a3b4c03"

/// A world around Santiago's late-start day (2024-09-08 begins at 01:00 -03, 23 h long): two
/// refreshes made, one uncertain, a 429 on another segment, sends planned past the interval rule
/// and the segment's day, an account block and a hold.
func santiagoWorld() -> BudgetView {
    let now = at("2024-09-07T22:30:00Z")
    func refresh(_ id: Int64, _ segment: String, _ zone: String, _ outcome: AttemptOutcome, _ t: String)
        -> BudgetView.Refresh
    {
        BudgetView.Refresh(
            id: id, account: "default", segmentID: segment, timeZone: zone, outcome: outcome, startedAt: at(t),
            finishedAt: at(t))
    }
    return BudgetView(
        now: now,
        accounts: [BudgetView.Account(account: "default", used: 4, limit: 10, remaining: 6)],
        sends: [
            .init(
                at: at("2024-09-08T04:00:30Z"), account: "default", segmentID: segA, timeZone: "America/Santiago",
                jobs: [7, 8, 9], reasons: [.segmentDaily]),
            .init(
                at: at("2024-09-08T05:00:30Z"), account: "default", segmentID: segA, timeZone: "America/Santiago",
                jobs: [11], reasons: [.segmentInterval]),
            .init(
                at: at("2024-09-08T02:00:00Z"), account: "default", segmentID: segB, timeZone: "America/Chicago",
                jobs: [12, 13], reasons: [.notBefore]),
            .init(
                at: at("2024-09-08T09:15:00Z"), account: "default", segmentID: segB, timeZone: "America/Chicago",
                jobs: [14], reasons: [.queue]),
        ],
        refreshes: [
            refresh(1, segA, "America/Santiago", .accepted, "2024-09-07T14:10:00Z"),
            refresh(2, segA, "America/Santiago", .accepted, "2024-09-07T22:04:00Z"),
            refresh(3, segB, "America/Chicago", .uncertain, "2024-09-07T19:30:00Z"),
            refresh(4, segC, "Asia/Kathmandu", .rateLimited, "2024-09-07T20:45:00Z"),
            // Counted by SendGrid, made elsewhere (X-RateLimit): the account's row only.
            refresh(5, RefreshBody.elsewhereSegment, "UTC", .external, "2024-09-07T21:00:00Z"),
        ],
        blocks: [
            .init(id: 1, account: "default", segmentID: segC, until: at("2024-09-08T18:15:00Z"), reason: "429")
        ],
        holds: [])
}

@Suite struct TimelineTests {
    /// A segment's row shows its local midnights: Santiago's 2024-09-08 begins at 01:00 -03 (04:00Z).
    @Test func santiagoLateStartMidnight() {
        let timeline = Timeline(santiagoWorld(), hours: 48, zone: zone)
        let row = timeline.rows.first { $0.segmentID == segA }!
        #expect(row.zones == ["America/Santiago"])
        #expect(row.midnights.map(Timestamp.rfc3339) == ["2024-09-08T04:00:00Z", "2024-09-09T03:00:00Z"])
        // The account's row shows UTC midnights; its day counts every request, the 429 and the external one too.
        let account = timeline.rows[0]
        #expect(account.segmentID == nil)
        #expect(account.midnights.map(Timestamp.rfc3339) == ["2024-09-08T00:00:00Z", "2024-09-09T00:00:00Z"])
        #expect(account.marks.filter { $0.kind != .planned }.count == 5)
        #expect(timeline.days.map(\.planned) == [0, 4, 0])
        #expect(timeline.days.first?.used == 5)
    }

    /// Lord Howe's 2024-10-06 is 23.5 h long (02:00 -> 02:30); Kathmandu's midnights fall at :15.
    @Test func lordHoweAndKathmanduMidnights() {
        let midnights = Timeline.testMidnights(["Australia/Lord_Howe"], from: "2024-10-05T12:00:00Z", hours: 36)
        #expect(midnights.map(Timestamp.rfc3339) == ["2024-10-05T13:30:00Z", "2024-10-06T13:00:00Z"])
        let kathmandu = Timeline.testMidnights(["Asia/Kathmandu"], from: "2024-10-05T12:00:00Z", hours: 24)
        #expect(kathmandu.map(Timestamp.rfc3339) == ["2024-10-05T18:15:00Z"])
    }

    /// A segment sent with two zones shows both zones' midnights (either may govern its day, I1).
    @Test func multiZoneSegmentShowsBothMidnights() {
        let world = multiZoneWorld()
        let row = Timeline(world, hours: 24, zone: zone).rows.first { $0.segmentID == segA }!
        #expect(row.zones == ["America/Chicago", "Europe/Paris"])
        #expect(
            row.midnights.map(Timestamp.rfc3339) == ["2026-03-28T23:00:00Z", "2026-03-29T05:00:00Z"])
    }

    /// A zone the host cannot load shows no midnights at all, never UTC's.
    @Test func unknownZoneDrawsNoMidnights() {
        var world = multiZoneWorld()
        for i in world.sends.indices { world.sends[i].timeZone = "Mars/Olympus_Mons" }
        let row = Timeline(world, hours: 24, zone: zone).rows.first { $0.segmentID == segA }!
        #expect(row.midnights.isEmpty)
        #expect(row.zones == ["Mars/Olympus_Mons"])
    }

    /// --account and --segment keep only those rows.
    @Test func filters() {
        let timeline = Timeline(santiagoWorld(), hours: 48, segments: [segB], zone: zone)
        #expect(timeline.rows.map(\.segmentID) == [nil, segB])
        #expect(Timeline(santiagoWorld(), hours: 48, accounts: ["other"], zone: zone).rows.isEmpty)
    }

    /// Golden: Santiago's late-start day, Unicode, 100 columns.
    @Test func goldenSantiagoUnicode() throws {
        let lines = TimelineText(width: 100).render(Timeline(santiagoWorld(), hours: 48, zone: zone))
        try expectGolden("santiago-100.txt", lines.joined(separator: "\n") + "\n")
        #expect(lines.allSatisfy { $0.count <= 100 })
    }

    /// Golden: the same in plain ASCII at 72 columns (nothing outside ASCII in it).
    @Test func goldenSantiagoASCII() throws {
        let lines = TimelineText(width: 72, ascii: true).render(Timeline(santiagoWorld(), hours: 48, zone: zone))
        let text = lines.joined(separator: "\n") + "\n"
        try expectGolden("santiago-72-ascii.txt", text)
        #expect(text.unicodeScalars.allSatisfy { $0.isASCII })
        #expect(lines.allSatisfy { $0.count <= 72 })
    }

    /// Golden: Lord Howe's 23.5 h day beside Kathmandu, in colour (ANSI SGR).
    @Test func goldenLordHoweColour() throws {
        let now = at("2024-10-05T10:00:00Z")
        let world = BudgetView(
            now: now, accounts: [BudgetView.Account(account: "au", used: 1, limit: 10, remaining: 9)],
            sends: [
                .init(
                    at: at("2024-10-05T13:30:30Z"), account: "au", segmentID: segA, timeZone: "Australia/Lord_Howe",
                    jobs: [3], reasons: [.segmentDaily]),
                .init(
                    at: at("2024-10-06T13:00:30Z"), account: "au", segmentID: segA, timeZone: "Australia/Lord_Howe",
                    jobs: [4, 5], reasons: [.segmentDaily]),
                .init(
                    at: at("2024-10-05T18:15:00Z"), account: "au", segmentID: segB, timeZone: "Asia/Kathmandu",
                    jobs: [6], reasons: [.segmentDaily]),
            ],
            refreshes: [
                .init(
                    id: 1, account: "au", segmentID: segA, timeZone: "Australia/Lord_Howe", outcome: .accepted,
                    startedAt: at("2024-10-05T09:00:00Z"), finishedAt: at("2024-10-05T09:00:01Z"))
            ],
            holds: [.init(id: 1, account: "au", segmentID: segB, reason: "campaign freeze", since: now)])
        let lines = TimelineText(width: 90, color: true).render(Timeline(world, hours: 36, zone: zone))
        try expectGolden("lordhowe-90-colour.txt", lines.joined(separator: "\n") + "\n")
        #expect(lines.joined().contains("\u{1B}[1;36m2"))
    }

    /// Golden: a segment sent with Chicago and Paris across Europe's spring change.
    @Test func goldenMultiZone() throws {
        let lines = TimelineText(width: 80).render(Timeline(multiZoneWorld(), hours: 24, zone: zone))
        try expectGolden("multizone-80.txt", lines.joined(separator: "\n") + "\n")
    }

    func multiZoneWorld() -> BudgetView {
        BudgetView(
            now: at("2026-03-28T20:00:00Z"),
            accounts: [BudgetView.Account(account: "default", used: 0, limit: 10, remaining: 10)],
            sends: [
                .init(
                    at: at("2026-03-28T20:00:00Z"), account: "default", segmentID: segA, timeZone: "America/Chicago",
                    jobs: [1], reasons: []),
                .init(
                    at: at("2026-03-29T05:00:00Z"), account: "default", segmentID: segA, timeZone: "Europe/Paris",
                    jobs: [2], reasons: [.segmentDaily]),
            ])
    }
}

extension Timeline {
    /// The midnights of `zones` from an instant, as a row would show them.
    static func testMidnights(_ zones: [String], from: String, hours: Int) -> [Date] {
        let view = BudgetView(
            now: at(from), accounts: [BudgetView.Account(account: "a", used: 0, limit: 10, remaining: 10)],
            sends: zones.map {
                .init(at: at(from), account: "a", segmentID: segA, timeZone: $0, jobs: [1], reasons: [])
            })
        let timeline = Timeline(view, hours: hours, zone: zone)
        return timeline.rows.first { $0.segmentID == segA }!.midnights.filter { $0 >= at(from) }
    }
}
