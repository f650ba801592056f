import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import RefreshCore
import RefreshWire

/// The two SendGrid calls refreshd makes, over one shared async-http-client.
///
/// The key goes into the Authorization header and nowhere else: errors carry status codes and
/// transport reasons only, never a header.
public final class SendGridClient: Sendable {
    let http: HTTPClient
    let baseURL: String
    let requestTimeout: TimeAmount
    let userAgent: String

    public init(baseURL: String, requestTimeoutSeconds: Double, connectTimeoutSeconds: Double, version: String) {
        var configuration = HTTPClient.Configuration()
        let connect = min(connectTimeoutSeconds, requestTimeoutSeconds)
        configuration.timeout = HTTPClient.Configuration.Timeout(
            connect: .milliseconds(Int64(connect * 1000)), read: .milliseconds(Int64(requestTimeoutSeconds * 1000)))
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        // No pooled connection outlives a request by much: SendGrid calls are minutes apart.
        configuration.connectionPool = .init(idleTimeout: .seconds(30))
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.requestTimeout = .milliseconds(Int64(requestTimeoutSeconds * 1000))
        self.userAgent = "refreshd/\(version)"
    }

    public func shutdown() async {
        try? await http.shutdown()
    }

    /// `POST /v3/marketing/segments/2.0/refresh/{segment_id}` with `{"user_time_zone": zone}`.
    public func refresh(segment: String, zone: String, key: APIKey, onBehalfOf: String?) async -> Result<
        SendGridAnswer, SendGridFailure
    > {
        let body = #"{"user_time_zone":"# + JSONText.quote(zone) + "}"
        return await execute(
            method: .POST, path: "/v3/marketing/segments/2.0/refresh/\(segment)", body: body, key: key,
            onBehalfOf: onBehalfOf)
    }

    /// `GET /v3/marketing/segments/2.0/{segment_id}?contacts_sample=false`.
    public func readSegment(segment: String, key: APIKey, onBehalfOf: String?) async -> Result<
        SegmentReading, SendGridFailure
    > {
        let result = await execute(
            method: .GET, path: "/v3/marketing/segments/2.0/\(segment)?contacts_sample=false", body: nil, key: key,
            onBehalfOf: onBehalfOf)
        switch result {
        case .failure(let failure): return .failure(failure)
        case .success(let answer):
            guard answer.status == 200 else { return .failure(.noAnswer("pre-flight read answered \(answer.status)")) }
            guard let object = try? JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any],
                let used = (object["refreshes_used"] as? NSNumber)?.intValue
            else { return .failure(.noAnswer("pre-flight read: no refreshes_used in the answer")) }
            let last = (object["last_refreshed_at"] as? String).flatMap(Self.parseDate)
            return .success(
                SegmentReading(
                    refreshesUsed: used, maxRefreshes: (object["max_refreshes"] as? NSNumber)?.intValue,
                    lastRefreshedAt: last))
        }
    }

    static func parseDate(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text)
    }

    private func execute(method: HTTPMethod, path: String, body: String?, key: APIKey, onBehalfOf: String?) async
        -> Result<SendGridAnswer, SendGridFailure>
    {
        let request: HTTPClient.Request
        do {
            var headers = HTTPHeaders()
            headers.add(name: "Authorization", value: "Bearer \(key.secret)")
            headers.add(name: "User-Agent", value: userAgent)
            headers.add(name: "Accept", value: "application/json")
            if body != nil { headers.add(name: "Content-Type", value: "application/json") }
            if let onBehalfOf { headers.add(name: "on-behalf-of", value: onBehalfOf) }
            request = try HTTPClient.Request(
                url: baseURL + path, method: method, headers: headers, body: body.map { .string($0) })
        } catch {
            return .failure(.notSent("invalid request URL for \(baseURL)"))
        }
        let delegate = AnswerCollector()
        let task = http.execute(request: request, delegate: delegate, deadline: .now() + requestTimeout)
        do {
            return .success(try await task.futureResult.get())
        } catch {
            let reason = Self.describe(error)
            return .failure(delegate.requestWritten ? .noAnswer(reason) : .notSent(reason))
        }
    }

    /// A short, secret-free reason for a transport error.
    static func describe(_ error: Error) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded: return "request timed out"
            case .readTimeout: return "read timed out"
            case .connectTimeout: return "connect timed out"
            case .remoteConnectionClosed: return "connection closed by SendGrid before an answer"
            default: return "\(error)"
            }
        }
        if let error = error as? IOError {
            return "I/O error: \(error.errnoCode == ECONNREFUSED ? "connection refused" : "\(error)")"
        }
        return "\(type(of: error)): \(error)"
    }
}

/// Collects an answer and notes whether the request head was written (a failure before that is
/// certain not to have reached SendGrid).
final class AnswerCollector: HTTPClientResponseDelegate, @unchecked Sendable {
    typealias Response = SendGridAnswer

    private let lock = NSLock()
    private var written = false
    private var head: HTTPResponseHead?
    private var body = ByteBuffer()

    var requestWritten: Bool { lock.withLock { written } }

    func didSendRequestHead(task: HTTPClient.Task<SendGridAnswer>, _ head: HTTPRequestHead) {
        lock.withLock { written = true }
    }

    func didReceiveHead(task: HTTPClient.Task<SendGridAnswer>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        lock.withLock { self.head = head }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<SendGridAnswer>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        lock.withLock {
            if body.readableBytes < 65536 {
                var part = buffer
                body.writeBuffer(&part)
            }
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didFinishRequest(task: HTTPClient.Task<SendGridAnswer>) throws -> SendGridAnswer {
        try lock.withLock {
            guard let head else { throw HTTPClientError.remoteConnectionClosed }
            var headers: [String: String] = [:]
            for (name, value) in head.headers { headers[name.lowercased()] = value }
            let text = body.getString(at: body.readerIndex, length: min(body.readableBytes, 65536)) ?? ""
            return SendGridAnswer(status: Int(head.status.code), headers: headers, body: text)
        }
    }
}
