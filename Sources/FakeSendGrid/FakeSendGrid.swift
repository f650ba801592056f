import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import TZData

/// A stand-in for SendGrid's two segment endpoints, on 127.0.0.1, for tests and demos.
///
/// It enforces the three documented rules for manual refreshes with its own deliberately simple
/// code (minute sampling of the zone's wall clock; nothing from RefreshCore), on an injected
/// clock, answers 429 to any request that breaks one, and records that as a violation. Faults can
/// be queued: any status, a 5xx that SendGrid did or did not record, a delay past the client's
/// timeout, a connection dropped after the request was read, and refreshes "made in the web UI".
///
/// Rules as the fake applies them (no safety margin):
/// - segment day: fewer than 2 recorded manual refreshes of the segment in the current local day of
///   the zone sent, where the local day of an instant is the latest wall-clock date the zone has
///   shown in the 26 hours up to it (so a repeated hour after midnight stays in the new day);
/// - segment hour: the last recorded manual refresh of the segment is at least 3,600 s old;
/// - account day: fewer than 10 refresh requests received in the current UTC day.
public final class FakeSendGrid: @unchecked Sendable {
    /// What one refresh request found and got.
    public struct Refresh: Sendable, Equatable {
        public var segment: String
        public var zone: String
        public var at: Date
        public var status: Int
        /// Whether it became a recorded manual refresh (202, or a fault that says so).
        public var recorded: Bool
    }

    /// A request that broke a rule (answered 429).
    public struct Violation: Sendable, Equatable, CustomStringConvertible {
        public var segment: String
        public var at: Date
        public var rule: String
        public var description: String { "\(rule) for \(segment) at \(at)" }
    }

    /// A request as received (the Authorization header kept, so tests can check it is right).
    public struct ReceivedRequest: Sendable {
        public var method: String
        public var uri: String
        public var headers: [(String, String)]
        public var body: String
        public func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
    }

    /// What to do with the next refresh request (or pre-flight read).
    public enum Fault: Sendable, Equatable {
        /// Answer this status with a SendGrid-like error body; nothing is recorded as a refresh.
        case status(Int)
        /// Answer 500; `recorded` says whether SendGrid recorded the refresh anyway.
        case serverError(recorded: Bool)
        /// Answer 429 with these headers, without breaking any rule (SendGrid's own reasons).
        case rateLimited(headers: [String: String])
        /// Answer only after `seconds` (past the client's timeout).
        case delay(seconds: Double, recorded: Bool)
        /// Read the request, then close the connection without an answer.
        case drop(recorded: Bool)
    }

    private let lock = NSLock()
    private let zones: ZoneInfoDirectory
    private var clock: @Sendable () -> Date
    public let apiKey: String
    private var channel: Channel?
    private let group: EventLoopGroup

    private var refreshLog: [Refresh] = []
    private var manual: [String: [Date]] = [:]
    private var segmentZone: [String: String] = [:]
    private var accountRequests: [Date] = []
    private var quotaHeaders = false
    private var violationLog: [Violation] = []
    private var requestLog: [ReceivedRequest] = []
    private var refreshFaults: [Fault] = []
    private var segmentFaults: [String: [Fault]] = [:]
    private var preflightFaults: [Fault] = []
    private var unknownSegments: Set<String> = []
    /// Automatic refreshes move `last_refreshed_at` this often (busy segments: hourly).
    public var automaticRefreshSeconds: Double? {
        get { lock.withLock { automatic } }
        set { lock.withLock { automatic = newValue } }
    }
    private var automatic: Double?

    public init(apiKey: String, zones: ZoneInfoDirectory, now: @escaping @Sendable () -> Date = { Date() }) {
        self.apiKey = apiKey
        self.zones = zones
        self.clock = now
        self.group = MultiThreadedEventLoopGroup.singleton
    }

    /// Starts listening on 127.0.0.1 (port 0: any free port); returns the base URL.
    /// Listens on `host` (`0.0.0.0`: every interface, for hosts in network namespaces of their
    /// own); returns the base URL over 127.0.0.1.
    public func start(port: Int = 0, host: String = "127.0.0.1") async throws -> String {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(fake: self))
                }
            }
        let channel = try await bootstrap.bind(host: host, port: port).get()
        lock.withLock { self.channel = channel }
        return "http://127.0.0.1:\(channel.localAddress!.port!)"
    }

    public func stop() async {
        let channel = lock.withLock { self.channel }
        try? await channel?.close()
    }

    // MARK: Control

    public func setClock(_ now: @escaping @Sendable () -> Date) { lock.withLock { clock = now } }
    public var now: Date { lock.withLock { clock() } }
    /// Queues faults for the next refresh requests (any segment).
    public func inject(_ faults: Fault...) { lock.withLock { refreshFaults += faults } }
    /// Queues faults for the next refresh requests of one segment.
    public func inject(segment: String, _ faults: Fault...) {
        lock.withLock { segmentFaults[segment, default: []] += faults }
    }
    /// Queues faults for the next pre-flight reads.
    public func injectPreflight(_ faults: Fault...) { lock.withLock { preflightFaults += faults } }
    /// A segment SendGrid does not know: refresh and read answer 404.
    public func forget(segment: String) { lock.withLock { _ = unknownSegments.insert(segment) } }
    /// Accepted refreshes carry X-RateLimit-Limit 10, -Remaining (the account's requests left
    /// today, UTC) and -Reset (the next 00:00 UTC, a Unix time), as SendGrid may send them.
    public func sendQuotaHeaders(_ on: Bool) { lock.withLock { quotaHeaders = on } }
    /// A request to the refresh endpoint by another client of the same account (it counts for
    /// the account's day; refreshd never sees it).
    public func otherClientRequest(at t: Date) { lock.withLock { accountRequests.append(t) } }
    /// The segment exists (again): the operator fixed its id, or it was made.
    public func restore(segment: String) { lock.withLock { _ = unknownSegments.remove(segment) } }
    /// A refresh made in SendGrid's web UI: it counts for the segment, and refreshd never sees it.
    public func webUIRefresh(segment: String, zone: String, at: Date) {
        lock.withLock {
            manual[segment, default: []].append(at)
            segmentZone[segment] = zone
        }
    }

    public var refreshes: [Refresh] { lock.withLock { refreshLog } }
    public var violations: [Violation] { lock.withLock { violationLog } }
    public var requests: [ReceivedRequest] { lock.withLock { requestLog } }
    /// Recorded manual refreshes (API and web UI) of a segment.
    public func recordedRefreshes(of segment: String) -> [Date] { lock.withLock { manual[segment] ?? [] } }

    // MARK: The rules (simple on purpose)

    /// The local day of instant `t` in `zone`: the latest wall-clock date (days since 1970) shown
    /// at any whole minute of the 26 hours up to t, or at t.
    public static func localDay(_ t: Date, zone: ZoneRules) -> Int64 {
        let seconds = Int64(t.timeIntervalSince1970.rounded(.down))
        func wallDay(_ s: Int64) -> Int64 {
            let local = s + Int64(zone.utcOffset(at: s))
            return local >= 0 ? local / 86400 : (local - 86399) / 86400
        }
        var best = wallDay(seconds)
        var s = seconds - seconds % 60
        let start = seconds - 26 * 3600
        while s >= start {
            best = max(best, wallDay(s))
            s -= 60
        }
        return best
    }

    /// The first whole minute after `t` whose wall-clock date is past `t`'s local day: when the
    /// next local day begins.
    public static func nextDayStart(after t: Date, zone: ZoneRules) -> Date {
        let today = localDay(t, zone: zone)
        var s = Int64(t.timeIntervalSince1970.rounded(.down))
        s += 60 - ((s % 60) + 60) % 60
        while true {
            let local = s + Int64(zone.utcOffset(at: s))
            let day = local >= 0 ? local / 86400 : (local - 86399) / 86400
            if day > today { return Date(timeIntervalSince1970: Double(s)) }
            s += 60
        }
    }

    static func utcDay(_ t: Date) -> Int64 { Int64((t.timeIntervalSince1970 / 86400).rounded(.down)) }

    /// The rule a refresh of `segment` with `zoneName` at `t` would break, if any. Call with the lock held.
    private func brokenRule(segment: String, zoneName: String, at t: Date) -> String? {
        if accountRequests.filter({ Self.utcDay($0) == Self.utcDay(t) }).count >= 10 { return "account_daily" }
        let done = manual[segment] ?? []
        if let last = done.max(), t.timeIntervalSince(last) < 3600 { return "segment_interval" }
        if let zone = try? zones.rules(for: zoneName) {
            let today = Self.localDay(t, zone: zone)
            if done.filter({ Self.localDay($0, zone: zone) == today }).count >= 2 { return "segment_daily" }
        }
        return nil
    }

    /// refreshes_used as SendGrid reports it: recorded manual refreshes today in the segment's zone.
    private func refreshesUsed(segment: String, at t: Date) -> Int {
        let zone = (try? zones.rules(for: segmentZone[segment] ?? "UTC")) ?? ZoneRules.fixed(name: "UTC", offset: 0)
        let today = Self.localDay(t, zone: zone)
        return (manual[segment] ?? []).filter { $0 <= t && Self.localDay($0, zone: zone) == today }.count
    }

    // MARK: Handling

    struct Answer {
        var status: Int
        var headers: [String: String] = [:]
        var body: String = ""
        var delay: Double = 0
        var drop = false
    }

    /// Answers a request without the network (status and body), exactly as the server would.
    public func answer(method: String, uri: String, body: String = "") -> (status: Int, body: String) {
        let answer = handle(
            ReceivedRequest(method: method, uri: uri, headers: [("Authorization", "Bearer \(apiKey)")], body: body))
        return (answer.status, answer.body)
    }

    func handle(_ request: ReceivedRequest) -> Answer {
        lock.withLock {
            requestLog.append(request)
            let t = clock()
            let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri
            let refreshPrefix = "/v3/marketing/segments/2.0/refresh/"
            let readPrefix = "/v3/marketing/segments/2.0/"
            guard request.header("Authorization") == "Bearer \(apiKey)" else {
                if request.method == "POST" { accountRequests.append(t) }
                return Answer(status: 401, body: #"{"errors":[{"field":null,"message":"authorization required"}]}"#)
            }
            if request.method == "POST", path.hasPrefix(refreshPrefix) {
                return refresh(segment: String(path.dropFirst(refreshPrefix.count)), body: request.body, at: t)
            }
            if request.method == "GET", path.hasPrefix(readPrefix), !path.dropFirst(readPrefix.count).contains("/") {
                return read(segment: String(path.dropFirst(readPrefix.count)), at: t)
            }
            return Answer(status: 404, body: #"{"errors":[{"field":null,"message":"not found"}]}"#)
        }
    }

    private func refresh(segment: String, body: String, at t: Date) -> Answer {
        // Every request counts toward the account's day, once it has been judged.
        defer { accountRequests.append(t) }
        let zoneName =
            (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])?["user_time_zone"] as? String
        guard let zoneName, zones.contains(zoneName) else {
            refreshLog.append(Refresh(segment: segment, zone: "?", at: t, status: 400, recorded: false))
            return Answer(
                status: 400, body: #"{"errors":[{"field":"user_time_zone","message":"must be an IANA time zone"}]}"#)
        }
        guard segment.count == 36, !unknownSegments.contains(segment) else {
            refreshLog.append(Refresh(segment: segment, zone: zoneName, at: t, status: 404, recorded: false))
            return Answer(status: 404, body: #"{"error":"Segment does not exist."}"#)
        }
        if let rule = brokenRule(segment: segment, zoneName: zoneName, at: t) {
            violationLog.append(Violation(segment: segment, at: t, rule: rule))
            refreshLog.append(Refresh(segment: segment, zone: zoneName, at: t, status: 429, recorded: false))
            return Answer(status: 429, headers: ["X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0"])
        }
        var fault: Fault?
        if var queued = segmentFaults[segment], !queued.isEmpty {
            fault = queued.removeFirst()
            segmentFaults[segment] = queued
        } else if !refreshFaults.isEmpty {
            fault = refreshFaults.removeFirst()
        }
        func record(_ status: Int, _ recorded: Bool) {
            if recorded {
                manual[segment, default: []].append(t)
                segmentZone[segment] = zoneName
            }
            refreshLog.append(Refresh(segment: segment, zone: zoneName, at: t, status: status, recorded: recorded))
        }
        switch fault {
        case .status(let status)?:
            record(status, false)
            return Answer(status: status, body: #"{"errors":[{"field":null,"message":"injected \#(status)"}]}"#)
        case .serverError(let recorded)?:
            record(500, recorded)
            return Answer(status: 500, body: #"{"error":"Please check our status page."}"#)
        case .rateLimited(let headers)?:
            record(429, false)
            return Answer(status: 429, headers: headers)
        case .delay(let seconds, let recorded)?:
            record(202, recorded)
            return Answer(status: 202, body: #"{"job_id":"\#(UUID().uuidString.lowercased())"}"#, delay: seconds)
        case .drop(let recorded)?:
            record(0, recorded)
            return Answer(status: 0, drop: true)
        case nil:
            record(202, true)
            var headers: [String: String] = [:]
            if quotaHeaders {
                let used = accountRequests.filter { Self.utcDay($0) == Self.utcDay(t) }.count + 1
                headers = [
                    "X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "\(max(0, 10 - used))",
                    "X-RateLimit-Reset": "\((Self.utcDay(t) + 1) * 86400)",
                ]
            }
            return Answer(status: 202, headers: headers, body: #"{"job_id":"\#(UUID().uuidString.lowercased())"}"#)
        }
    }

    private func read(segment: String, at t: Date) -> Answer {
        if !preflightFaults.isEmpty {
            switch preflightFaults.removeFirst() {
            case .status(let status): return Answer(status: status, body: #"{"errors":[{"message":"injected"}]}"#)
            case .serverError: return Answer(status: 500, body: #"{"error":"Please check our status page."}"#)
            case .rateLimited(let headers): return Answer(status: 429, headers: headers)
            case .delay(let seconds, _): return Answer(status: 500, delay: seconds)
            case .drop: return Answer(status: 0, drop: true)
            }
        }
        guard segment.count == 36, !unknownSegments.contains(segment) else {
            return Answer(status: 404, body: #"{"error":"Segment does not exist."}"#)
        }
        var last = (manual[segment] ?? []).filter { $0 <= t }.max()
        if let every = automatic {
            let auto = Date(timeIntervalSince1970: (t.timeIntervalSince1970 / every).rounded(.down) * every)
            last = max(last ?? auto, auto)
        }
        let formatter = ISO8601DateFormatter()
        let created = formatter.string(from: Date(timeIntervalSince1970: 1_700_000_000))
        let sampled = formatter.string(from: last ?? Date(timeIntervalSince1970: 1_700_000_000))
        let next = formatter.string(from: t.addingTimeInterval(3600))
        // The shape of SendGrid's Segment2xx schema (all its required fields); last_refreshed_at
        // only once the segment was refreshed.
        let lastField = last.map { #","last_refreshed_at":"\#(formatter.string(from: $0))""# } ?? ""
        let body = """
            {"id":"\(segment)","name":"segment \(segment.prefix(8))","query_dsl":"SELECT contact_id FROM contact_data","contacts_count":42,\
            "contacts_sample":[],"created_at":"\(created)","updated_at":"\(created)","sample_updated_at":"\(sampled)",\
            "next_sample_update":"\(next)","parent_list_ids":[],"query_version":"2","status":{"query_validation":"VALID"},\
            "refreshes_used":\(refreshesUsed(segment: segment, at: t)),"max_refreshes":2\(lastField)}
            """
        return Answer(status: 200, body: body)
    }

    private final class Handler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let fake: FakeSendGrid
        var head: HTTPRequestHead?
        var body = ByteBuffer()

        init(fake: FakeSendGrid) { self.fake = fake }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body.clear()
            case .body(var chunk):
                body.writeBuffer(&chunk)
            case .end:
                guard let head else { return }
                let request = ReceivedRequest(
                    method: head.method.rawValue, uri: head.uri, headers: head.headers.map { ($0.name, $0.value) },
                    body: body.readString(length: body.readableBytes) ?? "")
                let answer = fake.handle(request)
                if answer.drop {
                    context.close(promise: nil)
                    return
                }
                var headers = HTTPHeaders()
                headers.add(name: "Content-Type", value: "application/json")
                headers.add(name: "Content-Length", value: String(answer.body.utf8.count))
                for (name, value) in answer.headers { headers.add(name: name, value: value) }
                let response = HTTPResponseHead(
                    version: head.version, status: HTTPResponseStatus(statusCode: answer.status), headers: headers)
                let bodyBuffer = context.channel.allocator.buffer(string: answer.body)
                let send = { [context] in
                    context.write(self.wrapOutboundOut(.head(response)), promise: nil)
                    context.write(self.wrapOutboundOut(.body(.byteBuffer(bodyBuffer))), promise: nil)
                    context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
                }
                if answer.delay > 0 {
                    context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(answer.delay * 1000))) {
                        send()
                    }
                } else {
                    send()
                }
            }
        }
    }
}
