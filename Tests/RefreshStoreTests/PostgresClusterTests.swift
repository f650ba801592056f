import Foundation
import Logging
import PostgresNIO
import TestSupport
import Testing

/// The throwaway cluster the PostgreSQL tests run against (issue #13): it starts from nothing as
/// an unprivileged user, answers postgres-nio over its unix socket and over 127.0.0.1, asks the
/// password of the role that has one, and is gone after `stop()`.
@Suite("A throwaway PostgreSQL cluster")
struct PostgresClusterTests {
    /// One query through a PostgresClient run for the occasion; the first column of each row.
    static func query(_ configuration: PostgresClient.Configuration, _ sql: String) async throws -> [String] {
        let client = PostgresClient(configuration: configuration, backgroundLogger: Logger(label: "test"))
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addImmediateTask { await client.run() }
            defer { group.cancelAll() }
            var values: [String] = []
            for try await row in try await client.query(PostgresQuery(unsafeSQL: sql)) {
                values.append(try row.decode(String.self))
            }
            return values
        }
    }

    @Test func startsAnswersAndGoes() async throws {
        let cluster = try PostgresCluster.start()
        defer { cluster.stop() }
        let overSocket = try await Self.query(
            .init(unixSocketPath: cluster.socketPath, username: cluster.superuser, password: nil, database: "postgres"),
            "SELECT current_setting('server_version_num')")
        let first = try #require(overSocket.first)
        let version = try #require(Int(first))
        #expect(version >= 150_000, "\(version)")
        let overTCP = try await Self.query(
            .init(
                host: "127.0.0.1", port: cluster.port, username: cluster.superuser, password: nil, database: "postgres",
                tls: .disable),
            "SELECT inet_server_addr()::text")
        #expect(overTCP == ["127.0.0.1/32"] || overTCP == ["127.0.0.1"], "\(overTCP)")
        // The role with a password: refused without it, admitted with it (scram-sha-256). One
        // connection each (a client's pool would retry a refused login for ever).
        try cluster.psql("CREATE ROLE \(PostgresCluster.passwordRole) LOGIN PASSWORD 'correct horse'")
        func login(_ password: String?) async throws -> String {
            let connection = try await PostgresConnection.connect(
                configuration: .init(
                    host: "127.0.0.1", port: cluster.port, username: PostgresCluster.passwordRole, password: password,
                    database: "postgres", tls: .disable),
                id: 1, logger: Logger(label: "test"))
            defer { Task { try? await connection.close() } }
            for try await row in try await connection.query("SELECT current_user::text", logger: Logger(label: "test"))
            {
                return try row.decode(String.self)
            }
            return ""
        }
        await #expect(throws: PSQLError.self) { _ = try await login("wrong") }
        await #expect(throws: PSQLError.self) { _ = try await login(nil) }
        #expect(try await login("correct horse") == PostgresCluster.passwordRole)
        #expect(FileManager.default.fileExists(atPath: cluster.socketPath))
        cluster.stop()
        #expect(!FileManager.default.fileExists(atPath: cluster.directory))
    }
}
