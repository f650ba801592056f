import Foundation
import Logging
import NIOCore
import NIOSSL
import PostgresNIO
import RefreshWire

/// PostgreSQL as `[ledger]` describes it: the connection settings (TLS, password, socket or TCP)
/// and the one question `refreshd check-config` asks before the daemon relies on it: can refreshd
/// log in, which server is it, which refreshd schema does the database hold.
public enum PostgresLedgerConnection {
    /// What a probe found.
    public struct Found: Sendable, Equatable {
        /// `server_version` (such as "15.18 (Debian 15.18-0+deb12u1)").
        public var serverVersion: String
        /// The highest refreshd schema migration applied; nil when refreshd never ran there (the
        /// daemon creates its schema at first start).
        public var schemaVersion: Int?
    }

    /// Why a probe could not tell: the endpoint and the reason, never the password.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        /// The server answered and refused (the login, the database, a privilege, TLS): the
        /// configuration or the database's setup is wrong (exit 78). Otherwise it could not be
        /// reached (exit 74).
        public var refused = false
    }

    /// Whether an error is the server's (or TLS's) refusal rather than a failure to reach it.
    public static func isRefusal(_ error: any Error) -> Bool {
        guard let error = error as? PSQLError else { return false }
        if let state = error.serverInfo?[.sqlState] {
            // 08: connection exceptions, 57: shutting down or starting up: try again later.
            return !(state.hasPrefix("08") || state.hasPrefix("57"))
        }
        return error.code == .sslUnsupported
    }

    /// The name of the table the schema migrator records its versions in.
    public static let migrationsTable = "refreshd_schema_migrations"

    /// postgres-nio's settings for the endpoint, the password and the TLS mode.
    public static func configuration(
        _ ledger: LedgerConfiguration, endpoint: PostgresEndpoint, connectTimeout: Duration = .seconds(10)
    ) throws -> PostgresConnection.Configuration {
        let password = ledger.password?.secret
        var configuration: PostgresConnection.Configuration
        if let socket = endpoint.socketPath {
            configuration = .init(
                unixSocketPath: socket, username: endpoint.user, password: password, database: endpoint.database)
        } else {
            let tls: PostgresConnection.Configuration.TLS
            switch ledger.tls.value {
            case .disable: tls = .disable
            case .prefer: tls = .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
            case .require: tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
            }
            configuration = .init(
                host: endpoint.host ?? "localhost", port: endpoint.port, username: endpoint.user, password: password,
                database: endpoint.database, tls: tls)
        }
        configuration.options.connectTimeout = .nanoseconds(
            connectTimeout.components.seconds * 1_000_000_000 + connectTimeout.components.attoseconds / 1_000_000_000)
        return configuration
    }

    /// postgres-nio's pool settings for the same endpoint, password and TLS mode.
    public static func clientConfiguration(
        _ ledger: LedgerConfiguration, endpoint: PostgresEndpoint, connectTimeout: Duration = .seconds(10)
    ) throws -> PostgresClient.Configuration {
        let password = ledger.password?.secret
        var configuration: PostgresClient.Configuration
        if let socket = endpoint.socketPath {
            configuration = .init(
                unixSocketPath: socket, username: endpoint.user, password: password, database: endpoint.database)
        } else {
            let tls: PostgresClient.Configuration.TLS
            switch ledger.tls.value {
            case .disable: tls = .disable
            case .prefer: tls = .prefer(.makeClientConfiguration())
            case .require: tls = .require(.makeClientConfiguration())
            }
            configuration = .init(
                host: endpoint.host ?? "localhost", port: endpoint.port, username: endpoint.user, password: password,
                database: endpoint.database, tls: tls)
        }
        configuration.options.connectTimeout = connectTimeout
        return configuration
    }

    /// Connects once (no retries: a wrong password is an answer, not a reason to wait), asks the
    /// server's version and the schema version, and disconnects.
    public static func probe(_ ledger: LedgerConfiguration, connectTimeout: Duration = .seconds(10)) async -> Result<
        Found, Failure
    > {
        guard let url = ledger.url.value else { return .failure(Failure(description: "no ledger.url")) }
        let endpoint: PostgresEndpoint
        do { endpoint = try PostgresEndpoint.parse(url) } catch {
            return .failure(Failure(description: error.description))
        }
        let logger = Logger(label: "refreshd.ledger", factory: { _ in SwiftLogNoOpLogHandler() })
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(
                configuration: try configuration(ledger, endpoint: endpoint, connectTimeout: connectTimeout), id: 1,
                logger: logger)
        } catch {
            return .failure(
                Failure(description: "cannot log in to \(endpoint): \(explain(error))", refused: isRefusal(error)))
        }
        do {
            var version = ""
            for try await row in try await connection.query("SELECT current_setting('server_version')", logger: logger)
            {
                version = try row.decode(String.self)
            }
            var schema: Int?
            let table = PostgresLedger.schema + "." + migrationsTable
            let exists = try await connection.query(
                "SELECT to_regclass(\(table)) IS NOT NULL", logger: logger)
            var present = false
            for try await row in exists { present = try row.decode(Bool.self) }
            if present {
                let query = PostgresQuery(unsafeSQL: "SELECT max(version) FROM \(table)")
                for try await row in try await connection.query(query, logger: logger) {
                    schema = try row.decode(Int?.self)
                }
            }
            try? await connection.close()
            return .success(Found(serverVersion: version, schemaVersion: schema))
        } catch {
            try? await connection.close()
            return .failure(
                Failure(description: "logged in to \(endpoint), but: \(explain(error))", refused: isRefusal(error)))
        }
    }

    /// A postgres-nio error in words: the server's own message and SQLSTATE, or what failed on
    /// the way (postgres-nio's description is deliberately generic).
    public static func explain(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let info = error.serverInfo, let message = info[.message] {
            return message + (info[.sqlState].map { " (SQLSTATE \($0))" } ?? "")
        }
        if let underlying = error.underlying { return "\(error.code): \(underlying)" }
        return "\(error.code)"
    }
}
