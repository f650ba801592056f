import Foundation
import Glibc
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import RefreshWire
import ServiceLifecycle

/// The control API's listeners, as services: the unix socket (always) and a loopback TCP port
/// (when `listen` is set).
public enum ControlAPIListeners {
    public struct SetupError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Makes the socket path usable: its directory exists; a stale socket file (nobody listening)
    /// is removed; a live one is an error (another refreshd is running).
    public static func prepareSocket(_ path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            } catch {
                throw SetupError(
                    description: "cannot create the socket's directory \(directory): \(error.localizedDescription)")
            }
        }
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw SetupError(
                description: "\(path) exists and is not a socket; remove it or set `socket` to another path")
        }
        if isLive(path) {
            throw SetupError(
                description:
                    "another process (probably refreshd) is listening on \(path); stop it first or set `socket` to another path"
            )
        }
        guard unlink(path) == 0 || errno == ENOENT else {
            throw SetupError(description: "cannot remove the stale socket \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Whether something accepts connections on the unix socket at `path`.
    static func isLive(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { raw[index] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        return result == 0
    }

    /// What bounds a listener's connections (see `ConnectionRegistry`).
    public struct Limits: Sendable {
        public var maxConnections: Int
        public var idleTimeout: Duration
        public var requestTimeout: Duration

        public init(
            maxConnections: Int = 512, idleTimeout: Duration = .seconds(60), requestTimeout: Duration = .seconds(10)
        ) {
            self.maxConnections = maxConnections
            self.idleTimeout = idleTimeout
            self.requestTimeout = requestTimeout
        }
    }

    /// HTTP/1.1 with the connection cap, the request timeout and the idle timeout.
    static func server(_ limits: Limits) -> HTTPServerBuilder {
        let requestTimeout = TimeAmount.nanoseconds(Int64(limits.requestTimeout / Duration.nanoseconds(1)))
        let idleTimeout = TimeAmount.nanoseconds(Int64(limits.idleTimeout / Duration.nanoseconds(1)))
        let registry = ConnectionRegistry(limit: limits.maxConnections, requestTimeout: requestTimeout)
        return .http1(
            configuration: HTTP1Channel.Configuration(
                additionalChannelHandlers: [ConnectionGuardHandler(registry: registry)], idleTimeout: idleTimeout))
    }

    /// The listeners for a configuration (the socket must have been prepared).
    public static func make(
        state: ControlState, socketPath: String, listen: String?, apiToken: String?, limits: Limits = Limits(),
        logger: Logger
    ) throws -> [any Service] {
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .warning)
        let unixRouter = ControlAPI.router(state: state, logger: logger, tcp: false, writeToken: nil)
        let unix = Application(
            router: unixRouter, server: server(limits),
            configuration: .init(address: .unixDomainSocket(path: socketPath), serverName: "refreshd/\(state.version)"),
            onServerRunning: { _ in
                // Owner and group (refreshd) may connect; nobody else.
                chmod(socketPath, 0o660)
                logger.debug("control API listening", metadata: ["socket": "\(socketPath)"])
            }, logger: quiet)
        var services: [any Service] = [unix]
        if let listen {
            guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]) else {
                throw SetupError(description: "listen: \"\(listen)\" is not host:port")
            }
            var host = String(listen[..<colon])
            if host.hasPrefix("[") { host = String(host.dropFirst().dropLast()) }
            if host == "localhost" { host = "127.0.0.1" }
            let tcpRouter = ControlAPI.router(state: state, logger: logger, tcp: true, writeToken: apiToken)
            services.append(
                Application(
                    router: tcpRouter, server: server(limits),
                    configuration: .init(address: .hostname(host, port: port), serverName: "refreshd/\(state.version)"),
                    onServerRunning: { _ in logger.debug("control API listening", metadata: ["listen": "\(listen)"]) },
                    logger: quiet))
        }
        return services
    }
}
