import FakeSendGrid
import Foundation
import Glibc
import TestSupport
import Testing

/// refreshd itself on a PostgreSQL ledger: the process, its spool, the fake SendGrid over real
/// HTTP, and a server of its own that goes away and comes back (issue #13).
@Suite("refreshd on a PostgreSQL ledger", .serialized)
struct PostgresDaemonTests {
    /// A dropped job is sent; with the database stopped nothing is sent, the job dropped meanwhile
    /// waits in the spool, `/v1/status` and the journal say LEDGER UNREACHABLE (so does the status line) and
    /// `refreshd_ledger_up` is 0; once the database is back it goes out, with no restart, and
    /// nothing is lost or sent twice.
    @Test func sendsAndRidesOutTheDatabaseGoingAway() async throws {
        let cluster = try await offPool { try PostgresCluster.start() }
        defer { cluster.stop() }
        let database = try await offPool { try cluster.createDatabase() }
        let fake = FakeSendGrid(apiKey: fakeKey, zones: hostZones)
        let url = try await fake.start()
        let directory = temporaryDirectory()
        let config = try writeConfig(
            directory,
            """
            [sendgrid]
            base_url = "\(url)"
            [ledger]
            backend = "postgresql"
            url = "\(cluster.url(database: database))"
            tls = "disable"
            host_id = "web-1"
            """)
        let daemon = try DaemonProcess(
            arguments: ["run", "--config", config],
            environment: daemonEnvironment(directory, extra: ["SENDGRID_API_KEY": fakeKey]))
        #expect(await daemon.eventuallyOutputs("refreshd started"), "\(daemon.output)")
        let socket = directory + "/refreshd.sock"
        let ledger = try await socketGet(socket, "/v1/status").object["ledger"] as? [String: Any] ?? [:]
        #expect(ledger["backend"] as? String == "postgresql" && ledger["reachable"] as? Bool == true, "\(ledger)")
        #expect((ledger["location"] as? String)?.hasSuffix("as host web-1") == true, "\(ledger)")
        try dropJob(directory + "/spool/incoming", 1)
        #expect(await eventually(timeout: 15) { fake.refreshes.count == 1 }, "\(daemon.output)")

        try await offPool { try cluster.stopServer() }
        try dropJob(directory + "/spool/incoming", 2)
        #expect(
            await eventuallyAsync(timeout: 30) {
                let status = try? await socketGet(socket, "/v1/status").object
                return (status?["ledger"] as? [String: Any])?["reachable"] as? Bool == false
            }, "\(daemon.output)")
        #expect(await daemon.eventuallyOutputs("LEDGER UNREACHABLE"), "\(daemon.output)")
        let metrics = try await socketGet(socket, "/metrics").body
        #expect(metrics.contains("refreshd_ledger_up 0"), "\(metrics)")
        #expect(fake.refreshes.count == 1, "nothing is sent while the ledger is unreachable")
        let spooled =
            try FileManager.default.contentsOfDirectory(atPath: directory + "/spool/incoming")
            + FileManager.default.contentsOfDirectory(atPath: directory + "/spool/active")
        #expect(spooled.contains("job-2.json"), "the job waits in the spool: \(spooled)")

        try await offPool { try cluster.startServerAgain() }
        #expect(await eventually(timeout: 90) { fake.refreshes.count == 2 }, "\(daemon.output)")
        #expect(
            await eventuallyAsync(timeout: 30) {
                let status = try? await socketGet(socket, "/v1/status").object
                return (status?["ledger"] as? [String: Any])?["reachable"] as? Bool == true
            })
        kill(daemon.process.processIdentifier, SIGTERM)
        #expect(daemon.waitForExit(timeout: 15) == 0, "\(daemon.output)")
        #expect(fake.refreshes.count == 2 && Set(fake.refreshes.map(\.segment)).count == 2)
        #expect(fake.violations.isEmpty)
        #expect(!daemon.output.contains(fakeKey))
        await fake.stop()
    }
}
