import FakeSendGrid
import Foundation
import Glibc
import RefreshCore
import RefreshDaemon
import RefreshStore
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
        #expect(await eventually(timeout: 10) { (try? FileManager.default.contentsOfDirectory(atPath: incoming))?.isEmpty == true })
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
        let inputs = history.engineInputs(resolve: { try? hostZones.rules(for: $0) }, fallback: chicago)
        let decision = RuleEngine.decide(
            account: "default", segment: jobs[0].job.segmentID, zone: chicago, history: inputs.attempts, blocks: inputs.blocks,
            limits: .sendGrid, now: Date())
        guard case .notBefore(let instant) = decision.verdict else {
            Issue.record("expected not before, got \(decision.verdict)")
            return
        }
        #expect(instant >= attempts[0].finishedAt!.addingTimeInterval(3660))
    }

    /// The daemon sends a dropped job at once over real HTTP (live key, pre-flight on), and logs it.
    @Test func sendsDroppedJob() async throws {
        let fake = FakeSendGrid(apiKey: fakeKey, zones: hostZones)
        let url = try await fake.start()
        let directory = temporaryDirectory()
        let config = try writeConfig(directory, "[sendgrid]\nbase_url = \"\(url)\"\n")
        let daemon = try DaemonProcess(
            arguments: ["run", "--config", config], environment: daemonEnvironment(directory, extra: ["SENDGRID_API_KEY": fakeKey]))
        #expect(await daemon.eventuallyOutputs("refreshd started"))
        try dropJob(directory + "/spool/incoming", 8)
        #expect(await eventually(timeout: 10) { fake.refreshes.count == 1 })
        #expect(await daemon.eventuallyOutputs("refresh accepted by SendGrid"))
        kill(daemon.process.processIdentifier, SIGTERM)
        #expect(daemon.waitForExit(timeout: 10) == 0)
        #expect(!daemon.output.contains(fakeKey))
        #expect(fake.violations.isEmpty)
        await fake.stop()
    }
}
