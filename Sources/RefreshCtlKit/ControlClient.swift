import AsyncHTTPClient
import Foundation
import Glibc
import NIOCore
import NIOHTTP1
import RefreshCore
import RefreshWire
import TZData

/// A JSON answer from refreshd's control API.
struct ControlAnswer {
    let status: Int
    let body: String
    var headers: HTTPHeaders = [:]

    /// The body as one of the wire module's types (the same the daemon encodes).
    func decode<Body: Decodable>(_ type: Body.Type) throws -> Body {
        do {
            return try WireJSON.decoder.decode(Body.self, from: Data(body.utf8))
        } catch {
            throw CommandFailure(
                "refreshctl cannot read refreshd's answer as \(Body.self) (\(error)); are refreshctl and refreshd the same version?",
                exit: .error)
        }
    }
}

/// Talks to refreshd over its unix socket.
struct ControlClient {
    let socket: String

    /// Where refreshd listens: `--socket`, else `$REFRESHD_SOCKET`, else the configured `socket`
    /// (from refreshd's config file and defaults), else the system service's
    /// /run/refreshd/refreshd.sock: the first of those last two that exists.
    static func resolve(socket flag: String?, config: String?) throws -> ControlClient {
        let environment = ProcessInfo.processInfo.environment
        if let flag { return ControlClient(socket: flag) }
        if let variable = environment["REFRESHD_SOCKET"], !variable.isEmpty { return ControlClient(socket: variable) }
        var candidates: [String] = []
        var loader = ConfigurationLoader(environment: environment, userID: getuid())
        do {
            candidates.append(try loader.load(explicitPath: config, resolvingKeys: false).socket.value)
        } catch {
            if config != nil { throw CommandFailure("\(error)", exit: .usage) }
        }
        candidates.append("/run/refreshd/refreshd.sock")
        return ControlClient(socket: candidates.first { FileManager.default.fileExists(atPath: $0) } ?? candidates[0])
    }

    /// A request body of the wire module as JSON text.
    static func json(_ body: some Encodable) throws -> String {
        String(decoding: try WireJSON.encode(body), as: UTF8.self)
    }

    var unreachable: CommandFailure {
        let reason = FileManager.default.fileExists(atPath: socket) ? "nothing answers on it" : "no such socket"
        return CommandFailure(
            """
            refreshd is not reachable on \(socket) (\(reason)).
            Is it running? Start it with `systemctl start refreshd` (or `refreshd run`), or point refreshctl at its socket with --socket or REFRESHD_SOCKET.
            """, exit: .unreachable)
    }

    /// One request to a route (`id` fills its `{id}`; the query is percent-encoded; nil values are
    /// left out); API errors become CommandFailures with the documented exit codes.
    func call(
        _ route: Route, id: String? = nil, query: [(String, String?)] = [], body: String? = nil,
        headers: [(String, String)] = [], readTimeout: TimeAmount = .seconds(60)
    ) throws -> ControlAnswer {
        try call(
            HTTPMethod(rawValue: route.method), route.uri(id: id, query: query), body: body, headers: headers,
            readTimeout: readTimeout)
    }

    /// One request; API errors become CommandFailures with the documented exit codes.
    func call(
        _ method: HTTPMethod, _ uri: String, body: String? = nil, headers: [(String, String)] = [],
        readTimeout: TimeAmount = .seconds(60)
    ) throws
        -> ControlAnswer
    {
        guard FileManager.default.fileExists(atPath: socket), let url = URL(httpURLWithSocketPath: socket, uri: uri)
        else { throw unreachable }
        let client = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(timeout: .init(connect: .seconds(5), read: readTimeout)))
        defer { try? client.syncShutdown() }
        var request: HTTPClient.Request
        do {
            request = try HTTPClient.Request(url: url.absoluteString, method: method, body: body.map { .string($0) })
        } catch {
            throw CommandFailure("invalid request: \(error)", exit: .usage)
        }
        if body != nil { request.headers.add(name: "Content-Type", value: "application/json") }
        request.headers.add(name: "User-Agent", value: "refreshctl/\(RefreshdVersion.current)")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        let response: HTTPClient.Response
        do {
            response = try client.execute(request: request).wait()
        } catch {
            throw unreachable
        }
        var buffer = response.body ?? ByteBuffer()
        let answer = ControlAnswer(
            status: Int(response.status.code), body: buffer.readString(length: buffer.readableBytes) ?? "",
            headers: response.headers)
        guard (200..<300).contains(answer.status) else {
            let error = try? WireJSON.decoder.decode(ErrorAnswer.self, from: Data(answer.body.utf8))
            let message = error.map { LogText.escaped($0.error.message) } ?? "refreshd answered \(answer.status)"
            switch answer.status {
            case 400: throw CommandFailure(message, exit: .usage)
            case 404: throw CommandFailure(message, exit: .notFound)
            case 409: throw CommandFailure(message, exit: .conflict)
            default: throw CommandFailure(message, exit: .error)
            }
        }
        return answer
    }
}

/// Human formatting shared by the daemon commands.
enum Human {
    /// "in 3 h 12 min", "12 s ago", "now".
    static func relative(_ date: Date, now: Date) -> String {
        let seconds = Int(date.timeIntervalSince(now).rounded())
        if abs(seconds) < 1 { return "now" }
        let magnitude = abs(seconds)
        let days = magnitude / 86400
        let hours = (magnitude % 86400) / 3600
        let minutes = (magnitude % 3600) / 60
        let text: String
        if days > 0 {
            text = hours > 0 ? "\(days) d \(hours) h" : "\(days) d"
        } else if hours > 0 {
            text = minutes > 0 ? "\(hours) h \(minutes) min" : "\(hours) h"
        } else if minutes > 0 {
            text = "\(minutes) min"
        } else {
            text = "\(magnitude) s"
        }
        return seconds > 0 ? "in " + text : text + " ago"
    }

    /// "2026-11-25 12:01" in the zone (or the UTC form when the zone is unknown).
    static func local(_ date: Date, zone: String, zones: ZoneInfoDirectory?) -> String {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        guard let rules = try? zones?.rules(for: zone) else { return Timestamp.rfc3339(date) }
        let text = Timestamp.rfc3339(seconds, offset: rules.utcOffset(at: seconds))
        // 2026-11-25T12:01:00-06:00 -> 2026-11-25 12:01
        return String(text.prefix(16)).replacingOccurrences(of: "T", with: " ")
    }

    /// An instant as one cell: RFC 3339 UTC, "-" when there is none.
    static func text(_ date: Date?) -> String { date.map(Timestamp.rfc3339) ?? "-" }

    /// A table with left-aligned columns, two spaces apart.
    static func table(_ header: [String], _ rows: [[String]], into output: OutputSink) {
        var widths = header.map(\.count)
        for row in rows {
            for (index, cell) in row.enumerated() where index < widths.count {
                widths[index] = max(widths[index], cell.count)
            }
        }
        func render(_ row: [String]) -> String {
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
        output.line(render(header))
        for row in rows { output.line(render(row)) }
    }

    /// A value from the daemon as one cell or line of text: control characters (a submitter's
    /// ESC, CR, newline) are escaped, never passed to the terminal; "-" when there is none.
    static func text(_ value: String?) -> String { value.map(LogText.escaped) ?? "-" }

    /// A number from the daemon as one cell; "-" when there is none.
    static func text<Number: BinaryInteger>(_ value: Number?) -> String { value.map { "\($0)" } ?? "-" }
}
