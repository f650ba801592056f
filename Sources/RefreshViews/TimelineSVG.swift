import Foundation
import RefreshCore
import TZData

/// Draws a `Timeline` as an SVG element for the status page: the same rows, marks and spans as
/// the terminal drawing, each element carrying its data (`data-segment`, `data-at`, `data-jobs`)
/// and a `<title>` a browser shows on hover.
public struct TimelineSVG: Sendable {
    public var width: Int
    let labelWidth = 250
    let rowHeight = 26
    let headerHeight = 44

    public init(width: Int = 1100) { self.width = width }

    public func render(_ timeline: Timeline) -> String {
        let grid = Double(width - labelWidth - 10)
        let span = timeline.end.timeIntervalSince(timeline.start)
        func x(_ t: Date) -> Double {
            let value = Double(labelWidth) + (t.timeIntervalSince(timeline.start) / span) * grid
            return (value * 10).rounded() / 10
        }
        let height = headerHeight + rowHeight * timeline.rows.count + 8
        var out =
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" viewBox=\"0 0 \(width) \(height)\" "
            + "width=\"\(width)\" height=\"\(height)\" role=\"img\" aria-label=\"Budget timeline\" "
            + "data-start=\"\(Timestamp.rfc3339(timeline.start))\" data-end=\"\(Timestamp.rfc3339(timeline.end))\">\n"
        // The axis: UTC days and hour ticks.
        let hourStep = [1, 2, 3, 4, 6, 12, 24].first { Double($0 * 3600) / span * grid >= 40 } ?? 24
        var tick =
            (timeline.start.timeIntervalSince1970 / Double(hourStep * 3600)).rounded(.up) * Double(hourStep * 3600)
        while tick < timeline.end.timeIntervalSince1970 {
            let at = Date(timeIntervalSince1970: tick)
            let hour = Int(tick.truncatingRemainder(dividingBy: 86400) / 3600)
            let px = x(at)
            if hour == 0 {
                let date = CivilDate(dayNumber: Int64((tick / 86400).rounded(.down)))
                out += "<text class=\"day\" x=\"\(px + 3)\" y=\"14\">\(TimelineText.dayLabel(date)) UTC</text>\n"
            }
            out += "<line class=\"tick\" x1=\"\(px)\" y1=\"\(headerHeight - 12)\" x2=\"\(px)\" y2=\"\(height)\"/>"
            out += "<text class=\"hour\" x=\"\(px)\" y=\"\(headerHeight - 16)\">\(hour < 10 ? "0" : "")\(hour)</text>\n"
            tick += Double(hourStep * 3600)
        }
        for (index, row) in timeline.rows.enumerated() {
            let top = headerHeight + index * rowHeight
            let middle = Double(top) + Double(rowHeight) / 2
            let kind = row.segmentID == nil ? "account" : "segment"
            out +=
                "<g class=\"row \(kind)\" data-account=\"\(Self.escape(row.account))\""
                + (row.segmentID.map { " data-segment=\"\(Self.escape($0))\"" } ?? "")
                + " data-zones=\"\(Self.escape(row.zones.joined(separator: " ")))\">\n"
            out +=
                "<rect class=\"band\" x=\"0\" y=\"\(top + 1)\" width=\"\(width)\" height=\"\(rowHeight - 2)\"/>"
            let label =
                row.segmentID.map { "\(String($0.prefix(8))) \(row.zones.joined(separator: " + "))" }
                ?? "\(row.account) (UTC day)"
            out +=
                "<text class=\"label\" x=\"8\" y=\"\(middle + 4)\">\(Self.escape(label))<title>"
                + "\(Self.escape(row.segmentID ?? row.account))</title></text>\n"
            for s in row.spans {
                let from = x(s.from)
                out +=
                    "<rect class=\"span \(s.kind.rawValue)\" x=\"\(from)\" y=\"\(top + 7)\" "
                    + "width=\"\(max(1, x(s.until) - from))\" height=\"\(rowHeight - 14)\" "
                    + "data-from=\"\(Timestamp.rfc3339(s.from))\" data-until=\"\(Timestamp.rfc3339(s.until))\">"
                    + "<title>\(Self.spanTitle(s.kind)) until \(Timestamp.rfc3339(s.until))</title></rect>\n"
            }
            for m in row.midnights {
                out +=
                    "<line class=\"midnight\" x1=\"\(x(m))\" y1=\"\(top + 2)\" x2=\"\(x(m))\" y2=\"\(top + rowHeight - 2)\" "
                    + "data-at=\"\(Timestamp.rfc3339(m))\"><title>midnight \(Timestamp.rfc3339(m))</title></line>\n"
            }
            for m in row.marks {
                let px = x(m.at)
                let at = Timestamp.rfc3339(m.at)
                if m.kind == .planned {
                    out +=
                        "<g class=\"send\" data-at=\"\(at)\" data-jobs=\"\(m.jobs)\">"
                        + "<rect x=\"\(px - 7)\" y=\"\(middle - 7)\" width=\"14\" height=\"14\" rx=\"2\" "
                        + "transform=\"rotate(45 \(px) \(middle))\"/>"
                        + "<text x=\"\(px)\" y=\"\(middle + 4)\">\(m.jobs)</text>"
                        + "<title>planned \(at): \(m.jobs) job\(m.jobs == 1 ? "" : "s")</title></g>\n"
                } else {
                    out +=
                        "<circle class=\"refresh \(m.kind.rawValue)\" cx=\"\(px)\" cy=\"\(middle)\" r=\"6\" "
                        + "data-at=\"\(at)\"><title>\(m.kind.rawValue) \(at)</title></circle>\n"
                }
            }
            out += "</g>\n"
        }
        let now = x(timeline.now)
        out +=
            "<line class=\"now\" x1=\"\(now)\" y1=\"\(headerHeight - 10)\" x2=\"\(now)\" y2=\"\(height)\"/>"
            + "<text class=\"now\" x=\"\(now + 3)\" y=\"\(headerHeight - 2)\">now</text>\n"
        out += "</svg>"
        return out
    }

    static func spanTitle(_ kind: Timeline.Span.Kind) -> String {
        TimelineText.spanNames.first { $0.0 == kind }?.1 ?? kind.rawValue
    }

    /// Text for HTML or XML content and attribute values.
    public static func escape(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default:
                if scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) {
                    out += "?"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }
}
