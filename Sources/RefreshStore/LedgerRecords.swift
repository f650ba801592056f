import Foundation
import RefreshCore

/// A job to add to the ledger (already validated).
public struct NewJob: Sendable, Equatable {
    /// Where it came from: "spool:<file>", "api", "cli".
    public var source: String
    /// The submitter's idempotency key (`id` in a job file), if any.
    public var idempotencyKey: String?
    public var account: String
    /// Lower-case UUID.
    public var segmentID: String
    public var timeZone: String
    public var priority: Int
    public var notBefore: Date?
    public var expiresAt: Date?
    public var note: String?

    public init(
        source: String, idempotencyKey: String? = nil, account: String, segmentID: String, timeZone: String,
        priority: Int = 0,
        notBefore: Date? = nil, expiresAt: Date? = nil, note: String? = nil
    ) {
        self.source = source
        self.idempotencyKey = idempotencyKey
        self.account = account
        self.segmentID = segmentID
        self.timeZone = timeZone
        self.priority = priority
        self.notBefore = notBefore
        self.expiresAt = expiresAt
        self.note = note
    }

    /// A digest of what the job asks for (not where it came from), for idempotency: the same key
    /// with the same content is a no-op, with different content an error.
    public var contentDigest: String {
        let fields: [String] = [
            account, segmentID, timeZone, String(priority), notBefore.map { String($0.timeIntervalSince1970) } ?? "-",
            expiresAt.map { String($0.timeIntervalSince1970) } ?? "-", note ?? "-",
        ]
        return fnv1a64(fields.joined(separator: "\u{1F}"))
    }
}

/// A job as stored.
public struct StoredJob: Sendable, Equatable {
    /// The ledger's row id: also the FIFO sequence.
    public var id: Int64
    public var job: NewJob
    public var state: JobState
    /// The attempt that served (or is serving) it.
    public var attemptID: Int64?
    /// Why it failed, expired or was cancelled.
    public var reason: String?
    /// Requests that served it and may have reached SendGrid without an answer (5xx, timeout,
    /// reset), counted against `max_attempts`.
    public var tries: Int
    /// After a failed try, held back until this instant (backoff); the submitter's `not_before`
    /// is kept apart, unchanged.
    public var retryAt: Date?
    public var createdAt: Date
    public var updatedAt: Date

    public init(
        id: Int64, job: NewJob, state: JobState, attemptID: Int64? = nil, reason: String? = nil, tries: Int = 0,
        retryAt: Date? = nil,
        createdAt: Date, updatedAt: Date
    ) {
        self.id = id
        self.job = job
        self.state = state
        self.attemptID = attemptID
        self.reason = reason
        self.tries = tries
        self.retryAt = retryAt
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }
}

/// An attempt as stored.
public struct StoredAttempt: Sendable, Equatable {
    public var id: Int64
    public var account: String
    public var segmentID: String
    public var timeZone: String
    public var outcome: AttemptOutcome
    public var httpStatus: Int?
    /// SendGrid's `job_id` from a 202.
    public var sendGridJobID: String?
    public var startedAt: Date
    public var finishedAt: Date?
    /// A bounded error text (never a secret).
    public var error: String?

    public init(
        id: Int64, account: String, segmentID: String, timeZone: String, outcome: AttemptOutcome,
        httpStatus: Int? = nil, sendGridJobID: String? = nil, startedAt: Date, finishedAt: Date? = nil,
        error: String? = nil
    ) {
        (self.id, self.account, self.segmentID, self.timeZone, self.outcome) = (
            id, account, segmentID, timeZone, outcome
        )
        (self.httpStatus, self.sendGridJobID, self.startedAt, self.finishedAt, self.error) = (
            httpStatus, sendGridJobID, startedAt, finishedAt, error
        )
    }
}

extension StoredJob {
    /// When the job may go out at the earliest: its `not_before` and any backoff.
    public var dueAt: Date? {
        switch (job.notBefore, retryAt) {
        case (let a?, let b?): return max(a, b)
        case (let a?, nil): return a
        case (nil, let b?): return b
        case (nil, nil): return nil
        }
    }
}

/// A learned block as stored.
public struct StoredBlock: Sendable, Equatable {
    public var id: Int64
    public var account: String
    /// nil: the whole account.
    public var segmentID: String?
    public var until: Date
    public var reason: String

    public init(id: Int64, account: String, segmentID: String?, until: Date, reason: String) {
        (self.id, self.account, self.segmentID, self.until, self.reason) = (id, account, segmentID, until, reason)
    }
}

/// What became of an enqueue.
public enum EnqueueResult: Sendable, Equatable {
    /// A new job.
    case created(StoredJob)
    /// The same idempotency key with the same content: nothing new.
    case duplicate(StoredJob)
}

/// Why the ledger refused or failed an operation. A struct over a code, so new cases don't break callers.
public struct LedgerError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable, Equatable {
        /// The database file cannot be opened, is not a database, or fails its integrity check.
        case unusableDatabase
        /// The same idempotency key was used for different content.
        case idempotencyConflict
        /// A job or attempt that does not exist, or is not in a state that allows the change.
        case notFound
        case invalidState
        /// A change the ledger refuses as it stands (expires_at not after not_before).
        case invalidInput
        /// The disk is full or the database read-only: nothing was written.
        case notWritable
        /// Another process held the database locked longer than the wait allowed: nothing was
        /// written; try again.
        case busy
        /// The ledger's database server cannot be reached (a shared ledger): nothing was read or
        /// written, nothing is sent until it answers again.
        case unreachable
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// Caps an error text before it is stored: bounded, single line.
package func boundedErrorText(_ text: String?, limit: Int = 500) -> String? {
    guard let text else { return nil }
    let flattened = text.replacingOccurrences(of: "\n", with: " ")
    return flattened.count > limit ? String(flattened.prefix(limit)) + "..." : flattened
}

/// A 64-bit FNV-1a digest in hex: stable across runs and platforms (Swift's Hasher is not).
func fnv1a64(_ text: String) -> String { ContentDigest.fnv1a64(text.utf8) }

/// Which jobs a bulk operation (cancel, retry) takes: every condition given must hold.
public struct JobFilter: Sendable, Equatable {
    public var states: [JobState]
    public var account: String?
    public var segmentID: String?
    /// Only jobs last changed at or after this instant (for retry: failed or expired since then).
    public var since: Date?

    public init(states: [JobState], account: String? = nil, segmentID: String? = nil, since: Date? = nil) {
        self.states = states
        self.account = account
        self.segmentID = segmentID
        self.since = since
    }
}

/// An operator's change to a queued job: nil leaves a field as it is; `.some(nil)` clears
/// `not_before` or `expires_at`.
public struct JobChange: Sendable, Equatable {
    public var priority: Int?
    public var notBefore: Date??
    public var expiresAt: Date??

    public init(priority: Int? = nil, notBefore: Date?? = nil, expiresAt: Date?? = nil) {
        self.priority = priority
        self.notBefore = notBefore
        self.expiresAt = expiresAt
    }
}

/// A job that reached a final state (R9): what the event hooks are told.
public struct JobEvent: Sendable, Equatable {
    public var id: Int64
    /// sent, coalesced, failed, expired or cancelled.
    public var state: JobState
    public var at: Date
    /// The job as it is now.
    public var job: StoredJob
    /// SendGrid's status for the attempt that served it, if any.
    public var httpStatus: Int?

    public init(id: Int64, state: JobState, at: Date, job: StoredJob, httpStatus: Int?) {
        self.id = id
        self.state = state
        self.at = at
        self.job = job
        self.httpStatus = httpStatus
    }
}

/// An operator's hold on an account (segmentID nil) or one of its segments: nothing is sent for it
/// until it is released. Kept in the ledger, so it survives restarts.
public struct StoredHold: Sendable, Equatable {
    public var id: Int64
    public var account: String
    public var segmentID: String?
    public var reason: String
    /// Who asked (the refreshctl user, or what an API client says).
    public var who: String
    public var createdAt: Date
    public var releasedAt: Date?

    public init(
        id: Int64, account: String, segmentID: String?, reason: String, who: String, createdAt: Date, releasedAt: Date?
    ) {
        self.id = id
        self.account = account
        self.segmentID = segmentID
        self.reason = reason
        self.who = who
        self.createdAt = createdAt
        self.releasedAt = releasedAt
    }

    /// Whether it holds this segment of this account.
    public func covers(account: String, segmentID: String) -> Bool {
        self.account == account && (self.segmentID == nil || self.segmentID == segmentID)
    }
}
