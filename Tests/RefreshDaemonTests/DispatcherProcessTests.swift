import FakeSendGrid
import Foundation
import Glibc
import RefreshCore
import RefreshDaemon
import RefreshStore
import TestSupport
import Testing

@Suite("Dispatcher with the real daemon", .serialized)
struct DispatcherProcessTests {
    /// kill -9 while a refresh is in flight: after restart the attempt is `uncertain` and counts,
    /// its job is queued again, and no second request for the segment goes out although a new job
    /// for it arrives (the hour has not passed).
    @Test func killNineWhileInFlight() async throws {
        let fake = FakeSendGrid(apiKey: fakeKey, zones: hostZones)
        let url = try await fake.start()
        // SendGrid takes the request and records it, but answers only after 30 s.
        fake.inject(.delay(seconds: 30, recorded: true))
        let directory = temporaryDirectory()
        let config = try writeConfig(directory, "[sendgrid]\nbase_url = \"\(url)\"\nrequest_timeout_seconds = 60\n")
        let environment = daemonEnvironment(directory, extra: ["SENDGRID_API_KEY": fakeKey])
        var daemon = try DaemonProcess(arguments: ["run", "--config", config], environment: environment)
        #expect(await daemon.eventuallyOutputs("refreshd started"), "\(daemon.output)")
        let incoming = directory + "/spool/incoming"
        try dropJob(incoming, 7)
        #expect(await eventually(timeout: 10) { fake.refreshes.count == 1 }, "\(daemon.output)")
        kill(daemon.process.processIdentifier, SIGKILL)
        _ = daemon.waitForExit(timeout: 5)

        daemon = try DaemonProcess(arguments: ["run", "--config", config], environment: environment)
        #expect(await daemon.eventuallyOutputs("refreshd started"), "\(daemon.output)")
        try dropJob(incoming, 7)
        #expect(
            await eventually(timeout: 10) {
                (try? FileManager.default.contentsOfDirectory(atPath: incoming))?.isEmpty == true
            })
        // Give the dispatcher every chance to send (it would within milliseconds).
        try await Task.sleep(for: .seconds(3))
        #expect(fake.refreshes.count == 1)
        kill(daemon.process.processIdentifier, SIGTERM)
        #expect(daemon.waitForExit(timeout: 10) == 0)
        #expect(!daemon.output.contains(fakeKey))
        await fake.stop()

        let ledger = try SQLiteLedger(path: directory + "/state/ledger.sqlite", now: Date())
        let attempts = try ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 10)
        #expect(attempts.count == 1 && attempts.first?.outcome == .uncertain)
        #expect(attempts.first.map { $0.outcome.countsAsRefresh && $0.outcome.countsTowardAccount } == true)
        let jobs = try ledger.queuedJobs()
        #expect(jobs.count == 2 && jobs.first?.tries == 1)
        // The ledger's own answer: not before an hour (+ margin) after the uncertain attempt ended.
        let history = try ledger.history(account: "default", segmentID: jobs[0].job.segmentID, now: Date())
        let chicago = try hostZones.rules(for: "America/Chicago")
        let inputs = history.engineInputs(resolve: { try? hostZones.rules(for: $0) })
        let decision = RuleEngine.decide(
            account: "default", segment: jobs[0].job.segmentID, zone: chicago, history: inputs.attempts,
            blocks: inputs.blocks,
            limits: .sendGrid, now: Date())
        guard case .notBefore(let instant) = decision.verdict else {
            Issue.record("expected not before, got \(decision.verdict)")
            return
        }
        #expect(instant >= attempts[0].finishedAt!.addingTimeInterval(3660))
    }

    /// A full disk while a refresh is in flight: SendGrid's answer cannot be written. Nothing more
    /// goes out for the account, a job dropped meanwhile stays in incoming/, the daemon keeps
    /// running; once space is freed the answer is recorded (accepted, not uncertain) and work
    /// resumes without a restart. The ledger lives on a real 2 MiB tmpfs, mounted in a private
    /// mount namespace around the real refreshd and filled through /proc/PID/root.
    @Test(.enabled(if: FullDiskProbe.reason == nil, Comment(rawValue: FullDiskProbe.reason ?? "")))
    func fullDiskWhileInFlight() async throws {
        let fake = FakeSendGrid(apiKey: fakeKey, zones: hostZones)
        let url = try await fake.start()
        fake.inject(.delay(seconds: 2, recorded: true))
        let directory = temporaryDirectory()
        let state = directory + "/state"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        let config = try writeConfig(directory, "[sendgrid]\nbase_url = \"\(url)\"\n")
        // systemd's side too: the status line says what is wrong (a tick every 0.5 s).
        let listener = NotifyListener(directory: directory)
        defer { listener.close() }
        let daemon = try DaemonProcess(
            arguments: ["run", "--config", config],
            environment: daemonEnvironment(
                directory,
                extra: ["SENDGRID_API_KEY": fakeKey, "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "1000000"]),
            wrapper: FullDiskProbe.wrapper(mountingTmpfsAt: state))
        #expect(await daemon.eventuallyOutputs("refreshd started"), "\(daemon.output)")
        let incoming = directory + "/spool/incoming"
        try dropJob(incoming, 21)
        #expect(await eventually(timeout: 10) { fake.refreshes.count == 1 }, "\(daemon.output)")
        // While SendGrid takes its time, the disk fills up.
        let filler = "/proc/\(daemon.process.processIdentifier)/root\(state)/filler"
        let written = try await offPool { try FullDiskProbe.fill(filler) }
        #expect(written > 0)
        #expect(await daemon.eventuallyOutputs("cannot record SendGrid's answer in the ledger"), "\(daemon.output)")
        try dropJob(incoming, 22)
        #expect(await daemon.eventuallyOutputs("spool intake stopped"), "\(daemon.output)")
        try await Task.sleep(for: .seconds(2))
        #expect(fake.refreshes.count == 1, "nothing more goes out while the answer is not recorded")
        #expect(
            FileManager.default.fileExists(atPath: incoming + "/job-22.json")
                || FileManager.default.fileExists(atPath: directory + "/spool/active/job-22.json"),
            "the new job stays in the spool")
        #expect(daemon.process.isRunning)
        let full = listener.messages.count
        #expect(
            await eventually(timeout: 5) {
                listener.messages.dropFirst(full).contains {
                    $0.contains("LEDGER NOT WRITABLE") && $0.contains("SPOOL INTAKE BLOCKED")
                        && $0.contains("WATCHDOG=1")
                }
            }, "the status line names the problem and the watchdog is still fed: \(listener.messages.suffix(3))")

        unlink(filler)
        #expect(await daemon.eventuallyOutputs("recorded in the ledger after all", timeout: 30), "\(daemon.output)")
        #expect(
            await eventually(timeout: 20) { fake.refreshes.count == 2 },
            "the job dropped meanwhile goes out: \(daemon.output)")
        #expect(!FileManager.default.fileExists(atPath: incoming + "/job-22.json"))
        let freed = listener.messages.count
        #expect(
            await eventually(timeout: 5) {
                listener.messages.dropFirst(freed).contains {
                    $0.contains("STATUS=0 queued") && !$0.contains("NOT WRITABLE") && !$0.contains("BLOCKED")
                }
            })
        // The ledger (inside the daemon's mount namespace), as the control API reads it.
        let socket = directory + "/refreshd.sock"
        let refreshes =
            try await socketGet(socket, "/v1/refreshes?since=2000-01-01T00:00:00Z").object["refreshes"]
            as? [[String: Any]] ?? []
        #expect(refreshes.compactMap { $0["outcome"] as? String } == ["accepted", "accepted"], "\(refreshes)")
        let sent = try await socketGet(socket, "/v1/jobs?state=sent").object["jobs"] as? [[String: Any]] ?? []
        #expect(sent.count == 2)
        kill(daemon.process.processIdentifier, SIGTERM)
        #expect(daemon.waitForExit(timeout: 10) == 0)
        #expect(!daemon.output.contains(fakeKey))
        #expect(fake.violations.isEmpty)
        await fake.stop()
    }

    /// The daemon sends a dropped job at once over real HTTP (live key, pre-flight on), and logs it;
    /// on NIO's event loops (the default) and on Swift's own pool (REFRESHD_GLOBAL_EXECUTOR=swift),
    /// and answers a budget question on either.
    @Test(arguments: [nil, "swift"] as [String?])
    func sendsDroppedJob(executor: String?) async throws {
        let fake = FakeSendGrid(apiKey: fakeKey, zones: hostZones)
        let url = try await fake.start()
        let directory = temporaryDirectory()
        let config = try writeConfig(directory, "[sendgrid]\nbase_url = \"\(url)\"\n")
        var extra = ["SENDGRID_API_KEY": fakeKey]
        extra["REFRESHD_GLOBAL_EXECUTOR"] = executor
        let daemon = try DaemonProcess(
            arguments: ["run", "--config", config], environment: daemonEnvironment(directory, extra: extra))
        #expect(await daemon.eventuallyOutputs("refreshd started"))
        #expect(daemon.output.contains("executor=\(executor ?? "event-loops")"), "\(daemon.output)")
        try dropJob(directory + "/spool/incoming", 8)
        #expect(await eventually(timeout: 10) { fake.refreshes.count == 1 })
        #expect(await daemon.eventuallyOutputs("refresh accepted by SendGrid"))
        let budget = try await socketGet(directory + "/refreshd.sock", "/v1/budget").object
        let account = (budget["accounts"] as? [[String: Any]])?.first
        #expect(account?["account"] as? String == "default" && account?["used"] as? Int == 1, "\(budget)")
        #expect(account?["remaining"] as? Int == 9, "\(budget)")
        kill(daemon.process.processIdentifier, SIGTERM)
        #expect(daemon.waitForExit(timeout: 10) == 0)
        #expect(!daemon.output.contains(fakeKey))
        #expect(fake.violations.isEmpty)
        await fake.stop()
    }
}

/// Whether a private mount namespace with a small tmpfs can be made here (root, unshare).
enum FullDiskProbe {
    static let reason: String? = {
        guard getuid() == 0 else { return "the full-disk test needs root (a tmpfs in a private mount namespace)" }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") else {
            return "unshare is missing (util-linux)"
        }
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        probe.arguments = Array(wrapper(mountingTmpfsAt: "/tmp").dropFirst()) + ["/bin/true"]
        probe.standardOutput = FileHandle.nullDevice
        probe.standardError = FileHandle.nullDevice
        do { try probe.run() } catch { return "unshare cannot run: \(error)" }
        probe.waitUntilExit()
        return probe.terminationStatus == 0 ? nil : "private mount namespaces with a tmpfs are not permitted here"
    }()

    /// unshare, mount a 2 MiB tmpfs at `path` (seen by the wrapped process only), then exec the rest.
    static func wrapper(mountingTmpfsAt path: String) -> [String] {
        [
            "/usr/bin/unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
            "mount -t tmpfs -o size=2m refreshd-test \"$0\" && exec \"$@\"", path,
        ]
    }

    /// Writes zeros to `path` until the file system is full; returns the bytes written.
    static func fill(_ path: String) throws -> Int {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw ProgramError("cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0, count: 4096)
        var total = 0
        while true {
            let n = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            total += n
        }
        return total
    }
}
