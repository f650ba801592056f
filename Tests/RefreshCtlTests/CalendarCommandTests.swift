import Foundation
import TestSupport
import Testing

@testable import RefreshCtlKit

/// The built `refreshctl`, next to the test bundle in the build products directory.
let refreshctlPath: String = {
    let products = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [products, products.deletingLastPathComponent()] {
        let path = candidate.appendingPathComponent("refreshctl").path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    var root = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { root.deleteLastPathComponent() }
    return root.appendingPathComponent(".build/debug/refreshctl").path
}()

struct ProcessResult {
    let stdout: String
    let stderr: String
    let status: Int32
}

/// Runs the real executable with a fixed terminal width and an optional TZDIR (posix_spawn:
/// see `spawnAndWait`).
func refreshctl(_ arguments: [String], environment extra: [String: String] = [:]) throws -> ProcessResult {
    var environment = ProcessInfo.processInfo.environment
    environment["COLUMNS"] = "100"
    for (key, value) in extra { environment[key] = value }
    let result = try spawnAndWait(refreshctlPath, arguments, environment: environment)
    return ProcessResult(stdout: result.stdout, stderr: result.stderr, status: result.status)
}

@Suite("refreshctl calendar")
struct CalendarCommandTests {
    /// The JSON document has the documented shape and values (Santiago's late start).
    @Test func jsonOutput() throws {
        let result = try refreshctl([
            "calendar", "--time-zone", "America/Santiago", "--from", "2024-09-07", "--to", "2024-09-09", "--json",
        ])
        #expect(result.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect(object["time_zone"] as? String == "America/Santiago")
        #expect(object["tz_directory"] as? String == "/usr/share/zoneinfo")
        #expect((object["tzdata_version"] as? String)?.count == 5)
        let days = object["days"] as! [[String: Any]]
        #expect(days.count == 3)
        #expect(Set(days[1].keys) == ["date", "start", "end", "start_unix", "end_unix", "seconds", "status"])
        #expect(days[1]["date"] as? String == "2024-09-08")
        #expect(days[1]["start"] as? String == "2024-09-08T04:00:00Z")
        #expect(days[1]["end"] as? String == "2024-09-09T03:00:00Z")
        #expect(days[1]["start_unix"] as? Int == 1_725_768_000)
        #expect(days[1]["end_unix"] as? Int == 1_725_850_800)
        #expect(days[1]["seconds"] as? Int == 82800)
        #expect(days[1]["status"] as? String == "late_start")
    }

    /// A skipped date has start = end = the next date's start.
    @Test func skippedDate() throws {
        let result = try refreshctl([
            "calendar", "--time-zone", "Pacific/Apia", "--from", "2011-12-30", "--to", "2011-12-31", "--json",
        ])
        let days =
            (try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any])["days"]
            as! [[String: Any]]
        #expect(days[0]["status"] as? String == "skipped")
        #expect(days[0]["start_unix"] as? Int == days[1]["start_unix"] as? Int)
        #expect(days[0]["end_unix"] as? Int == days[1]["start_unix"] as? Int)
    }

    /// The table shows UTC and local starts, lengths and statuses.
    @Test func table() throws {
        let result = try refreshctl([
            "calendar", "--time-zone", "Atlantic/Azores", "--from", "2024-10-27", "--to", "2024-10-27",
        ])
        #expect(result.status == 0)
        #expect(result.stdout.hasPrefix("Time zone Atlantic/Azores (tz data "))
        #expect(
            result.stdout.contains(
                "2024-10-27  2024-10-27T00:00:00Z  2024-10-28T01:00:00Z  25 h     2024-10-27T00:00:00+00:00  ok"))
    }

    /// Default range: today in the zone and the next six days.
    @Test func defaultRange() throws {
        let result = try refreshctl(["calendar", "--time-zone", "UTC", "--json"])
        let days =
            (try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any])["days"]
            as! [[String: Any]]
        #expect(days.count == 7)
        let today = Int64(Date().timeIntervalSince1970) / 86400 * 86400
        #expect(days[0]["start_unix"] as? Int64 == today || days[0]["start_unix"] as? Int64 == today - 86400)
    }

    /// Bad input exits 2 with a message naming the problem; an unreadable database exits 1.
    @Test(arguments: [
        (["calendar", "--time-zone", "america/chicago"], 2, "unknown time zone \"america/chicago\""),
        (["calendar", "--time-zone", "PST"], 2, "did you mean \"America/Los_Angeles\""),
        (["calendar", "--time-zone", "UTC", "--from", "2024-02-30"], 2, "--from: \"2024-02-30\" is not a date"),
        (["calendar", "--time-zone", "UTC", "--from", "2024-03-02", "--to", "2024-03-01"], 2, "is before --from"),
        (
            ["calendar", "--time-zone", "UTC", "--from", "1900-01-01", "--to", "2100-01-01"], 2,
            "longer than 36600 days"
        ),
        (["calendar"], 2, "Missing expected argument '--time-zone"),
        (["calendar", "--time-zone", "UTC", "--bogus"], 2, "Unknown option '--bogus'"),
    ])
    func badInput(_ arguments: [String], _ status: Int32, _ message: String) throws {
        let result = try refreshctl(arguments)
        #expect(result.status == status)
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(result.stdout.isEmpty)
    }

    /// $TZDIR is honoured; a missing directory is exit 1 naming it.
    @Test func tzdir() throws {
        let result = try refreshctl(["calendar", "--time-zone", "UTC"], environment: ["TZDIR": "/nonexistent/zi"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("/nonexistent/zi does not exist"))
    }

    /// Help is good enough to learn the tool from (asserted verbatim).
    @Test func help() throws {
        let result = try refreshctl(["calendar", "--help"])
        #expect(result.status == 0)
        #expect(
            result.stdout == """
                OVERVIEW: Show when each local day starts and ends in a time zone (when a segment's count resets).

                SendGrid resets a segment's refresh count at midnight in the segment's time zone. This prints, for
                each local date, the window [start, end) in UTC, read from the host's tz database ($TZDIR, else
                /usr/share/zoneinfo), not from the Swift toolchain's own copy.

                A day whose midnight falls in a DST gap starts when the gap ends (status late_start); a date the
                zone skipped entirely has an empty window (status skipped). Works without the daemon.

                Exit codes: 0 success, 1 the tz database cannot be read, 2 bad input (unknown zone, bad date).

                Examples:
                  refreshctl calendar --time-zone America/Santiago
                  refreshctl calendar --time-zone Pacific/Apia --from 2011-12-29 --to 2011-12-31
                  refreshctl calendar --time-zone Europe/Paris --json

                USAGE: refreshctl calendar --time-zone <time-zone> [--from <YYYY-MM-DD>] [--to <YYYY-MM-DD>] [--json]

                OPTIONS:
                  --time-zone <time-zone> An IANA zone name, exactly as in the tz database (e.g. America/Chicago).
                  --from <YYYY-MM-DD>     First local date, YYYY-MM-DD (default: today in the zone).
                  --to <YYYY-MM-DD>       Last local date, YYYY-MM-DD (default: 6 days after --from).
                  --json                  Print JSON instead of a table.
                  --version               Show the version.
                  -h, --help              Show help information.


                """)
        let root = try refreshctl(["--help"])
        #expect(root.stdout.contains("  2  usage: bad flag or bad input (unknown time zone, invalid date or id)"))
        #expect(root.stdout.contains("calendar"))
    }

    /// In process, the same entry point returns the same codes (used by the executable).
    @Test func inProcessExitCodes() {
        #expect(Refreshctl.runCapturing(["calendar", "--time-zone", "Nowhere/Land"]).code == 2)
        #expect(
            Refreshctl.runCapturing(["calendar", "--time-zone", "UTC", "--from", "2024-01-01", "--to", "2024-01-01"])
                .code == 0)
        #expect(Refreshctl.runCapturing(["--help"]).code == 0)
    }
}
