import FakeSendGrid
import Foundation
import Glibc
import RefreshCore
import TestSupport
import Testing

/// refreshd itself on a PostgreSQL ledger: the process, its spool, the fake SendGrid over real
/// HTTP, and a server of its own that goes away and comes back (issue #13).
@Suite("refreshd on a PostgreSQL ledger", .serialized)
struct PostgresDaemonTests {
    /// The fake SendGrid's URL and a database of `cluster` as the ledger of host `web-1`.
    static func settings(sendgrid url: String, cluster: PostgresCluster, database: String) -> String {
        """
        [sendgrid]
        base_url = "\(url)"
        [ledger]
        backend = "postgresql"
        url = "\(cluster.url(database: database))"
        tls = "disable"
        host_id = "web-1"
        """
    }

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
        let config = try writeConfig(directory, Self.settings(sendgrid: url, cluster: cluster, database: database))
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

    /// Accounts follow a reload on a shared ledger (rows and leadership are keyed by identity): an
    /// account added by SIGHUP is led and its job goes out (stored under its identity, not its
    /// local name); removed again, its leader lock is let go for the other hosts.
    @Test func accountsAddedAndRemovedByReload() async throws {
        let cluster = try await offPool { try PostgresCluster.shared() }
        let database = try await offPool { try cluster.createDatabase() }
        let fake = FakeSendGrid(apiKey: fakeKey, zones: hostZones)
        let url = try await fake.start()
        let directory = temporaryDirectory()
        let base =
            Self.settings(sendgrid: url, cluster: cluster, database: database) + """

                [[account]]
                name = "default"
                id = "acct-default"

                """
        let config = try writeConfig(directory, base)
        let daemon = try DaemonProcess(
            arguments: ["run", "--config", config],
            environment: daemonEnvironment(directory, extra: ["SENDGRID_API_KEY": fakeKey]))
        #expect(await daemon.eventuallyOutputs("refreshd started"), "\(daemon.output)")
        // Whether some session holds the leader lock of an identity (R16's key).
        @Sendable func leaderLocks(_ identity: String) throws -> String {
            try cluster.psql(
                """
                SELECT count(*) FROM pg_locks l,
                    (SELECT hashtextextended('refreshd leader \(identity)', 0) AS key) k
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                    AND l.classid = ((k.key >> 32) & 4294967295)::oid AND l.objid = (k.key & 4294967295)::oid
                """, database: database)
        }
        #expect(try await offPool { try leaderLocks("local-second") } == "0")

        _ = try writeConfig(directory, base + "[[account]]\nname = \"second\"\n")
        kill(daemon.process.processIdentifier, SIGHUP)
        #expect(await daemon.eventuallyOutputs("configuration reloaded"), "\(daemon.output)")
        let incoming = directory + "/spool/incoming"
        let job = JobFile.render(
            JobRequest(segmentID: "0f8c5e8e-1111-4f4a-9a53-000000000077", timeZone: "UTC", account: "second"))
        try job.write(toFile: incoming + "/.second", atomically: false, encoding: .utf8)
        #expect(rename(incoming + "/.second", incoming + "/second.json") == 0)
        let socket = directory + "/refreshd.sock"
        #expect(
            await eventuallyAsync(timeout: 30) {
                let sent = try? await socketGet(socket, "/v1/jobs?state=sent").object["jobs"] as? [[String: Any]]
                return sent?.contains { $0["account"] as? String == "second" } == true
            }, "the added account's job goes out (dry-run: it has no key)\n\(daemon.output)")
        let stored = try await offPool {
            try cluster.psql("SELECT DISTINCT account FROM refreshd.job ORDER BY 1", database: database)
        }
        #expect(stored == "local-second", "stored under its identity: \(stored)")
        #expect(try await offPool { try leaderLocks("local-second") } == "1")

        _ = try writeConfig(directory, base)
        kill(daemon.process.processIdentifier, SIGHUP)
        #expect(
            await eventuallyAsync(timeout: 20) { (try? await offPool { try leaderLocks("local-second") }) == "0" },
            "the removed account's lead is let go\n\(daemon.output)")
        #expect(try await offPool { try leaderLocks("acct-default") } == "1", "default still led")
        kill(daemon.process.processIdentifier, SIGTERM)
        #expect(daemon.waitForExit(timeout: 15) == 0, "\(daemon.output)")
        #expect(fake.violations.isEmpty && fake.refreshes.isEmpty)
        #expect(!daemon.output.contains(fakeKey))
        await fake.stop()
    }
}
