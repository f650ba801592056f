import Foundation
import RefreshCore
import RefreshWire
import TZData

/// SendGrid's budget drawn over time: one row per account (its UTC days and ten slots) and one per
/// segment (its local midnights in every zone it is sent with, the refreshes made, the planned
/// sends and what holds them), between `start` and `end`. A pure value built from a `BudgetView`;
/// `TimelineText` draws it for a terminal and `TimelineSVG` for the page.
public struct Timeline: Sendable, Equatable {
    /// Something that happened, or will, at one instant.
    public struct Mark: Sendable, Equatable {
        public enum Kind: String, Sendable, CaseIterable {
            /// 202.
            case accepted
            /// 5xx, a timeout: SendGrid may have counted it.
            case uncertain
            /// A refresh made elsewhere, learned from SendGrid's counts.
            case external
            /// Dry-run: scheduled as if accepted.
            case dryRun = "dry_run"
            /// A 429 (refreshd should never cause one).
            case rateLimited = "rate_limited"
            /// A refresh the plan expects to send.
            case planned
        }

        public var kind: Kind
        public var at: Date
        /// How many jobs a planned send serves (1 for a refresh already made).
        public var jobs: Int
    }

    /// An interval during which something holds the row's sends back.
    public struct Span: Sendable, Equatable {
        public enum Kind: String, Sendable, CaseIterable {
            /// The segment's two refreshes of its local day are used (I1).
            case segmentDaily = "segment_daily"
            /// Less than an hour since the segment's last refresh (I2).
            case segmentInterval = "segment_interval"
            /// The account's ten requests of the UTC day are used (I3).
            case accountDaily = "account_daily"
            /// A block learned from SendGrid's 429.
            case learnedBlock = "learned_block"
            /// The job's `not_before`.
            case notBefore = "not_before"
            /// Other jobs of the account take the slots first.
            case queue
            /// An operator's hold (refreshctl hold).
            case hold
        }

        public var kind: Kind
        public var from: Date
        public var until: Date
    }

    /// One line of the drawing.
    public struct Row: Sendable, Equatable {
        public var account: String
        /// nil: the account's own row (its UTC day).
        public var segmentID: String?
        /// The zones whose midnights the row shows ("UTC" for the account's row).
        public var zones: [String]
        /// Day boundaries inside the window, in every zone of the row, ascending.
        public var midnights: [Date]
        public var marks: [Mark]
        public var spans: [Span]
    }

    /// One UTC day of an account: its slots used and planned.
    public struct AccountDay: Sendable, Equatable {
        public var account: String
        public var date: CivilDate
        public var limit: Int
        public var used: Int
        public var planned: Int
        public var free: Int { max(0, limit - used - planned) }
    }

    public var now: Date
    public var start: Date
    public var end: Date
    public var rows: [Row]
    public var days: [AccountDay]

    /// Builds the drawing of `hours` ahead of `view.now` (and a quarter of that behind it, where
    /// the refreshes already made show), for the accounts and segments asked (all when empty).
    /// `zone` loads a zone's rules; a zone it cannot load shows no midnights (never UTC's).
    public init(
        _ view: BudgetView, hours: Int, accounts: Set<String> = [], segments: Set<String> = [],
        zone: (String) -> ZoneRules?
    ) {
        let now = view.now
        let start = now.addingTimeInterval(-Double(hours) * 3600 / 4)
        let end = now.addingTimeInterval(Double(hours) * 3600)
        self.now = now
        self.start = start
        self.end = end
        let wanted = { (account: String) in accounts.isEmpty || accounts.contains(account) }
        let inWindow = { (t: Date) in t >= start && t < end }
        let utc = zone("UTC")
        var rows: [Row] = []
        var days: [AccountDay] = []
        for account in view.accounts where wanted(account.account) {
            let name = account.account
            let refreshes = view.refreshes.filter { $0.account == name }
            let sends = view.sends.filter { $0.account == name }
            // The account's row: every request that counts toward its UTC day, and every planned one.
            var marks = refreshes.filter { $0.countsForAccount && inWindow($0.at) }.map {
                Mark(kind: Self.kind($0.outcome.rawValue), at: $0.at, jobs: 1)
            }
            marks += sends.filter { inWindow($0.at) }.map { Mark(kind: .planned, at: $0.at, jobs: $0.jobs.count) }
            var spans = view.blocks.filter { $0.account == name && $0.segmentID == nil }.map {
                Span(kind: .learnedBlock, from: now, until: $0.until)
            }
            spans += view.holds.filter { $0.account == name && $0.segmentID == nil }.map {
                Span(kind: .hold, from: max($0.since, start), until: end)
            }
            rows.append(
                Row(
                    account: name, segmentID: nil, zones: ["UTC"],
                    midnights: utc.map { Self.midnights([$0], start: start, end: end) } ?? [],
                    marks: Self.sorted(marks), spans: Self.clipped(spans, start: start, end: end)))
            // Its UTC days in the window: slots used (the ledger's count) and planned.
            var day = CivilDate(dayNumber: Self.floorDay(start))
            while Double(day.dayNumber * 86400) < end.timeIntervalSince1970 {
                let dayStart = Double(day.dayNumber * 86400)
                let inDay = { (t: Date) in
                    t.timeIntervalSince1970 >= dayStart && t.timeIntervalSince1970 < dayStart + 86400
                }
                // Today's count is the ledger's (GET /v1/budget); other days are counted here.
                let counted = refreshes.filter { $0.countsForAccount && inDay($0.at) }.count
                let used = inDay(now) ? max(account.used, counted) : counted
                days.append(
                    AccountDay(
                        account: name, date: day, limit: account.limit, used: used,
                        planned: sends.filter { inDay($0.at) }.count))
                day = day.next
            }
            // The segments' rows: those with a refresh in the window, a queued job, a block or a hold.
            var order: [String] = []
            let named =
                sends.map(\.segmentID) + view.jobs.filter({ $0.account == name }).map(\.segmentID)
                + refreshes.filter({ inWindow($0.at) && $0.segmentID != RefreshBody.elsewhereSegment }).map(\.segmentID)
                + view.blocks.filter({ $0.account == name }).compactMap(\.segmentID)
                + view.holds.filter({ $0.account == name }).compactMap(\.segmentID)
            for id in named where !order.contains(id) && (segments.isEmpty || segments.contains(id)) {
                order.append(id)
            }
            var segmentRows: [(first: Date, row: Row)] = []
            for id in order {
                let mine = refreshes.filter { $0.segmentID == id }
                let planned = sends.filter { $0.segmentID == id }.sorted { $0.at < $1.at }
                // Every zone the segment is sent with near the window governs its days (I1's Z(r)).
                var zones: [String] = []
                let recent = mine.filter({ $0.at >= start.addingTimeInterval(-2 * 86400) }).map(\.timeZone)
                // Queued jobs not planned (held, paused) still name the zones the segment will be sent with.
                let waiting = view.jobs.filter({ $0.account == name && $0.segmentID == id }).compactMap(\.timeZone)
                for name in planned.map(\.timeZone) + waiting + recent where !zones.contains(name) {
                    zones.append(name)
                }
                var marks = mine.filter { inWindow($0.at) && ($0.countsForSegment || $0.outcome == .rateLimited) }
                    .map { Mark(kind: Self.kind($0.outcome.rawValue), at: $0.at, jobs: 1) }
                marks += planned.filter { inWindow($0.at) }.map {
                    Mark(kind: .planned, at: $0.at, jobs: $0.jobs.count)
                }
                // What holds each planned send until its instant, from the refresh or send before it.
                var spans: [Span] = []
                var previous = now
                for send in planned {
                    if let reason = send.reasons.compactMap({ Span.Kind(rawValue: $0.rawValue) }).first,
                        send.at > previous
                    {
                        spans.append(Span(kind: reason, from: previous, until: send.at))
                    }
                    previous = max(previous, send.at)
                }
                spans += view.blocks.filter { $0.account == name && $0.segmentID == id }.map {
                    Span(kind: .learnedBlock, from: now, until: $0.until)
                }
                spans += view.holds.filter { $0.account == name && $0.segmentID == id }.map {
                    Span(kind: .hold, from: max($0.since, start), until: end)
                }
                let rules = zones.compactMap(zone)
                let row = Row(
                    account: name, segmentID: id, zones: zones,
                    midnights: Self.midnights(rules, start: start, end: end), marks: Self.sorted(marks),
                    spans: Self.clipped(spans, start: start, end: end))
                segmentRows.append((planned.first?.at ?? .distantFuture, row))
            }
            // Next send first; segments with nothing planned after, by id.
            segmentRows.sort { ($0.first, $0.row.segmentID ?? "") < ($1.first, $1.row.segmentID ?? "") }
            rows += segmentRows.map(\.row)
        }
        self.rows = rows
        self.days = days
    }

    static func kind(_ outcome: String) -> Mark.Kind {
        switch outcome {
        case "uncertain", "reserved": return .uncertain
        case "external": return .external
        case "dry_run": return .dryRun
        case "rate_limited": return .rateLimited
        default: return .accepted
        }
    }

    static func floorDay(_ t: Date) -> Int64 { Int64((t.timeIntervalSince1970 / 86400).rounded(.down)) }

    /// The first instants of local days inside [start, end) in any of `zones`, ascending, unique.
    static func midnights(_ zones: [ZoneRules], start: Date, end: Date) -> [Date] {
        var instants = Set<Int64>()
        let from = Int64(start.timeIntervalSince1970.rounded(.down))
        let to = end.timeIntervalSince1970
        for zone in zones {
            var window = zone.dayWindow(containing: from)
            if window.start >= from { instants.insert(window.start) }
            while Double(window.end) < to {
                instants.insert(window.end)
                window = zone.dayWindow(containing: window.end)
            }
        }
        return instants.sorted().map { Date(timeIntervalSince1970: Double($0)) }
    }

    static func sorted(_ marks: [Mark]) -> [Mark] {
        marks.sorted { ($0.at, $0.kind.rawValue) < ($1.at, $1.kind.rawValue) }
    }

    static func clipped(_ spans: [Span], start: Date, end: Date) -> [Span] {
        spans.compactMap { span in
            let from = max(span.from, start)
            let until = min(span.until, end)
            return from < until ? Span(kind: span.kind, from: from, until: until) : nil
        }
    }
}
