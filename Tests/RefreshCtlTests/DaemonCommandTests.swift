import Foundation
import Glibc
import RefreshCore
import RefreshStore
import TestSupport
import Testing

@testable import RefreshCtlKit

/// The built `refreshd`, next to refreshctl.
let refreshdBinary: String = (refreshctlPath as NSString).deletingLastPathComponent + "/refreshd"

/// A running refreshd (dry-run: no key) in a temporary directory, with its socket.
final class RunningDaemon: @unchecked Sendable {
    let directory: String
    let socket: String
    let process = Process()
    private let lock = NSLock()
    private var collected = Data()

    /// `extra` is appended to the config file; `environment` adds variables (an API key); `reusing`
    /// starts it again on an earlier daemon's directory (its ledger).
    init(extra: String = "", environment added: [String: String] = [:], reusing: String? = nil) throws {
        directory =
            reusing
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("refreshctl-daemon-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        socket = directory + "/refreshd.sock"
        try """
        state_dir = "\(directory)/state"
        spool_dir = "\(directory)/spool"
        socket = "\(socket)"
        \(extra)
        """.write(toFile: directory + "/refreshd.toml", atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: refreshdBinary)
        process.arguments = ["run", "--config", directory + "/refreshd.toml"]
        var environment = ["HOME": directory, "PATH": "/usr/bin:/bin"]
        if let tzdir = ProcessInfo.processInfo.environment["TZDIR"] { environment["TZDIR"] = tzdir }
        for (name, value) in added { environment[name] = value }
        process.environment = environment
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = pipe
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            // End of output: stop watching (an empty read would otherwise repeat).
            if data.isEmpty { handle.readabilityHandler = nil }
            self?.lock.withLock { self?.collected.append(data) }
        }
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, !output.contains("refreshd started") { usleep(UInt32(0.02 * 1_000_000)) }
    }

    var output: String { lock.withLock { String(decoding: collected, as: UTF8.self) } }

    func stop() {
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
    }

    func ctl(_ arguments: [String]) throws -> ProcessResult { try refreshctl(arguments + ["--socket", socket]) }
}

let segmentOne = "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01"
let segmentTwo = "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a02"

@Suite("refreshctl against a running refreshd", .serialized)
struct DaemonCommandTests {
    /// status, budget, jobs, show, cancel, plan and history, as tables and as JSON, with their exit codes.
    @Test func everyCommand() async throws {
        try await offPool {
            let daemon = try RunningDaemon()
            defer { daemon.stop() }
            #expect(daemon.output.contains("refreshd started"), "\(daemon.output)")

            let status = try daemon.ctl(["status"])
            #expect(status.status == 0, "\(status.stderr)")
            #expect(
                status.stdout.contains("refreshd 0.1.0, running for") && status.stdout.contains("DRY-RUN")
                    && status.stdout.contains("queue: 0 queued"))

            // Two jobs for one segment in dry-run: the first goes at once, the next waits for the hour.
            let config = daemon.directory + "/refreshd.toml"
            #expect(
                try refreshctl([
                    "enqueue", "--segment", segmentOne, "--time-zone", "America/Chicago", "--config", config,
                ]).status == 0)
            var sent = false
            for _ in 0..<250 where !sent {
                sent = (try daemon.ctl(["jobs", "--state", "sent", "--json"])).stdout.contains(segmentOne)
                usleep(UInt32(0.02 * 1_000_000))
            }
            #expect(sent)
            #expect(
                try refreshctl([
                    "enqueue", "--segment", segmentOne, "--time-zone", "America/Chicago", "--note", "second",
                    "--config", config,
                ]).status == 0)
            var queuedID = ""
            for _ in 0..<250 where queuedID.isEmpty {
                let jobs = try daemon.ctl(["jobs", "--state", "queued", "--json"])
                let object = try JSONSerialization.jsonObject(with: Data(jobs.stdout.utf8)) as? [String: Any]
                if let first = (object?["jobs"] as? [[String: Any]])?.first { queuedID = "\(first["id"]!)" }
                usleep(UInt32(0.02 * 1_000_000))
            }
            #expect(!queuedID.isEmpty)
            // TAB after `refreshctl show ` offers the queued jobs, asked from the daemon.
            let completion = try refreshctl([
                "---completion", "show", "--", "positional@0", "2", "0", "refreshctl", "show", "", "--socket",
                daemon.socket,
            ])
            #expect(
                completion.status == 0 && completion.stdout.split(separator: "\n").map(String.init) == [queuedID],
                "\(completion)")

            let budget = try daemon.ctl(["budget"])
            #expect(budget.status == 0)
            #expect(
                budget.stdout.hasPrefix("ACCOUNT  LEFT TODAY") && budget.stdout.contains("default  9 of 10")
                    && budget.stdout.contains("dry-run"))
            let segment = try daemon.ctl(["budget", segmentOne])
            #expect(
                segment.stdout.contains("zone America/Chicago") && segment.stdout.contains("held by segment_interval"),
                "\(segment.stdout)")
            #expect(
                segment.stdout.contains("left today: 1 for the segment, 9 for the account")
                    && segment.stdout.contains(", in 1 h"), "\(segment.stdout)")
            // Every known segment in one table: segmentOne (refreshed, one queued), with the hour holding it.
            let all = try daemon.ctl(["budget", "--all"])
            #expect(all.status == 0, "\(all)")
            #expect(
                all.stdout.hasPrefix("SEGMENT") && all.stdout.contains("\(segmentOne)  America/Chicago  default  1 "),
                "\(all.stdout)")
            #expect(all.stdout.contains("segment_interval") && !all.stdout.contains(segmentTwo), "\(all.stdout)")
            #expect(try daemon.ctl(["budget", "--all", "--account", "nobody"]).status == 2)
            #expect(try daemon.ctl(["budget", "--all", segmentOne]).status == 2)
            let never = try daemon.ctl(["budget", segmentTwo])
            #expect(never.status == 2 && never.stderr.contains("time_zone: required"))
            let fresh = try daemon.ctl(["budget", segmentTwo, "--time-zone", "Asia/Kathmandu", "--json"])
            #expect(fresh.status == 0 && fresh.stdout.contains("\"allowed_now\":true"))

            let jobs = try daemon.ctl(["jobs"])
            #expect(
                jobs.stdout.hasPrefix("ID  STATE") && jobs.stdout.contains("sent") && jobs.stdout.contains("second"))
            let show = try daemon.ctl(["show", queuedID])
            #expect(
                show.stdout.contains("state           queued") && show.stdout.contains("expected        send at")
                    && show.stdout.contains("America/Chicago, in 1 h"), "\(show.stdout)")
            let plan = try daemon.ctl(["plan"])
            #expect(
                plan.stdout.hasPrefix("WHEN (UTC)") && plan.stdout.contains("segment_interval")
                    && plan.stdout.contains(segmentOne))
            // What if: another job for the segment would ride along with the queued one, in about an hour; nothing is queued.
            let whatIf = try daemon.ctl(["plan", "--segment", segmentOne, "--time-zone", "America/Chicago"])
            #expect(
                whatIf.status == 0 && whatIf.stdout.hasPrefix("this job would go out at ")
                    && whatIf.stdout.contains("America/Chicago, in 1 h"), "\(whatIf)")
            #expect(
                whatIf.stdout.contains("held by segment_interval") && whatIf.stdout.contains("\(queuedID),-1"),
                "\(whatIf.stdout)")
            #expect(
                try daemon.ctl(["jobs", "--state", "queued", "--json"]).stdout.components(separatedBy: "\"id\"").count
                    == 2)
            #expect(try daemon.ctl(["plan", "--segment", segmentOne, "--time-zone", "America/Chicgo"]).status == 2)
            let history = try daemon.ctl(["history"])
            #expect(history.stdout.contains("dry_run") && history.stdout.contains("segment+account"))

            // edit: a queued job's priority and expiry; a bad value is a usage error.
            let edited = try daemon.ctl(["edit", queuedID, "--priority", "50", "--expires-at", "2099-01-01T00:00:00Z"])
            #expect(
                edited.status == 0 && edited.stdout.contains("priority 50")
                    && edited.stdout.contains("expires_at 2099-01-01T00:00:00Z"), "\(edited)")
            #expect(try daemon.ctl(["edit", queuedID, "--not-before", "2099-06-01T00:00:00Z"]).status == 2)
            #expect(
                try daemon.ctl(["edit", queuedID, "--expires-at", "none", "--json"]).stdout.contains(
                    "\"expires_at\":null"))
            // Bulk cancel: a dry run first, then for real, with the count.
            let preview = try daemon.ctl(["cancel", "--segment", segmentOne, "--dry-run"])
            #expect(
                preview.status == 0 && preview.stdout.hasPrefix("would cancel 1 job\n  \(queuedID)  queued"),
                "\(preview)")
            #expect(try daemon.ctl(["cancel"]).status == 2)
            let cancel = try daemon.ctl(["cancel", queuedID])
            #expect(cancel.status == 0 && cancel.stdout.contains("cancelled job \(queuedID)"))
            let again = try daemon.ctl(["cancel", queuedID])
            #expect(again.status == 5 && again.stderr.contains("cancelled"))
            let missing = try daemon.ctl(["show", "999"])
            #expect(missing.status == 4 && missing.stderr.contains("no job 999"))
            let bad = try daemon.ctl(["jobs", "--state", "bogus"])
            #expect(bad.status == 2 && bad.stderr.contains("state"))
            let json = try daemon.ctl(["status", "--json"])
            #expect(
                (try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])?["version"]
                    as? String == "0.1.0")
        }
    }

    /// Control characters in a job's values (a note with ESC and CR, as a submitter may write it)
    /// are escaped in refreshctl's human output: nothing clears the screen or rewrites a line.
    @Test func controlCharactersAreEscapedInOutput() async throws {
        try await offPool {
            let daemon = try RunningDaemon()
            defer { daemon.stop() }
            let config = daemon.directory + "/refreshd.toml"
            let note = "\u{1b}[2J\rforged line"
            #expect(
                try refreshctl([
                    "enqueue", "--segment", segmentTwo, "--time-zone", "UTC", "--note", note, "--config", config,
                ]).status == 0)
            var shown = ""
            for _ in 0..<250 where !shown.contains("forged") {
                shown = (try daemon.ctl(["jobs"])).stdout
                usleep(UInt32(0.02 * 1_000_000))
            }
            #expect(shown.contains("\\x1b[2J\\rforged line"), "\(shown.debugDescription)")
            #expect(!shown.contains("\u{1b}") && !shown.contains("\r"))
            let show = try daemon.ctl(["show", "1"])
            #expect(
                show.stdout.contains("\\x1b[2J\\rforged line") && !show.stdout.contains("\u{1b}"),
                "\(show.stdout.debugDescription)")
            // The daemon's own log lines stay escaped too.
            #expect(!daemon.output.contains("\u{1b}"))
        }
    }

    /// One version, in the VERSION file: `refreshctl --version` and `refreshd --version` print it
    /// and exit 0 (refreshctl used to exit 2).
    @Test func versionFromOnePlace() async throws {
        try await offPool {
            var root = URL(fileURLWithPath: #filePath)
            for _ in 0..<3 { root.deleteLastPathComponent() }
            let version = try String(contentsOf: root.appendingPathComponent("VERSION"), encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let ctl = try refreshctl(["--version"])
            #expect(ctl.status == 0 && ctl.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == version, "\(ctl)")
            let daemon = Process()
            daemon.executableURL = URL(fileURLWithPath: refreshdBinary)
            daemon.arguments = ["--version"]
            let pipe = Pipe()
            daemon.standardOutput = pipe
            try daemon.run()
            let printed = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            daemon.waitUntilExit()
            #expect(daemon.terminationStatus == 0 && printed.trimmingCharacters(in: .whitespacesAndNewlines) == version)
        }
    }

    /// With the daemon down, every daemon command says so, and how to start it: exit code 3.
    @Test(arguments: [["status"], ["budget"], ["jobs"], ["plan"], ["history"], ["show", "1"], ["cancel", "1"]])
    func daemonDown(_ arguments: [String]) async throws {
        try await offPool {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "refreshctl-down-\(UUID().uuidString)"
            ).path
            let result = try refreshctl(arguments + ["--socket", directory + "/refreshd.sock"])
            #expect(result.status == 3)
            #expect(result.stderr.contains("refreshd is not reachable on \(directory)/refreshd.sock (no such socket)"))
            #expect(result.stderr.contains("systemctl start refreshd"))
            // REFRESHD_SOCKET is honoured the same way.
            let viaEnvironment = try refreshctl(arguments, environment: ["REFRESHD_SOCKET": directory + "/other.sock"])
            #expect(viaEnvironment.status == 3 && viaEnvironment.stderr.contains("/other.sock"))
        }
    }

    /// blocks lists the blocks learned from SendGrid, unblock lifts one (0), then finds none (4);
    /// a bad id is a usage error (2).
    @Test func blocksAndUnblock() async throws {
        try await offPool {
            let daemon = try RunningDaemon()
            defer { daemon.stop() }
            #expect(daemon.output.contains("refreshd started"), "\(daemon.output)")
            #expect(try daemon.ctl(["blocks"]).stdout.contains("no blocks in force"))
            let ledger = try SQLiteLedger(path: daemon.directory + "/state/ledger.sqlite", now: Date())
            try ledger.addBlock(
                account: "default", segmentID: segmentOne, until: Date().addingTimeInterval(5400),
                reason: "429: X-RateLimit-Reset 5400", now: Date())
            let id = try #require(try ledger.activeBlocks(account: nil, now: Date()).first?.id)
            let table = try daemon.ctl(["blocks"])
            #expect(table.status == 0)
            #expect(
                table.stdout.contains("ID") && table.stdout.contains(segmentOne) && table.stdout.contains("in 1 h ")
                    && table.stdout.contains("X-RateLimit-Reset"), "\(table.stdout)")
            let json = try daemon.ctl(["blocks", "--json", "--account", "default"])
            let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
            #expect((object?["blocks"] as? [[String: Any]])?.count == 1)
            let lifted = try daemon.ctl(["unblock", "\(id)"])
            #expect(
                lifted.status == 0 && lifted.stdout.contains("lifted block \(id) on segment \(segmentOne)"),
                "\(lifted.stdout) \(lifted.stderr)")
            let again = try daemon.ctl(["unblock", "\(id)"])
            #expect(again.status == 4 && again.stderr.contains("no block \(id) is in force"), "\(again.stderr)")
            #expect(try daemon.ctl(["unblock", "seven"]).status == 2)
            #expect(try daemon.ctl(["blocks"]).stdout.contains("no blocks in force"))
        }
    }

    /// The help texts name every case of the enumerations the daemon answers with (built from the
    /// same cases: a new outcome, state or reason shows up in help without an edit), and the
    /// statuses that mean "rejected" are AnswerClass's own list.
    @Test func helpNamesEveryCase() {
        let history = HistoryCommand.configuration.discussion
        for outcome in AttemptOutcome.allCases { #expect(history.contains("\(outcome.rawValue) ("), "\(outcome)") }
        #expect(history.contains("rejected (400/404/405/413/415/422)"))
        let jobs = JobsCommand.configuration.discussion
        #expect(jobs.contains("States: " + JobState.allCases.map(\.rawValue).joined(separator: ", ") + "."))
        let plan = PlanCommand.configuration.discussion
        for reason in PlanReason.allCases { #expect(plan.contains("\(reason.rawValue) ("), "\(reason)") }
    }

    /// Help is enough to learn the tool from: each command explains itself with examples.
    @Test func help() async throws {
        try await offPool {
            let budget = try refreshctl(["budget", "--help"])
            #expect(budget.status == 0)
            #expect(budget.stdout.contains("OVERVIEW: How many refreshes are left: per account, or for one segment."))
            #expect(
                budget.stdout.contains(
                    "refreshctl budget 0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01 --time-zone America/Chicago"))
            #expect(budget.stdout.contains("--socket <path>") && budget.stdout.contains("--json"))
            for (command, sentence) in [
                ("jobs", "States: queued, sending, sent, coalesced, failed, cancelled, expired."),
                ("plan", "WHY names what holds it until then"),
                ("history", "Outcomes: reserved (in flight), accepted (202),"),
                ("cancel", "Exit codes: 0 cancelled (or nothing matched), 4 no such job, 5 the job was"),
                ("wait", "9  --timeout ran out while a job was still queued (it stays queued)"),
                ("retry", "refreshctl retry 42 43"),
                ("edit", "refreshctl edit 42 --priority 50"),
                ("status", "Exit code 3 when the daemon is not reachable."), ("show", "refreshctl show 42"),
                ("blocks", "refreshctl unblock ID"), ("unblock", "Exit codes: 0 lifted, 4 no such block in force."),
            ] {
                let help = try refreshctl([command, "--help"])
                #expect(help.status == 0 && help.stdout.contains(sentence), "\(command)")
            }
            let root = try refreshctl(["--help"])
            for line in [
                "  3  the daemon is not reachable", "  4  no such job", "status ", "budget ", "plan ", "history ",
                "blocks ", "unblock ",
            ] {
                #expect(root.stdout.contains(line), "\(line)")
            }
        }
    }
}
