import Foundation

/// Every route of the control API, once: the daemon registers exactly these (an exhaustive switch
/// gives each its handler, so a route without one does not compile), 405 and `Allow` are derived
/// from them, refreshctl builds its request paths from them, and a test holds them equal to the
/// OpenAPI document's operations.
public enum Route: String, CaseIterable, Sendable {
    case health
    case metrics
    case openAPI
    case status
    case page
    case budget
    case segments
    case segmentBudget
    case jobs
    case enqueue
    case job
    case cancelJob
    case editJob
    case retryJob
    case retryJobs
    case cancelJobs
    case plan
    case whatIf
    case holds
    case addHold
    case releaseHold
    case refreshes
    case blocks
    case liftBlock

    /// The HTTP method, as the OpenAPI document writes it.
    public var method: String {
        switch self {
        case .enqueue, .retryJob, .retryJobs, .cancelJobs, .whatIf, .addHold: return "POST"
        case .cancelJob, .releaseHold, .liftBlock: return "DELETE"
        case .editJob: return "PATCH"
        default: return "GET"
        }
    }

    /// The path pattern, as the OpenAPI document writes it (`{id}` is the one parameter).
    public var path: String {
        switch self {
        case .health: return "/healthz"
        case .metrics: return "/metrics"
        case .openAPI: return "/v1/openapi.json"
        case .status: return "/v1/status"
        case .page: return "/ui"
        case .budget: return "/v1/budget"
        case .segments: return "/v1/segments"
        case .segmentBudget: return "/v1/segments/{id}/budget"
        case .jobs, .enqueue: return "/v1/jobs"
        case .job, .cancelJob, .editJob: return "/v1/jobs/{id}"
        case .retryJob: return "/v1/jobs/{id}/retry"
        case .retryJobs: return "/v1/jobs/retry"
        case .cancelJobs: return "/v1/jobs/cancel"
        case .plan, .whatIf: return "/v1/plan"
        case .holds, .addHold: return "/v1/holds"
        case .releaseHold: return "/v1/holds/{id}"
        case .refreshes: return "/v1/refreshes"
        case .blocks: return "/v1/blocks"
        case .liftBlock: return "/v1/blocks/{id}"
        }
    }

    /// A request target: the path with `id` filled in (percent-encoded) and the query appended in
    /// order (each name and value percent-encoded; a nil value leaves its name out).
    public func uri(id: String? = nil, query: [(String, String?)] = []) -> String {
        var path = self.path
        if let id {
            path = path.replacingOccurrences(
                of: "{id}", with: id.addingPercentEncoding(withAllowedCharacters: Self.unreserved) ?? id)
        }
        let items = query.compactMap { name, value in
            value.map { "\(Self.encoded(name))=\(Self.encoded($0))" }
        }
        return items.isEmpty ? path : path + "?" + items.joined(separator: "&")
    }

    /// RFC 3986's unreserved characters: everything else in a path segment or a query value is
    /// percent-encoded.
    static let unreserved = CharacterSet(
        charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")

    static func encoded(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? text
    }

    /// The methods a request path allows (empty: no such path). A path that matches a route with
    /// fixed segments belongs to that route alone, as in the router: /v1/jobs/cancel is not
    /// /v1/jobs/{id}.
    public static func allowedMethods(for path: String) -> [String] {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        let matching = allCases.filter { route in
            let pattern = route.path.split(separator: "/", omittingEmptySubsequences: false)
            return pattern.count == parts.count && zip(pattern, parts).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
        }
        func parameters(_ route: Route) -> Int { route.path.split(separator: "/").filter { $0.hasPrefix("{") }.count }
        guard let fewest = matching.map(parameters).min() else { return [] }
        let best = matching.first { parameters($0) == fewest }!.path
        return matching.filter { $0.path == best }.map(\.method)
    }
}
