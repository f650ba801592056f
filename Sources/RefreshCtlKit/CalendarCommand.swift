import ArgumentParser
import Foundation
import RefreshCore
import TZData

/// `refreshctl calendar`: the local day windows of a zone, read from the host's tz database.
struct CalendarCommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "calendar",
        abstract: "Show when each local day starts and ends in a time zone (when a segment's count resets).",
        discussion: """
            SendGrid resets a segment's refresh count at midnight in the segment's time zone. This prints, \
            for each local date, the window [start, end) in UTC, read from the host's tz database ($TZDIR, \
            else /usr/share/zoneinfo), not from the Swift toolchain's own copy.

            A day whose midnight falls in a DST gap starts when the gap ends (status late_start); a date the \
            zone skipped entirely has an empty window (status skipped). Works without the daemon.

            Exit codes: 0 success, 1 the tz database cannot be read, 2 bad input (unknown zone, bad date).

            Examples:
              refreshctl calendar --time-zone America/Santiago
              refreshctl calendar --time-zone Pacific/Apia --from 2011-12-29 --to 2011-12-31
              refreshctl calendar --time-zone Europe/Paris --json
            """
    )

    @Option(
        name: .customLong("time-zone"),
        help: "An IANA zone name, exactly as in the tz database (e.g. America/Chicago).",
        completion: Completions.timeZone)
    var timeZone: String

    @Option(help: ArgumentHelp("First local date, YYYY-MM-DD (default: today in the zone).", valueName: "YYYY-MM-DD"))
    var from: String?

    @Option(help: ArgumentHelp("Last local date, YYYY-MM-DD (default: 6 days after --from).", valueName: "YYYY-MM-DD"))
    var to: String?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    /// Longest range accepted, in days.
    static let maximumDays: Int64 = 36_600

    mutating func run(output: OutputSink) throws {
        let directory = try hostZoneDirectory()
        let rules: ZoneRules
        do {
            rules = try directory.rules(for: timeZone)
        } catch {
            throw CommandFailure(
                "--time-zone: " + error.message,
                exit: error.suggestions.isEmpty && directory.contains(timeZone) ? .error : .usage)
        }
        let first: CivilDate
        if let from {
            guard let date = CivilDate(iso: from) else {
                throw CommandFailure("--from: \"\(from)\" is not a date in the form YYYY-MM-DD", exit: .usage)
            }
            first = date
        } else {
            let now = Int64(Date().timeIntervalSince1970.rounded(.down))
            first = rules.dayWindow(containing: now).date
        }
        let last: CivilDate
        if let to {
            guard let date = CivilDate(iso: to) else {
                throw CommandFailure("--to: \"\(to)\" is not a date in the form YYYY-MM-DD", exit: .usage)
            }
            last = date
        } else {
            last = CivilDate(dayNumber: first.dayNumber + 6)
        }
        guard last >= first else {
            throw CommandFailure("--to (\(last)) is before --from (\(first))", exit: .usage)
        }
        guard last.dayNumber - first.dayNumber < Self.maximumDays else {
            throw CommandFailure("the range \(first) to \(last) is longer than \(Self.maximumDays) days", exit: .usage)
        }
        var windows: [DayWindow] = []
        var date = first
        while date <= last {
            windows.append(rules.dayWindow(for: date))
            date = date.next
        }
        if json {
            output.line(CalendarReport(directory: directory, rules: rules, windows: windows).json())
        } else {
            CalendarReport(directory: directory, rules: rules, windows: windows).table(into: output)
        }
    }
}

/// The calendar of a zone, as JSON or as a table.
struct CalendarReport {
    let directory: ZoneInfoDirectory
    let rules: ZoneRules
    let windows: [DayWindow]

    func json() -> String {
        var lines: [String] = []
        for window in windows {
            lines.append(
                "{\"date\":\"\(window.date)\",\"start\":\"\(Timestamp.rfc3339(window.start))\","
                    + "\"end\":\"\(Timestamp.rfc3339(window.end))\",\"start_unix\":\(window.start),"
                    + "\"end_unix\":\(window.end),\"seconds\":\(window.seconds),\"status\":\"\(window.status.rawValue)\"}"
            )
        }
        return "{\"tzdata_version\":\(jsonString(directory.version ?? "unknown")),"
            + "\"tz_directory\":\(jsonString(directory.path)),\"time_zone\":\(jsonString(rules.name)),"
            + "\"days\":[" + lines.joined(separator: ",") + "]}"
    }

    func table(into output: OutputSink) {
        output.line("Time zone \(rules.name) (tz data \(directory.version ?? "unknown") from \(directory.path))")
        output.line(
            "DATE        START (UTC)           END (UTC)             LENGTH   LOCAL START                STATUS")
        for window in windows {
            let local = Timestamp.rfc3339(window.start, offset: rules.utcOffset(at: window.start))
            output.line(
                [
                    "\(window.date)", "  ", Timestamp.rfc3339(window.start), "  ", Timestamp.rfc3339(window.end), "  ",
                    pad(length(window.seconds), 7), "  ", pad(local, 25), "  ", window.status.rawValue,
                ].joined())
        }
    }

    private func length(_ seconds: Int64) -> String {
        let hours = seconds / 3600
        let minutes = seconds % 3600 / 60
        return minutes == 0 ? "\(hours) h" : "\(hours) h \(minutes)"
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }
}

/// A JSON string literal.
func jsonString(_ value: String) -> String { JSONText.quote(value) }

/// The host's tz database ($TZDIR, else /usr/share/zoneinfo); unreadable is exit 1.
func hostZoneDirectory() throws -> ZoneInfoDirectory {
    do {
        return try ZoneInfoDirectory(
            path: ZoneInfoDirectory.defaultPath(environment: ProcessInfo.processInfo.environment))
    } catch {
        throw CommandFailure(error.message, exit: .error)
    }
}
