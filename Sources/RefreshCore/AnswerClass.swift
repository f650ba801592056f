import Foundation

/// What SendGrid's HTTP status for a refresh request means (docs/dispatcher.md, "What each answer does").
public enum AnswerClass: String, Sendable, Equatable, CaseIterable {
    /// 2xx: the refresh was accepted.
    case accepted
    /// `rejectedStatuses` (400, 404, 405, 413, 415, 422): the request itself is wrong; resending
    /// cannot help.
    case rejected
    /// 401: the key was refused; the account pauses until a reload.
    case unauthorized
    /// 403: the plan or the key's scopes lack the feature; the account pauses.
    case forbidden
    /// 429.
    case rateLimited
    /// Anything else (5xx, unexpected statuses): SendGrid may have recorded it.
    case unclear

    /// The statuses that mean the request itself is wrong (the one list: help texts and documents
    /// name these).
    public static let rejectedStatuses = [400, 404, 405, 413, 415, 422]

    public init(status: Int) {
        switch status {
        case 200..<300: self = .accepted
        case _ where Self.rejectedStatuses.contains(status): self = .rejected
        case 401: self = .unauthorized
        case 403: self = .forbidden
        case 429: self = .rateLimited
        default: self = .unclear
        }
    }
}

/// How long to wait before trying a job again after a failure that was not a refusal.
public enum Backoff {
    /// After the `tries`-th request with no clear answer (5xx, timeout, reset): 30 s doubling, at most 30 min.
    public static func unclear(tries: Int) -> TimeInterval { doubling(from: 30, upTo: 1800, times: tries) }

    /// After the `failures`-th failure in a row before a request was written (refused, DNS, TLS):
    /// 5 s doubling, at most 5 min.
    public static func notSent(failures: Int) -> TimeInterval { doubling(from: 5, upTo: 300, times: failures) }

    /// After the `failures`-th time in a row the ledger refused to record an answer (full disk,
    /// I/O error): 5 s doubling, at most 60 s.
    public static func ledgerWrite(failures: Int) -> TimeInterval { doubling(from: 5, upTo: 60, times: failures) }

    static func doubling(from first: TimeInterval, upTo cap: TimeInterval, times: Int) -> TimeInterval {
        guard times > 1 else { return first }
        // Past 2^20 the cap has long been reached; avoid overflowing pow for absurd counts.
        return min(first * pow(2, Double(min(times - 1, 20))), cap)
    }
}
