import Foundation
import Glibc

/// A throwaway PostgreSQL cluster for the tests: `initdb` into a temporary directory, the server
/// on a unix socket in that directory and on a free 127.0.0.1 port, stopped and deleted by
/// `stop()`. No system service is assumed or touched.
///
/// PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user
/// (created by Debian's package) and its commands run through `runuser`; otherwise it runs as
/// the test's own user. The server binaries are Debian's (`/usr/lib/postgresql/<version>/bin`,
/// the newest), else `initdb` on the PATH. The superuser is `refreshd_test`. Authentication is
/// `trust` on the socket and on 127.0.0.1 except for the role `refreshd_pw`, which must give its
/// password (`scram-sha-256`): the password tests need a server that asks. Durability is off
/// (`fsync=off`): a test cluster, never data.
public final class PostgresCluster: @unchecked Sendable {
    public struct Unavailable: Error, CustomStringConvertible {
        public let description: String
    }

    /// The cluster's directory (data, socket, log).
    public let directory: String
    /// The directory of the unix socket (`.s.PGSQL.<port>` in it).
    public let socketDirectory: String
    public let port: Int
    /// The superuser's name.
    public let superuser = "refreshd_test"
    /// The role that must give a password (a test creates it with one).
    public static let passwordRole = "refreshd_pw"
    private let binaries: String
    private let runAs: String?
    private let listen: [String]

    /// The socket file's path, as a client names it.
    public var socketPath: String { "\(socketDirectory)/.s.PGSQL.\(port)" }

    /// Starts a new cluster; throws `Unavailable` naming what is missing (install it with
    /// `scripts/install-deps`) or the server's log when it does not start.
    /// `listen`: addresses besides 127.0.0.1 the server listens on, trusted like it (the host
    /// ends of a test's network namespaces; they must exist before the server starts).
    public static func start(listen: [String] = []) throws -> PostgresCluster {
        let binaries = try findBinaries()
        let root = getuid() == 0
        if root, getpwnam("postgres") == nil {
            throw Unavailable(description: "no 'postgres' user to run the test cluster as (install postgresql)")
        }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "refreshd-pg-\(UUID().uuidString.prefix(8))"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if root, let user = getpwnam("postgres") {
            chown(directory, user.pointee.pw_uid, user.pointee.pw_gid)
        }
        chmod(directory, 0o700)
        let cluster = PostgresCluster(
            directory: directory, port: freePort(), binaries: binaries, runAs: root ? "postgres" : nil, listen: listen)
        do {
            try cluster.initialize()
            try cluster.startServer()
        } catch {
            cluster.stop()
            throw error
        }
        return cluster
    }

    private init(directory: String, port: Int, binaries: String, runAs: String?, listen: [String]) {
        self.listen = listen
        self.directory = directory
        self.socketDirectory = directory
        self.port = port
        self.binaries = binaries
        self.runAs = runAs
    }

    private var data: String { directory + "/data" }

    /// Runs one of the server's programs as the cluster's owner.
    @discardableResult
    private func run(_ program: String, _ arguments: [String]) throws -> String {
        let path = binaries + "/" + program
        let (executable, argv) =
            runAs.map { ("/usr/sbin/runuser", ["-u", $0, "--", path] + arguments) } ?? (path, arguments)
        let result = try spawnAndWait(
            executable, argv, environment: ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TZ": "UTC"],
            mergeOutput: true)
        guard result.status == 0 else {
            throw Unavailable(
                description: "\(program) \(arguments.joined(separator: " ")) exited \(result.status): \(result.stdout)")
        }
        return result.stdout
    }

    private func initialize() throws {
        try run(
            "initdb",
            ["-D", data, "-U", superuser, "--auth-local=trust", "--auth-host=trust", "-E", "UTF8", "--no-sync"])
        let role = Self.passwordRole
        let hba = """
            local all \(role) scram-sha-256
            host all \(role) 127.0.0.1/32 scram-sha-256
            local all all trust
            host all all 127.0.0.1/32 trust
            \(listen.map { "host all all \($0)/24 trust" }.joined(separator: "\n"))

            """
        let hbaPath = data + "/pg_hba.conf"
        let written = (try? hba.write(toFile: hbaPath, atomically: false, encoding: .utf8)) != nil
        if !written { throw Unavailable(description: "cannot write \(hbaPath)") }
    }

    private func startServer() throws {
        let options = [
            "-c listen_addresses=" + (["127.0.0.1"] + listen).joined(separator: ","), "-c port=\(port)",
            "-c unix_socket_directories=\(socketDirectory)",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off", "-c max_connections=400",
        ].joined(separator: " ")
        do {
            try run("pg_ctl", ["-D", data, "-l", directory + "/server.log", "-o", options, "-w", "-t", "60", "start"])
        } catch {
            let log = (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)) ?? ""
            throw Unavailable(description: "the test cluster did not start: \(error)\n\(log)")
        }
    }

    /// Runs SQL through psql as the superuser over the socket; its output, unaligned, no headers.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") throws -> String {
        let psql =
            FileManager.default.isExecutableFile(atPath: binaries + "/psql") ? binaries + "/psql" : "/usr/bin/psql"
        let result = try spawnAndWait(
            psql,
            [
                "-h", socketDirectory, "-p", "\(port)", "-U", superuser, "-d", database, "-X", "-A", "-t", "-v",
                "ON_ERROR_STOP=1", "-c", sql,
            ],
            environment: ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"], mergeOutput: true)
        guard result.status == 0 else { throw Unavailable(description: "psql: \(result.stdout)") }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// One cluster for the whole test process, started at the first call and stopped when the
    /// process exits (the conformance suite gives each test a database of its own in it).
    public static func shared() throws -> PostgresCluster {
        try sharedLock.withLock {
            if let shared = sharedCluster { return try shared.get() }
            let result = Result { try PostgresCluster.start() }
            sharedCluster = result
            atexit { try? sharedCluster?.get().stop() }
            return try result.get()
        }
    }

    /// A new empty database; its name.
    public func createDatabase() throws -> String {
        let name = "t_" + UUID().uuidString.prefix(12).lowercased().replacingOccurrences(of: "-", with: "")
        try psql("CREATE DATABASE \(name)")
        return name
    }

    /// A `postgres://` URL of a database over 127.0.0.1 (or `address`) as the superuser.
    public func url(database: String, address: String = "127.0.0.1") -> String {
        "postgres://\(superuser)@\(address):\(port)/\(database)"
    }

    /// Stops the server only (fast shutdown: sessions are cut), keeping the data.
    public func stopServer() throws {
        try run("pg_ctl", ["-D", data, "-m", "fast", "-w", "-t", "30", "stop"])
    }

    /// Starts a stopped server again on the same socket and port.
    public func startServerAgain() throws { try startServer() }

    /// Stops the server (fast shutdown) and deletes the directory.
    public func stop() {
        _ = try? run("pg_ctl", ["-D", data, "-m", "fast", "-w", "-t", "30", "stop"])
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The newest of Debian's server versions, else the PATH's.
    private static func findBinaries() throws -> String {
        let debian = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: debian)) ?? [])
            .compactMap(Int.init).sorted()
        if let newest = versions.last, FileManager.default.isExecutableFile(atPath: "\(debian)/\(newest)/bin/initdb") {
            return "\(debian)/\(newest)/bin"
        }
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":")
        where FileManager.default.isExecutableFile(atPath: "\(directory)/initdb") {
            return String(directory)
        }
        throw Unavailable(
            description: "PostgreSQL's server programs (initdb, pg_ctl) are not installed: run scripts/install-deps")
    }
}

/// A free loopback TCP port (bound to 0, read, closed).
public func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    var bound = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &bound) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: bound.sin_port))
}

/// The process's shared cluster (`PostgresCluster.shared()`).
private let sharedLock = NSLock()
nonisolated(unsafe) private var sharedCluster: Result<PostgresCluster, any Error>?
