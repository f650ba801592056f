import Foundation
import Glibc
import TestSupport
import Testing

/// A dry-run daemon with two segments refreshed once each and a second job of each waiting for
/// the interval rule.
func populatedDaemon(extra: String = "") throws -> RunningDaemon {
    let daemon = try RunningDaemon(extra: extra)
    // Below the other suites' priority: they measure time (see ViewsAgainstADaemon).
    setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(daemon.process.processIdentifier), 10)
    let config = daemon.directory + "/refreshd.toml"
    for (segment, zone) in [
        (ViewsAgainstADaemon.TimelineCommandTests.santiago, "America/Santiago"),
        (ViewsAgainstADaemon.TimelineCommandTests.lordHowe, "Australia/Lord_Howe"),
    ] {
        for note in ["first", "second"] {
            let result = try refreshctl([
                "enqueue", "--segment", segment, "--time-zone", zone, "--note", note, "--config", config,
            ])
            #expect(result.status == 0, "\(result.stderr)")
            if note == "first" {
                // The first is sent (dry-run) before the second arrives, so the second waits an hour.
                var sent = false
                for _ in 0..<100 where !sent {
                    usleep(100_000)
                    sent = try daemon.ctl(["jobs", "--state", "sent", "--json"]).stdout.contains(segment)
                }
                #expect(sent)
            }
        }
    }
    return daemon
}

/// The suites that look at a running refreshd through its views (timeline, page, metrics): one at a
/// time, their daemons and browser at a lower CPU priority. Each starts processes (refreshd,
/// refreshctl, tmux, Chromium, promtool); run side by side they starved the suites that measure
/// time (the watchdog, lock and connection-limit tests) on 2 cores.
@Suite("views against a running refreshd", .serialized)
struct ViewsAgainstADaemon {}

extension ViewsAgainstADaemon {
    /// `refreshctl plan --timeline` against a running refreshd, through a pipe and through a real
    /// pseudo-terminal (tmux) at two widths.
    @Suite("refreshctl plan --timeline", .serialized)
    struct TimelineCommandTests {
        static let santiago = "5a1e0000-aaaa-4a4a-9a9a-000000000001"
        static let lordHowe = "1d0e0000-bbbb-4b4b-9b9b-000000000002"

        /// Through a pipe: no colour, 100 columns ($COLUMNS), one row per segment with its zone, the
        /// dry-run refreshes and the planned sends, the slots and the legend.
        @Test func drawsThroughAPipe() async throws {
            try await offPool {
                let daemon = try populatedDaemon()
                defer { daemon.stop() }
                let result = try daemon.ctl(["plan", "--timeline"])
                #expect(result.status == 0, "\(result.stderr)")
                let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
                #expect(!result.stdout.contains("\u{1B}"), "no colour through a pipe")
                #expect(lines.allSatisfy { $0.count <= 100 }, "\(result.stdout)")
                let santiago = lines.first { $0.hasPrefix("  5a1e0000 America/Santiago") }
                let lordHowe = lines.first { $0.hasPrefix("  1d0e0000 Australia/Lord_Howe") }
                #expect(santiago?.count == 100 && lordHowe?.count == 100, "\(result.stdout)")
                // Each row: its dry-run refresh (◍) and one planned send of one job (1).
                for row in [santiago, lordHowe].compactMap({ $0 }) {
                    #expect(row.contains("◍") && row.contains("1"), "\(row)")
                }
                #expect(lines.contains { $0.hasPrefix("default (UTC day)") })
                // The slots: 2 used and 2 planned in all (the planned ones may fall on the next UTC day).
                var used = 0
                var planned = 0
                for line in lines {
                    guard let match = line.firstMatch(of: /(\d+) used, (\d+) planned, \d+ free/) else { continue }
                    used += Int(match.1)!
                    planned += Int(match.2)!
                }
                #expect(used == 2 && planned == 2, "\(result.stdout)")
                #expect(result.stdout.contains("1-9 planned send (its jobs)"))

                // ASCII, a segment chosen, a narrower width.
                let ascii = try daemon.ctl([
                    "plan", "--timeline", "--ascii", "--width", "60", "--segment", Self.lordHowe, "--hours", "24",
                ])
                #expect(ascii.status == 0, "\(ascii.stderr)")
                #expect(ascii.stdout.unicodeScalars.allSatisfy { $0.isASCII }, "\(ascii.stdout)")
                #expect(
                    !ascii.stdout.contains("5a1e0000") && ascii.stdout.contains("1d0e0000 Lord_Howe"), "\(ascii.stdout)"
                )

                // Mistakes are named.
                let both = try daemon.ctl(["plan", "--timeline", "--time-zone", "UTC"])
                #expect(
                    both.status == 2 && both.stderr.contains("--timeline draws the queue as it is"), "\(both.stderr)")
                let account = try daemon.ctl(["plan", "--timeline", "--account", "nope"])
                #expect(account.status != 0 && account.stderr.contains("no account \"nope\""), "\(account.stderr)")
                let hours = try daemon.ctl(["plan", "--timeline", "--hours", "0"])
                #expect(hours.status == 2 && hours.stderr.contains("--hours is 1 to 336"), "\(hours.stderr)")
            }
        }

        /// Through a real terminal (tmux) at 120 and 64 columns: colour, rows exactly as wide as the
        /// terminal; NO_COLOR turns the colour off.
        @Test func drawsOnATerminal() async throws {
            try await offPool {
                let daemon = try populatedDaemon()
                defer { daemon.stop() }
                let tmuxSocket = daemon.directory + "/tmux.sock"
                defer { _ = try? spawnAndWait("/usr/bin/tmux", ["-S", tmuxSocket, "kill-server"]) }
                func screen(width: Int, noColor: Bool) throws -> String {
                    let session = "w\(width)\(noColor ? "n" : "c")"
                    let command =
                        (noColor ? "NO_COLOR=1 " : "")
                        + "\(refreshctlPath) plan --timeline --socket \(daemon.socket); sleep 120"
                    let started = try spawnAndWait(
                        "/usr/bin/tmux",
                        ["-S", tmuxSocket, "new-session", "-d", "-s", session, "-x", "\(width)", "-y", "40", command],
                        environment: ["TERM": "xterm-256color", "PATH": "/usr/bin:/bin", "HOME": daemon.directory])
                    #expect(started.status == 0, "\(started.stderr)")
                    var text = ""
                    for _ in 0..<250 where !text.contains("▚ hold") {
                        usleep(20_000)
                        text = try spawnAndWait(
                            "/usr/bin/tmux", ["-S", tmuxSocket, "capture-pane", "-p", "-e", "-t", session]
                        ).stdout
                    }
                    return text
                }
                for width in [120, 64] {
                    let coloured = try screen(width: width, noColor: false)
                    #expect(coloured.contains("\u{1B}["), "colour on a terminal:\n\(coloured)")
                    let plain = coloured.replacingOccurrences(
                        of: #"\u001B\[[0-9;]*m"#, with: "", options: .regularExpression)
                    let rows = plain.split(separator: "\n").filter {
                        $0.hasPrefix("  5a1e0000") || $0.hasPrefix("  1d0e0000")
                    }
                    #expect(rows.count == 2, "\(plain)")
                    #expect(
                        rows.allSatisfy { $0.count == width }, "rows fill the terminal's \(width) columns:\n\(plain)")
                    #expect(plain.split(separator: "\n").allSatisfy { $0.count <= width })
                    let uncoloured = try screen(width: width, noColor: true)
                    #expect(!uncoloured.contains("\u{1B}["), "NO_COLOR:\n\(uncoloured)")
                    #expect(uncoloured.contains("default (UTC day)"))
                }
            }
        }
    }
}
