import Foundation
import RefreshCore
import TZData

/// The status page (GET /ui): one self-contained HTML document, no script and no external asset:
/// each account's budget as a gauge, the timeline (`TimelineSVG`), the queue, the last refreshes
/// with SendGrid's answers, and the blocks and holds in force. Read-only; it shows nothing the
/// read routes do not, and never a key.
public struct StatusPage: Sendable {
    /// refreshd's version and the tz data's, for the header.
    public var version: String
    public var tzdata: String?
    /// How often the browser reloads the page, seconds.
    public var refreshSeconds = 30

    public init(version: String, tzdata: String?) {
        self.version = version
        self.tzdata = tzdata
    }

    public func render(_ view: BudgetView, timeline: Timeline) -> String {
        let e = TimelineSVG.escape
        let now = Timestamp.rfc3339(view.now)
        var html = """
            <!DOCTYPE html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <meta http-equiv="refresh" content="\(refreshSeconds)">
            <title>refreshd: budget and queue</title>
            <style>\(Self.style)</style>
            </head>
            <body>
            <header><h1>refreshd</h1><p>version \(e(version)) · tz data \(e(tzdata ?? "unknown")) · \
            <time datetime="\(now)">\(now)</time> · reloads every \(refreshSeconds) s</p></header>

            """
        // Budgets.
        html += "<section id=\"budget\"><h2>Budget today (UTC)</h2><div class=\"gauges\">\n"
        for account in view.accounts {
            let planned =
                timeline.days.first { $0.account == account.account && $0.date == Self.utcDate(view.now) }?
                .planned ?? 0
            html += gauge(account, planned: planned)
        }
        html += "</div></section>\n"
        // The timeline and its legend.
        html += "<section id=\"timeline\"><h2>Timeline</h2>\n"
        html += TimelineSVG().render(timeline)
        html += "\n<p class=\"legend\">"
        html += Timeline.Mark.Kind.allCases.map {
            "<span class=\"key refresh \($0.rawValue)\"></span>\(Self.markName($0))"
        }
        .joined(separator: " ")
        html +=
            " "
            + TimelineText.spanNames.map { "<span class=\"key span \($0.0.rawValue)\"></span>\($0.1)" }
            .joined(separator: " ")
        html += " <span class=\"key midnight\"></span>local midnight</p></section>\n"
        // The queue.
        html += "<section id=\"queue\"><h2>Queue (\(view.jobs.count))</h2>\n"
        html += table(
            ["Job", "Account", "Segment", "Fate", "When (UTC)", "Why"],
            view.jobs.prefix(200).map { job in
                [
                    "\(job.id)", e(job.account), "<code>\(e(job.segmentID))</code>", e(job.fate.rawValue),
                    job.at.map(Timestamp.rfc3339) ?? "–", e(job.reason ?? ""),
                ]
            }, empty: "Nothing queued.", rowClass: "job")
        html += "</section>\n"
        // The last refreshes.
        let last = view.refreshes.sorted { $0.startedAt > $1.startedAt }.prefix(20)
        html += "<section id=\"refreshes\"><h2>Last refreshes</h2>\n"
        html += table(
            ["#", "Account", "Segment", "Zone", "Outcome", "HTTP", "Finished (UTC)"],
            last.map { r in
                [
                    "\(r.id)", e(r.account), "<code>\(e(r.segmentID))</code>", e(r.timeZone),
                    "<span class=\"outcome \(e(r.outcome.rawValue))\">\(e(r.outcome.rawValue))</span>",
                    r.httpStatus.map(String.init) ?? "–",
                    Timestamp.rfc3339(r.at),
                ]
            }, empty: "No refreshes yet.", rowClass: "refresh")
        html += "</section>\n"
        // Blocks and holds.
        html += "<section id=\"blocks\"><h2>Blocks learned from SendGrid</h2>\n"
        html += table(
            ["#", "Account", "Scope", "Until (UTC)", "Reason"],
            view.blocks.map { b in
                [
                    "\(b.id)", e(b.account), b.segmentID.map { "<code>\(e($0))</code>" } ?? "whole account",
                    Timestamp.rfc3339(b.until), e(b.reason),
                ]
            }, empty: "None in force.", rowClass: "block")
        html += "</section>\n<section id=\"holds\"><h2>Holds</h2>\n"
        html += table(
            ["#", "Account", "Scope", "Since (UTC)", "Reason"],
            view.holds.map { h in
                [
                    "\(h.id)", e(h.account), h.segmentID.map { "<code>\(e($0))</code>" } ?? "whole account",
                    Timestamp.rfc3339(h.since), e(h.reason),
                ]
            }, empty: "None.", rowClass: "hold")
        html += "</section>\n</body>\n</html>\n"
        return html
    }

    /// A half-circle gauge: used (green), planned today (blue), free (grey), of the account's limit.
    func gauge(_ account: BudgetView.Account, planned: Int) -> String {
        let e = TimelineSVG.escape
        let limit = max(1, account.limit)
        let used = min(account.used, limit)
        let planned = min(planned, limit - used)
        func point(_ fraction: Double) -> String {
            let angle = Double.pi * fraction
            let x = 80 - 60 * cos(angle)
            let y = 75 - 60 * sin(angle)
            return "\((x * 10).rounded() / 10) \((y * 10).rounded() / 10)"
        }
        func arc(_ from: Int, _ to: Int, _ cls: String) -> String {
            guard to > from else { return "" }
            let a = Double(from) / Double(limit)
            let b = Double(to) / Double(limit)
            return "<path class=\"\(cls)\" d=\"M \(point(a)) A 60 60 0 0 1 \(point(b))\"/>"
        }
        var status = "\(account.remaining) of \(account.limit) left"
        if account.dryRun { status += " · dry-run" }
        if let reason = account.pausedReason, account.paused { status += " · paused: " + reason }
        return """
            <figure class="gauge" data-account="\(e(account.account))" data-used="\(account.used)" \
            data-planned="\(planned)" data-limit="\(account.limit)" data-remaining="\(account.remaining)">
            <svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 160 92" width="160" height="92" role="img" \
            aria-label="\(e(account.account)): \(account.used) used, \(planned) planned, \(account.limit) a day">
            \(arc(0, limit, "free"))\(arc(0, used, "used"))\(arc(used, used + planned, "planned"))
            <text x="80" y="72" class="big">\(account.remaining)</text><text x="80" y="88">of \(account.limit) left</text>
            </svg>
            <figcaption><strong>\(e(account.account))</strong> · \(account.used) used, \(planned) planned · \
            \(e(status))\(account.resetsAt.map { " · resets " + Timestamp.rfc3339($0) } ?? "")</figcaption>
            </figure>

            """
    }

    func table(_ header: [String], _ rows: [[String]], empty: String, rowClass: String) -> String {
        guard !rows.isEmpty else { return "<p class=\"empty\">\(empty)</p>\n" }
        var out = "<table><thead><tr>" + header.map { "<th>\($0)</th>" }.joined() + "</tr></thead><tbody>\n"
        for row in rows {
            out += "<tr class=\"\(rowClass)\">" + row.map { "<td>\($0)</td>" }.joined() + "</tr>\n"
        }
        return out + "</tbody></table>\n"
    }

    static func markName(_ kind: Timeline.Mark.Kind) -> String {
        switch kind {
        case .accepted: return "accepted"
        case .uncertain: return "uncertain"
        case .external: return "external"
        case .dryRun: return "dry-run"
        case .rateLimited: return "429"
        case .planned: return "planned send (jobs)"
        }
    }

    static func utcDate(_ t: Date) -> CivilDate { CivilDate(dayNumber: Timeline.floorDay(t)) }

    static let style = """
        body{font:14px/1.4 system-ui,"DejaVu Sans",sans-serif;margin:16px 24px;color:#1d2330;background:#fafbfc}
        h1{font-size:22px;margin:0}h2{font-size:16px;margin:22px 0 8px}header p{margin:2px 0;color:#5a6372}
        .gauges{display:flex;flex-wrap:wrap;gap:20px}figure.gauge{margin:0;padding:8px 12px;background:#fff;
        border:1px solid #dde1e7;border-radius:6px}figure.gauge path{fill:none;stroke-width:16}
        path.free{stroke:#e3e7ee}path.used{stroke:#2e9d5b}path.planned{stroke:#2f7fd8}
        figure.gauge text{text-anchor:middle;font-size:11px;fill:#5a6372}figure.gauge text.big{font-size:24px;
        fill:#1d2330;font-weight:600}figcaption{font-size:12px;color:#5a6372;max-width:260px}
        svg.timeline{background:#fff;border:1px solid #dde1e7;border-radius:6px;max-width:100%;height:auto}
        svg.timeline text{font-size:11px;fill:#5a6372}svg.timeline text.label{font-size:12px;fill:#1d2330;
        font-family:"DejaVu Sans Mono",monospace}svg.timeline text.day{font-weight:600;fill:#1d2330}
        g.row:nth-child(even) rect.band{fill:#f4f6f9}rect.band{fill:#fff}g.row.account rect.band{fill:#eef3fb}
        line.tick{stroke:#eef0f3}line.midnight{stroke:#4a5d80;stroke-width:2}line.now{stroke:#c0399a;
        stroke-width:2}text.now{fill:#c0399a!important;font-weight:600}
        circle.refresh{stroke:#fff;stroke-width:1.5}circle.accepted{fill:#2e9d5b}circle.uncertain{fill:#e0a526}
        circle.external{fill:#6b7fa8}circle.dry_run{fill:#7cc49a}circle.rate_limited{fill:#d23c3c}
        g.send rect{fill:#2f7fd8}g.send text{fill:#fff!important;font-size:10px;text-anchor:middle;font-weight:600}
        rect.span{opacity:.55}rect.segment_interval{fill:#f0c75e}rect.segment_daily{fill:#e99a3c}
        rect.account_daily{fill:#d9774b}rect.learned_block{fill:#d23c3c}rect.not_before{fill:#b9c2d0}
        rect.queue{fill:#cfd6e2}rect.hold{fill:#b45cc8}
        .legend{font-size:12px;color:#5a6372}.key{display:inline-block;width:12px;height:12px;margin:0 4px 0 10px;
        vertical-align:-2px;border-radius:2px}.key.refresh{border-radius:6px}.key.accepted{background:#2e9d5b}
        .key.uncertain{background:#e0a526}.key.external{background:#6b7fa8}.key.dry_run{background:#7cc49a}
        .key.rate_limited{background:#d23c3c}.key.planned{background:#2f7fd8;transform:rotate(45deg);
        border-radius:1px}.key.segment_interval{background:#f0c75e}.key.segment_daily{background:#e99a3c}
        .key.account_daily{background:#d9774b}.key.learned_block{background:#d23c3c}.key.not_before{background:#b9c2d0}
        .key.queue{background:#cfd6e2}.key.hold{background:#b45cc8}.key.midnight{width:2px;background:#4a5d80}
        table{border-collapse:collapse;background:#fff;border:1px solid #dde1e7;font-size:13px}
        th,td{padding:4px 10px;text-align:left;border-bottom:1px solid #eef0f3}th{background:#f4f6f9}
        code{font-size:12px}.empty{color:#5a6372}span.outcome.rate_limited{color:#d23c3c;font-weight:600}
        """
}
