import Foundation
import RefreshCore
import TZData

/// Draws a `Timeline` as text for a terminal: a label column, then one character per slice of
/// time. Unicode by default, plain ASCII on request; ANSI colour only when asked for (the caller
/// decides: a terminal, and `NO_COLOR` unset).
public struct TimelineText: Sendable {
    /// Total width in columns (the terminal's).
    public var width: Int
    public var ascii: Bool
    public var color: Bool

    public init(width: Int, ascii: Bool = false, color: Bool = false) {
        self.width = width
        self.ascii = ascii
        self.color = color
    }

    /// One cell: a glyph, its colour (an SGR parameter, "" for none) and how much it matters
    /// when several things fall into one column.
    struct Cell {
        var glyph: String
        var sgr: String
        var rank: Int
    }

    /// The glyphs, Unicode and ASCII.
    struct Glyphs {
        let base, midnight, now, used, free: String
        let marks: [Timeline.Mark.Kind: String]
        let spans: [Timeline.Span.Kind: String]

        static let unicode = Glyphs(
            base: "·", midnight: "│", now: "┃", used: "●", free: "·",
            marks: [
                .accepted: "●", .uncertain: "◐", .external: "○", .dryRun: "◍", .rateLimited: "✕", .planned: "◆",
            ],
            spans: [
                .segmentInterval: "~", .segmentDaily: "=", .accountDaily: "≡", .learnedBlock: "▒", .notBefore: "›",
                .queue: "-", .hold: "▚",
            ])
        static let ascii = Glyphs(
            base: ".", midnight: "|", now: "!", used: "*", free: ".",
            marks: [.accepted: "*", .uncertain: "?", .external: "o", .dryRun: "d", .rateLimited: "x", .planned: "+"],
            spans: [
                .segmentInterval: "~", .segmentDaily: "=", .accountDaily: "%", .learnedBlock: "#", .notBefore: ">",
                .queue: "-", .hold: "H",
            ])
    }

    static let markColour: [Timeline.Mark.Kind: String] = [
        .accepted: "32", .uncertain: "33", .external: "34", .dryRun: "36", .rateLimited: "1;31", .planned: "1;36",
    ]
    static let spanColour: [Timeline.Span.Kind: String] = [
        .segmentInterval: "33", .segmentDaily: "33", .accountDaily: "33", .learnedBlock: "31", .notBefore: "2",
        .queue: "2", .hold: "35",
    ]

    static let spanNames: [(Timeline.Span.Kind, String)] = [
        (.segmentInterval, "1 h interval"), (.segmentDaily, "segment's day used"),
        (.accountDaily, "account's day used"), (.learnedBlock, "learned block"), (.notBefore, "not_before"),
        (.queue, "queue"), (.hold, "hold"),
    ]
    static let markNames: [(Timeline.Mark.Kind, String)] = [
        (.accepted, "accepted"), (.uncertain, "uncertain"), (.external, "external"), (.dryRun, "dry-run"),
        (.rateLimited, "429"),
    ]

    /// The drawing, line by line (no trailing newlines).
    public func render(_ timeline: Timeline) -> [String] {
        let g = ascii ? Glyphs.ascii : Glyphs.unicode
        let labelWidth = min(timeline.rows.map { label($0).count }.max() ?? 8, max(12, width / 3))
        let labels = timeline.rows.map { label($0, width: labelWidth) }
        let grid = max(24, width - labelWidth - 1)
        let span = timeline.end.timeIntervalSince(timeline.start)
        func column(_ t: Date) -> Int? {
            let c = Int((t.timeIntervalSince(timeline.start) / span * Double(grid)).rounded(.down))
            return (0..<grid).contains(c) ? c : nil
        }
        let nowColumn = column(timeline.now)
        var lines: [String] = []
        let pad = String(repeating: " ", count: labelWidth + 1)

        // Header: UTC dates at their midnights, hour ticks, and where now is.
        var dates = [Character](repeating: " ", count: grid)
        var lastEnd = -1
        func place(_ text: String, at c: Int, in row: inout [Character], after: inout Int) {
            guard c > after, c + text.count <= grid else { return }
            for (i, ch) in text.enumerated() { row[c + i] = ch }
            after = c + text.count
        }
        let firstDay = Timeline.floorDay(timeline.start)
        let labelLength = Self.dayLabel(CivilDate(dayNumber: firstDay)).count
        for day in firstDay...(Timeline.floorDay(timeline.end)) {
            let date = CivilDate(dayNumber: day)
            let at = Date(timeIntervalSince1970: Double(day * 86400))
            var c = column(at)
            // The day the window starts in is named at its left edge when the next one leaves room.
            if at < timeline.start {
                let next = column(Date(timeIntervalSince1970: Double((day + 1) * 86400))) ?? grid
                c = next > labelLength ? 0 : nil
            }
            if let c { place(Self.dayLabel(date), at: c, in: &dates, after: &lastEnd) }
        }
        lines.append(fit("UTC", labelWidth) + " " + String(dates).trailingTrimmed)
        let secondsPerColumn = span / Double(grid)
        let step = [1, 2, 3, 4, 6, 12, 24].first { Double($0 * 3600) / secondsPerColumn >= 4 } ?? 24
        var hours = [Character](repeating: " ", count: grid)
        var hoursEnd = -1
        var tick = (timeline.start.timeIntervalSince1970 / Double(step * 3600)).rounded(.up) * Double(step * 3600)
        while tick < timeline.end.timeIntervalSince1970 {
            let hour = Int((tick.truncatingRemainder(dividingBy: 86400)) / 3600)
            if let c = column(Date(timeIntervalSince1970: tick)) {
                place(hour < 10 ? "0\(hour)" : "\(hour)", at: c, in: &hours, after: &hoursEnd)
            }
            tick += Double(step * 3600)
        }
        lines.append(pad + String(hours).trailingTrimmed)
        if let nowColumn {
            let clock = Timestamp.rfc3339(timeline.now).dropFirst(11).prefix(5)
            let text = "now \(clock)"
            var line = pad + String(repeating: " ", count: nowColumn)
            if nowColumn + 2 + text.count <= grid {
                line += (ascii ? "v" : "▼") + " " + text
            } else {
                line =
                    pad + String(repeating: " ", count: max(0, nowColumn - text.count - 1)) + text + " "
                    + (ascii ? "v" : "▼")
            }
            lines.append(paint(line, sgr: "1;35"))
        }

        // The rows.
        for (index, row) in timeline.rows.enumerated() {
            var cells = [Cell](repeating: Cell(glyph: g.base, sgr: "2", rank: 0), count: grid)
            func put(_ c: Int?, _ cell: Cell) {
                guard let c, cell.rank >= cells[c].rank else { return }
                cells[c] = cell
            }
            for s in row.spans {
                guard let from = column(s.from) ?? (s.from < timeline.start ? 0 : nil) else { continue }
                let to = column(s.until) ?? grid - 1
                for c in from...max(from, to) {
                    put(c, Cell(glyph: g.spans[s.kind]!, sgr: Self.spanColour[s.kind]!, rank: 1))
                }
            }
            put(nowColumn, Cell(glyph: g.now, sgr: "1;35", rank: 2))
            // Sends are planned right after midnights: a midnight whose column a mark takes is drawn
            // just before it (it comes first), so the day boundary stays visible.
            let marked = Set(row.marks.compactMap { column($0.at) })
            for m in row.midnights {
                guard var c = column(m) else { continue }
                if marked.contains(c), c > 0, !marked.contains(c - 1) { c -= 1 }
                put(c, Cell(glyph: g.midnight, sgr: "34", rank: 3))
            }
            var plannedJobs = [Int: Int]()
            for m in row.marks {
                guard let c = column(m.at) else { continue }
                if m.kind == .planned {
                    // The account's row counts requests; a segment's row counts the jobs each serves.
                    plannedJobs[c, default: 0] += row.segmentID == nil ? 1 : m.jobs
                    let n = plannedJobs[c]!
                    put(c, Cell(glyph: n > 9 ? "+" : "\(n)", sgr: Self.markColour[.planned]!, rank: 6))
                } else {
                    let rank = m.kind == .rateLimited ? 5 : 4
                    put(c, Cell(glyph: g.marks[m.kind]!, sgr: Self.markColour[m.kind]!, rank: rank))
                }
            }
            var text = ""
            var open = ""
            for cell in cells {
                if color, cell.sgr != open {
                    text += (open.isEmpty ? "" : "\u{1B}[0m") + (cell.sgr.isEmpty ? "" : "\u{1B}[\(cell.sgr)m")
                    open = cell.sgr
                }
                text += cell.glyph
            }
            if color, !open.isEmpty { text += "\u{1B}[0m" }
            let name = fit(labels[index], labelWidth)
            lines.append((row.segmentID == nil ? paint(name, sgr: "1") : name) + " " + text)
        }

        // The account's ten slots per UTC day, and the legend.
        if !timeline.days.isEmpty { lines.append("") }
        let accountWidth = timeline.days.map(\.account.count).max() ?? 0
        for day in timeline.days {
            let slots =
                paint(String(repeating: g.used, count: min(day.used, day.limit)), sgr: "32")
                + paint(
                    String(repeating: ascii ? "+" : "◆", count: min(day.planned, max(0, day.limit - day.used))),
                    sgr: "1;36")
                + paint(String(repeating: g.free, count: day.free), sgr: "2")
            let over = day.used + day.planned > day.limit ? " (over the limit!)" : ""
            lines.append(
                "\(Self.clean(day.account).padding(toLength: accountWidth, withPad: " ", startingAt: 0))  "
                    + "\(Self.dayLabel(day.date))  \(slots)  \(day.used) used, \(day.planned) planned, \(day.free) free"
                    + over)
        }
        var legend: [String] = Self.markNames.map { "\(g.marks[$0.0]!) \($0.1)" }
        legend += ["1-9 planned send (its jobs)", "\(g.midnight) midnight", "\(g.now) now"]
        legend += Self.spanNames.map { "\(g.spans[$0.0]!) \($0.1)" }
        var line = ""
        lines.append("")
        for item in legend {
            if !line.isEmpty, line.count + 3 + item.count > width {
                lines.append(line)
                line = ""
            }
            line += (line.isEmpty ? "" : "   ") + item
        }
        if !line.isEmpty { lines.append(line) }
        return lines
    }

    /// "default (UTC day)" for an account's row; "  0f8c5e8e America/Chicago" for a segment's.
    func label(_ row: Timeline.Row) -> String {
        guard let segment = row.segmentID else { return Self.clean(row.account) + " (UTC day)" }
        let zones = row.zones.isEmpty ? "?" : row.zones.joined(separator: "+")
        return "  " + Self.clean(String(segment.prefix(8))) + " " + Self.clean(zones)
    }

    /// The label within `width`: zones shortened to their last part (America/Chicago -> Chicago)
    /// when the full names do not fit, then cut.
    func label(_ row: Timeline.Row, width: Int) -> String {
        let full = label(row)
        guard full.count > width, let segment = row.segmentID else { return full }
        let cities = row.zones.map { $0.split(separator: "/").last.map(String.init) ?? $0 }.joined(separator: "+")
        return "  " + Self.clean(String(segment.prefix(8))) + " " + Self.clean(cities)
    }

    /// `text` cut or padded to `width` columns (an ellipsis marks a cut).
    func fit(_ text: String, _ width: Int) -> String {
        if text.count <= width { return text.padding(toLength: width, withPad: " ", startingAt: 0) }
        return String(text.prefix(width - 1)) + (ascii ? "~" : "…")
    }

    func paint(_ text: String, sgr: String) -> String {
        color && !text.isEmpty ? "\u{1B}[\(sgr)m\(text)\u{1B}[0m" : text
    }

    /// Text from the API with anything that could move the cursor replaced.
    static func clean(_ text: String) -> String {
        String(
            String.UnicodeScalarView(
                text.unicodeScalars.map { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) ? "?" : $0 }))
    }

    /// "Tue 12-01".
    static func dayLabel(_ date: CivilDate) -> String {
        let names = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        return
            "\(names[date.weekday]) \(date.month < 10 ? "0" : "")\(date.month)-\(date.day < 10 ? "0" : "")\(date.day)"
    }
}

extension String {
    var trailingTrimmed: String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}
