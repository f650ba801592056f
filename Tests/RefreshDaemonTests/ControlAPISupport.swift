import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import RefreshCore
import RefreshDaemon
import RefreshStore
import RefreshWire
import ServiceLifecycle
import TZData

/// An answer from the control API.
struct APIAnswer {
    var status: Int
    var body: String
    var headers: HTTPHeaders = [:]
    var json: Any? { try? JSONSerialization.jsonObject(with: Data(body.utf8)) }
    var object: [String: Any] { json as? [String: Any] ?? [:] }
    var errorCode: String? { (object["error"] as? [String: Any])?["code"] as? String }
    var errorMessage: String? { (object["error"] as? [String: Any])?["message"] as? String }
}

/// The control API served on a real unix socket (and optionally loopback TCP) over a real ledger
/// file, with a real HTTP client.
final class APIHarness: @unchecked Sendable {
    let directory = temporaryDirectory()
    let socket: String
    let ledger: SQLiteLedger
    let state: ControlState
    let client = HTTPClient(eventLoopGroupProvider: .singleton)
    private let group: ServiceGroup
    private let task: Task<Void, Error>
    let lanesBox = LanesBox()
    var tcpBase: String?

    final class LanesBox: @unchecked Sendable {
        private let lock = NSLock()
        private var value: [LaneStatus] = []
        var lanes: [LaneStatus] {
            get { lock.withLock { value } }
            set { lock.withLock { value = newValue } }
        }
    }

    init(
        now: @escaping @Sendable () -> Date = { Date() }, accounts: [String] = ["default"], listen: String? = nil,
        token: String? = nil,
        ledger existing: SQLiteLedger? = nil, reread: @escaping @Sendable () -> Void = {},
        limits: ControlAPIListeners.Limits = ControlAPIListeners.Limits()
    ) async throws {
        socket = directory + "/refreshd.sock"
        ledger = try existing ?? SQLiteLedger(path: directory + "/ledger.sqlite", now: now())
        var (configuration, _) = try load(nil)
        configuration.accounts = accounts.map { AccountConfiguration(name: $0, apiKeySource: "none") }
        let lanes = lanesBox
        state = ControlState(
            ledger: ledger, zones: hostZones, configuration: configuration, version: "test", startedAt: now(), now: now,
            metrics: RefreshdMetrics(),
            lanes: { lanes.lanes }, intake: { nil }, wake: {}, reread: reread)
        try ControlAPIListeners.prepareSocket(socket)
        let services = try ControlAPIListeners.make(
            state: state, socketPath: socket, listen: listen, apiToken: token, limits: limits,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let group = ServiceGroup(
            services: services, gracefulShutdownSignals: [],
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        self.group = group
        task = Task { try await group.run() }
        if let listen { tcpBase = "http://\(listen)" }
        let socket = self.socket
        // A loaded machine (every suite starting at once) may take a while; a harness that never
        // came up fails here, by name, instead of in whatever the test does next.
        guard await eventually(timeout: 60, { ControlAPIListenersProbe.isLive(socket) }) else {
            throw HarnessError("the control API did not listen on \(socket) within 60 s")
        }
        if let listen {
            let port = Int(listen.split(separator: ":").last!)!
            guard await eventually(timeout: 60, { ControlAPIListenersProbe.tcpLive(port: port) }) else {
                throw HarnessError("the control API did not listen on \(listen) within 60 s")
            }
        }
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
        await state.work.shutdown()
        try? await client.shutdown()
    }

    func request(
        _ method: HTTPMethod, _ uri: String, body: String? = nil, tcp: Bool = false, headers: [String: String] = [:]
    ) async throws -> APIAnswer {
        let url = tcp ? tcpBase! + uri : URL(httpURLWithSocketPath: socket, uri: uri)!.absoluteString
        var request = try HTTPClient.Request(url: url, method: method, body: body.map { .string($0) })
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if body != nil { request.headers.add(name: "Content-Type", value: "application/json") }
        let response = try await client.execute(request: request).get()
        var buffer = response.body ?? ByteBuffer()
        return APIAnswer(
            status: Int(response.status.code), body: buffer.readString(length: buffer.readableBytes) ?? "",
            headers: response.headers)
    }

    func get(_ uri: String) async throws -> APIAnswer { try await request(.GET, uri) }
}

/// One GET to a running refreshd's control API over its unix socket.
func socketGet(_ socket: String, _ uri: String) async throws -> APIAnswer {
    let request = try HTTPClient.Request(
        url: URL(httpURLWithSocketPath: socket, uri: uri)!.absoluteString, method: .GET)
    let response = try await HTTPClient.shared.execute(request: request).get()
    var buffer = response.body ?? ByteBuffer()
    return APIAnswer(status: Int(response.status.code), body: buffer.readString(length: buffer.readableBytes) ?? "")
}

/// Connect probes for readiness.
struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

enum ControlAPIListenersProbe {
    static func isLive(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        } == 0
    }

    static func tcpLive(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        } == 0
    }
}
