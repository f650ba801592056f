import Foundation

/// `[ledger]`: where the ledger lives. SQLite in the state directory is the default; PostgreSQL
/// (`backend = "postgresql"`) is the shared ledger of several hosts on one SendGrid account
/// (issue #13). The password never sits in the config file: `password_file`, else the systemd
/// credential `refreshd-ledger-password`.
public struct LedgerConfiguration: Sendable, Equatable {
    public enum Backend: String, Sendable, Equatable, CaseIterable { case sqlite, postgresql }
    /// As libpq's `sslmode` names them: no TLS; TLS when the server offers it; TLS or nothing.
    public enum TLSMode: String, Sendable, Equatable, CaseIterable { case disable, prefer, require }

    public var backend: Setting<Backend> = Setting(.sqlite)
    /// `postgres://user@host:port/database`; a unix socket directory as `?host=/run/postgresql`
    /// (or a percent-encoded host, `postgres://user@%2Frun%2Fpostgresql/db`).
    public var url: Setting<String?> = Setting(nil)
    public var passwordFile: Setting<String?> = Setting(nil)
    public var tls: Setting<TLSMode> = Setting(.prefer)
    /// Connections the daemon keeps to the database at most.
    public var poolSize: Setting<Int> = Setting(4)
    /// This host's name in the shared ledger (attempts and claimed jobs carry it; leases are
    /// per host): default the machine id. Two daemons on one machine need distinct ids.
    public var hostID: Setting<String> = Setting("")
    /// The password found (redacted in every description), and where it came from.
    public var password: APIKey?
    public var passwordSource = "none"

    public init() {}

    /// The URL taken apart (nil: no URL, or one that does not parse; the loader says why).
    public var endpoint: PostgresEndpoint? { url.value.flatMap { try? PostgresEndpoint.parse($0) } }
}

/// Where a PostgreSQL server is and whom to log in as.
public struct PostgresEndpoint: Sendable, Equatable, CustomStringConvertible {
    public var user: String
    /// A TCP host, or nil with `socketDirectory`.
    public var host: String?
    /// The directory of the server's unix socket (`.s.PGSQL.<port>` in it).
    public var socketDirectory: String?
    public var port: Int
    public var database: String

    public init(user: String, host: String?, socketDirectory: String?, port: Int, database: String) {
        (self.user, self.host, self.socketDirectory, self.port, self.database) = (
            user, host, socketDirectory, port, database
        )
    }

    /// The socket file's path, when it is a unix socket.
    public var socketPath: String? { socketDirectory.map { "\($0)/.s.PGSQL.\(port)" } }

    /// `user@host:port/database` or `user@unix:/dir/.s.PGSQL.port/database` (never a password).
    public var description: String {
        "\(user)@\(socketPath.map { "unix:\($0)" } ?? "\(host ?? ""):\(port)")/\(database)"
    }

    /// Parses `postgres://` or `postgresql://` URLs; a password in the URL is refused (it belongs
    /// in `password_file` or the credential, never in the config file).
    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    public static func parse(_ text: String) throws(Invalid) -> PostgresEndpoint {
        guard let components = URLComponents(string: text), let scheme = components.scheme,
            ["postgres", "postgresql"].contains(scheme)
        else {
            throw Invalid(description: "\"\(text)\" is not a postgres:// URL (postgres://user@host:5432/database)")
        }
        if components.password != nil {
            throw Invalid(
                description:
                    "the URL holds a password: put it in password_file or the systemd credential refreshd-ledger-password, "
                    + "never in the config file")
        }
        guard let user = components.user, !user.isEmpty else {
            throw Invalid(description: "\"\(text)\" names no user (postgres://user@host/database)")
        }
        let queryHost = components.queryItems?.first { $0.name == "host" }?.value
        if let unknown = components.queryItems?.first(where: { $0.name != "host" }) {
            throw Invalid(
                description: "\"\(unknown.name)\" is not a URL parameter refreshd reads (only host=/socket/directory)")
        }
        let host = components.percentEncodedHost.flatMap { $0.removingPercentEncoding } ?? ""
        let port = components.port ?? 5432
        guard (1...65535).contains(port) else { throw Invalid(description: "port \(port) is outside 1...65535") }
        var database = components.path
        if database.hasPrefix("/") { database.removeFirst() }
        if database.isEmpty { database = user }
        if database.contains("/") { throw Invalid(description: "\"\(database)\" is not a database name") }
        if let directory = queryHost ?? (host.hasPrefix("/") ? host : nil) {
            guard directory.hasPrefix("/") else {
                throw Invalid(
                    description: "host=\(directory) must be the absolute path of the server's socket directory")
            }
            return PostgresEndpoint(user: user, host: nil, socketDirectory: directory, port: port, database: database)
        }
        guard !host.isEmpty else {
            throw Invalid(description: "\"\(text)\" names no host (a name, an address, or host=/socket/directory)")
        }
        return PostgresEndpoint(user: user, host: host, socketDirectory: nil, port: port, database: database)
    }
}
