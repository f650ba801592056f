import Foundation
import RefreshWire
import TestSupport
import Testing

@testable import RefreshDaemon

/// `[ledger]` (issue #13): the URL, the password's sources and secrecy, the host id, and
/// `refreshd check-config` logging in to a real PostgreSQL server (a throwaway cluster).
@Suite("The ledger's configuration")
struct LedgerConfigurationTests {
    @Test func urls() throws {
        let tcp = try PostgresEndpoint.parse("postgres://refreshd@db.example.net:6432/ledger")
        #expect(
            tcp
                == PostgresEndpoint(
                    user: "refreshd", host: "db.example.net", socketDirectory: nil, port: 6432, database: "ledger"))
        let defaults = try PostgresEndpoint.parse("postgresql://refreshd@10.0.0.5")
        #expect(defaults.port == 5432 && defaults.database == "refreshd" && defaults.host == "10.0.0.5")
        let socket = try PostgresEndpoint.parse("postgres://refreshd@/ledger?host=/run/postgresql")
        #expect(socket.socketPath == "/run/postgresql/.s.PGSQL.5432" && socket.host == nil)
        let encoded = try PostgresEndpoint.parse("postgres://refreshd@%2Ftmp%2Fpg:5433/ledger")
        #expect(encoded.socketPath == "/tmp/pg/.s.PGSQL.5433")
        #expect("\(encoded)" == "refreshd@unix:/tmp/pg/.s.PGSQL.5433/ledger")
        func refused(_ url: String) -> String {
            do {
                _ = try PostgresEndpoint.parse(url)
                return ""
            } catch { return error.description }
        }
        #expect(refused("postgres://refreshd:hunter2@db/ledger").contains("holds a password"))
        #expect(!refused("postgres://refreshd:hunter2@db/ledger").contains("hunter2"))
        #expect(refused("mysql://refreshd@db/ledger").contains("is not a postgres:// URL"))
        #expect(refused("postgres://db/ledger").contains("names no user"))
        #expect(refused("postgres://refreshd@/ledger").contains("names no host"))
        #expect(refused("postgres://refreshd@db/ledger?sslmode=require").contains("\"sslmode\" is not a URL parameter"))
        #expect(refused("postgres://refreshd@/ledger?host=relative").contains("absolute path"))
    }

    @Test func keysAndProblems() throws {
        let directory = temporaryDirectory()
        try "s3cret-password\n".write(toFile: directory + "/pw", atomically: true, encoding: .utf8)
        chmod(directory + "/pw", 0o600)
        let (c, _) = try load(
            """
            [ledger]
            backend = "postgresql"
            url = "postgres://refreshd@db.example.net/ledger"
            password_file = "\(directory)/pw"
            tls = "require"
            pool_size = 8
            host_id = "app-1.eu"
            """)
        #expect(c.ledger.backend.value == .postgresql && c.ledger.tls.value == .require && c.ledger.poolSize.value == 8)
        #expect(
            c.ledger.password == APIKey("s3cret-password") && c.ledger.passwordSource == "password_file \(directory)/pw"
        )
        #expect(c.ledger.hostID.value == "app-1.eu")
        let report = ConfigurationReport(configuration: c, warnings: []).text
        #expect(report.contains("# password: set (redacted), from password_file \(directory)/pw"))
        #expect(!report.contains("s3cret") && !"\(c.ledger)".contains("s3cret"))
        // The systemd credential when there is no password_file.
        let credentials = temporaryDirectory()
        try "from-credential".write(
            toFile: credentials + "/refreshd-ledger-password", atomically: true, encoding: .utf8)
        let (viaCredential, _) = try load(
            "[ledger]\nbackend = \"postgresql\"\nurl = \"postgres://refreshd@db/ledger\"",
            environment: ["CREDENTIALS_DIRECTORY": credentials])
        #expect(viaCredential.ledger.password == APIKey("from-credential"))
        #expect(viaCredential.ledger.passwordSource == "systemd credential refreshd-ledger-password")
        // The default host id is the machine id (or the host name), named in check-config.
        let (plain, _) = try load(nil)
        #expect(!plain.ledger.hostID.value.isEmpty && plain.ledger.backend.value == .sqlite)
        #expect(
            ConfigurationReport(configuration: plain, warnings: []).text.contains(
                "host_id = \"\(plain.ledger.hostID.value)\""))
        // What is refused, by name.
        let found = problems(
            """
            [ledger]
            backend = "mysql"
            tls = "sometimes"
            pool_size = 0
            host_id = "has space"
            extra = 1
            """)
        #expect(found.contains { $0.contains("\"mysql\" is not a ledger backend (sqlite or postgresql)") }, "\(found)")
        #expect(found.contains { $0.contains("\"sometimes\" is not a TLS mode") }, "\(found)")
        #expect(found.contains { $0.contains("ledger.pool_size") && $0.contains("outside 1...64") }, "\(found)")
        #expect(found.contains { $0.contains("ledger.host_id") }, "\(found)")
        #expect(found.contains { $0.contains("ledger.extra") && $0.contains("unknown key") }, "\(found)")
        #expect(
            problems("[ledger]\nbackend = \"postgresql\"").contains { $0.contains("needs the server's URL") })
        #expect(
            problems("[ledger]\nbackend = \"postgresql\"\nurl = \"postgres://u:pw@db/l\"").contains {
                $0.contains("holds a password") && !$0.contains(":pw@")
            })
    }

    /// check-config against a real server: over the unix socket (trust) and over TCP with a
    /// password (scram); a wrong password and a missing database are 78 (the setup is wrong), a
    /// closed port 74 (cannot be reached), each with the server's reason in one line and
    /// never the password; the schema version once refreshd's migrations table exists;
    /// `refreshd run` refuses a schema a newer refreshd made (74) and never prints the password.
    @Test func checkConfigLogsIn() async throws {
        let cluster = try PostgresCluster.start()
        defer { cluster.stop() }
        try cluster.psql("CREATE ROLE \(PostgresCluster.passwordRole) LOGIN PASSWORD 'correct-horse'")
        try cluster.psql("CREATE DATABASE ledger OWNER \(PostgresCluster.passwordRole)")
        try await offPool {
            let directory = temporaryDirectory()
            func checkConfig(_ ledger: String) throws -> (Int32?, String) {
                let path = try writeConfig(directory, "[ledger]\nbackend = \"postgresql\"\n" + ledger)
                let process = try DaemonProcess(
                    arguments: ["check-config", "--config", path], environment: daemonEnvironment(directory))
                return (process.waitForExit(timeout: 30), process.output)
            }
            let (status, output) = try checkConfig(
                "url = \"postgres://\(cluster.superuser)@%2F\(cluster.socketDirectory.dropFirst().replacingOccurrences(of: "/", with: "%2F")):\(cluster.port)/postgres\""
            )
            #expect(status == 0, "\(output)")
            #expect(output.contains("# ledger: PostgreSQL 1"), "\(output)")
            #expect(output.contains("no refreshd schema yet (created at first start)"), "\(output)")
            try "correct-horse".write(toFile: directory + "/pw", atomically: true, encoding: .utf8)
            try "wrong-horse".write(toFile: directory + "/bad", atomically: true, encoding: .utf8)
            let tcp =
                "url = \"postgres://\(PostgresCluster.passwordRole)@127.0.0.1:\(cluster.port)/ledger\"\ntls = \"prefer\"\n"
            let (tcpStatus, tcpOutput) = try checkConfig(tcp + "password_file = \"\(directory)/pw\"")
            #expect(tcpStatus == 0, "\(tcpOutput)")
            #expect(
                tcpOutput.contains("at \(PostgresCluster.passwordRole)@127.0.0.1:\(cluster.port)/ledger"),
                "\(tcpOutput)")
            #expect(!tcpOutput.contains("correct-horse"))
            let (badStatus, badOutput) = try checkConfig(tcp + "password_file = \"\(directory)/bad\"")
            #expect(badStatus == 78, "\(badOutput)")
            #expect(badOutput.contains("password authentication failed"), "\(badOutput)")
            #expect(!badOutput.contains("wrong-horse") && !badOutput.contains("correct-horse"))
            let closed = "url = \"postgres://x@127.0.0.1:1/ledger\"\ntls = \"disable\""
            let (closedStatus, closedOutput) = try checkConfig(closed)
            #expect(
                closedStatus == 74 && closedOutput.contains("cannot log in to x@127.0.0.1:1/ledger"), "\(closedOutput)")
            let missing =
                "url = \"postgres://\(cluster.superuser)@127.0.0.1:\(cluster.port)/nosuch\"\ntls = \"disable\""
            let (missingStatus, missingOutput) = try checkConfig(missing)
            #expect(
                missingStatus == 78 && missingOutput.contains("database \"nosuch\" does not exist"), "\(missingOutput)")
            try cluster.psql(
                "CREATE SCHEMA refreshd AUTHORIZATION \(PostgresCluster.passwordRole); "
                    + "CREATE TABLE refreshd.refreshd_schema_migrations (version integer PRIMARY KEY); "
                    + "INSERT INTO refreshd.refreshd_schema_migrations VALUES (1), (3); "
                    + "ALTER TABLE refreshd.refreshd_schema_migrations OWNER TO \(PostgresCluster.passwordRole)",
                database: "ledger")
            let (_, schemaOutput) = try checkConfig(tcp + "password_file = \"\(directory)/pw\"")
            #expect(schemaOutput.contains("schema version 3"), "\(schemaOutput)")
            // A schema a newer refreshd made is never written by this one: the daemon refuses it (78).
            let run = try DaemonProcess(
                arguments: ["run", "--config", directory + "/refreshd.toml"], environment: daemonEnvironment(directory))
            #expect(run.waitForExit(timeout: 20) == 78)
            #expect(run.output.contains("schema version 3, newer than this refreshd knows"), "\(run.output)")
            #expect(!run.output.contains("correct-horse"))
        }
    }
}
