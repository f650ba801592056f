import FakeSendGrid
import Foundation
import Glibc
import RefreshCore
import TZData
import TestSupport
import Testing

/// `refreshctl enqueue --wait` and `refreshctl wait` against a running refreshd and the fake
/// SendGrid on 127.0.0.1: every outcome and its exit code.
@Suite("refreshctl wait", .serialized)
struct WaitCommandTests {
    static let key = "SG.fake-wait-test-key-not-real.0123456789"

    /// A refreshd that sends to a fresh fake SendGrid.
    func daemonWithFake() async throws -> (RunningDaemon, FakeSendGrid, String) {
        let zones = try ZoneInfoDirectory(
            path: ZoneInfoDirectory.defaultPath(environment: ProcessInfo.processInfo.environment))
        let fake = FakeSendGrid(apiKey: Self.key, zones: zones)
        let url = try await fake.start()
        let daemon = try RunningDaemon(
            extra: "[sendgrid]\nbase_url = \"\(url)\"\n", environment: ["SENDGRID_API_KEY": Self.key])
        return (daemon, fake, url)
    }

    /// An operator's hold: jobs stay queued (the plan and status say by whom, since when, why),
    /// across a restart; released, the job goes out once.
    @Test func holdSurvivesARestart() async throws {
        let (first, fake, url) = try await daemonWithFake()
        defer { Task { await fake.stop() } }
        try await offPool {
            let held = try first.ctl(["hold", "--account", "default", "--reason", "rotating the key"])
            #expect(held.status == 0 && held.stdout.hasPrefix("held (hold 1): account default"), "\(held)")
            #expect(
                try first.ctl(["hold", "--account", "default", "--reason", "again"]).stdout.hasPrefix(
                    "already held (hold 1)"))
            let config = first.directory + "/refreshd.toml"
            #expect(
                try refreshctl(["enqueue", "--segment", segmentOne, "--time-zone", "UTC", "--config", config]).status
                    == 0)
            usleep(2_000_000)
            #expect(fake.refreshes.isEmpty)
            let plan = try first.ctl(["plan"])
            #expect(
                plan.stdout.contains("job 1: held (held by ") && plan.stdout.contains(": rotating the key)"),
                "\(plan.stdout)")
            let budget = try first.ctl(["budget"])
            #expect(budget.stdout.contains("paused: held by "), "\(budget.stdout)")
            first.stop()

            let again = try RunningDaemon(
                extra: "[sendgrid]\nbase_url = \"\(url)\"\n", environment: ["SENDGRID_API_KEY": Self.key],
                reusing: first.directory)
            defer { again.stop() }
            let status = try again.ctl(["status"])
            #expect(
                status.stdout.contains("ON HOLD (1): account default, by ")
                    && status.stdout.contains("rotating the key"), "\(status.stdout)")
            usleep(2_000_000)
            #expect(fake.refreshes.isEmpty, "sent while held after a restart")
            #expect(try again.ctl(["release", "--account", "nobody-holds-this"]).status != 0)
            let released = try again.ctl(["release", "--account", "default"])
            #expect(
                released.status == 0 && released.stdout.hasPrefix("released hold 1 on account default"), "\(released)")
            let sent = try again.ctl(["wait", "1", "--timeout", "1m"])
            #expect(sent.status == 0, "\(sent)")
            #expect(fake.refreshes.filter { $0.segment == segmentOne }.count == 1 && fake.violations.isEmpty)
            #expect(try again.ctl(["release", "1"]).status == 4)
        }
    }

    @Test func everyOutcome() async throws {
        let (daemon, fake, _) = try await daemonWithFake()
        defer { Task { await fake.stop() } }
        try await offPool {
            defer { daemon.stop() }
            #expect(daemon.output.contains("refreshd started"), "\(daemon.output)")
            let config = daemon.directory + "/refreshd.toml"
            let enqueue = ["enqueue", "--time-zone", "America/Chicago", "--config", config, "--wait"]

            // Sent: exit 0, once SendGrid took it.
            let sent = try refreshctl(enqueue + ["--segment", segmentOne])
            #expect(sent.status == 0, "\(sent)")
            #expect(sent.stdout.contains("job 1 sent at "), "\(sent.stdout)")
            #expect(fake.refreshes.filter { $0.segment == segmentOne }.count == 1)

            // The hour holds the next one: the forecast, then 9 when --timeout runs out; it stays queued.
            let held = try refreshctl(enqueue + ["--segment", segmentOne, "--timeout", "2s"])
            #expect(held.status == 9, "\(held)")
            #expect(
                held.stdout.hasPrefix("queued as 2, expected at ") && held.stdout.contains("America/Chicago, in 1 h"),
                "\(held.stdout)")
            #expect(held.stderr.contains("stays queued"))
            #expect(try daemon.ctl(["show", "2", "--json"]).stdout.contains("\"state\":\"queued\""))
            // On a terminal (a real pseudo-terminal, through script(1)) the forecast is a status line
            // drawn in place; through a pipe it is plain text.
            let pty = try runToEnd(
                "/usr/bin/script",
                ["-qfec", "\(refreshctlPath) wait 2 --socket \(daemon.socket) --timeout 2s", "/dev/null"])
            #expect(pty.status == 9, "\(pty.output)")
            #expect(pty.output.contains("\r\u{1b}[Kqueued as 2, expected at "), "\(pty.output.debugDescription)")
            #expect(!held.stdout.contains("\u{1b}"))

            // Cancelled while waited for: 8, as soon as it happens (the long poll wakes).
            let socket = daemon.socket
            let started = Date()
            let canceller = Thread {
                usleep(1_500_000)
                _ = try? refreshctl(["cancel", "2", "--socket", socket])
            }
            canceller.start()
            let cancelled = try daemon.ctl(["wait", "2", "--timeout", "2m"])
            #expect(cancelled.status == 8, "\(cancelled)")
            #expect(cancelled.stdout.contains("job 2 was cancelled"))
            #expect(Date().timeIntervalSince(started) < 60)

            // Expired: no legal slot before its expires_at (the hour still holds the segment): 7.
            let expiresAt = Timestamp.rfc3339(Date().addingTimeInterval(3))
            let expired = try refreshctl(
                enqueue + ["--segment", segmentOne, "--expires-at", expiresAt, "--timeout", "2m"])
            #expect(expired.status == 7, "\(expired)")
            #expect(
                expired.stdout.contains("will expire at") && expired.stdout.contains("expired at"), "\(expired.stdout)")

            // Failed: SendGrid does not know the segment (404): 6.
            fake.forget(segment: segmentTwo)
            let failed = try refreshctl(enqueue + ["--segment", segmentTwo, "--timeout", "2m"])
            #expect(failed.status == 6, "\(failed)")
            #expect(failed.stdout.contains("failed:"), "\(failed.stdout)")

            // The operator fixes the segment and retries the failed job: queued again, sent exactly once.
            let failedID = "4"
            fake.restore(segment: segmentTwo)
            #expect(try daemon.ctl(["retry", "1"]).status == 5, "a sent job is not retried")
            let dry = try daemon.ctl(["retry", "--state", "failed", "--dry-run"])
            #expect(
                dry.status == 0 && dry.stdout.hasPrefix("would retry 1 job\n  \(failedID)  failed  \(segmentTwo)"),
                "\(dry)")
            let retried = try daemon.ctl(["retry", failedID])
            #expect(retried.status == 0 && retried.stdout.contains("job \(failedID) queued again"), "\(retried)")
            let afterRetry = try daemon.ctl(["wait", failedID, "--timeout", "2m"])
            #expect(afterRetry.status == 0 && afterRetry.stdout.contains("job \(failedID) sent at"), "\(afterRetry)")
            #expect(
                fake.refreshes.filter { $0.segment == segmentTwo && $0.status == 202 }.count == 1, "\(fake.refreshes)")
            let history = try daemon.ctl(["history", "--segment", segmentTwo, "--json"])
            #expect(
                history.stdout.components(separatedBy: "\"outcome\"").count - 1 >= 2,
                "the failed attempt stays in the history: \(history.stdout)")

            // Several jobs: the first that did not go out decides; JSON prints each change.
            let mixed = try daemon.ctl(["wait", "1", "3", "--json"])
            #expect(mixed.status == 7, "\(mixed)")
            #expect(mixed.stdout.split(separator: "\n").count == 2 && mixed.stdout.contains("\"state\":\"sent\""))

            // No such job: 4; no daemon: 3; a bad duration: 2.
            #expect(try daemon.ctl(["wait", "99"]).status == 4)
            #expect(try refreshctl(["wait", "1", "--socket", daemon.directory + "/nothing.sock"]).status == 3)
            let badDuration = try daemon.ctl(["wait", "1", "--timeout", "soon"])
            #expect(badDuration.status == 2 && badDuration.stderr.contains("is not a duration"))
            #expect(fake.violations.isEmpty, "\(fake.violations)")
        }
    }
}
