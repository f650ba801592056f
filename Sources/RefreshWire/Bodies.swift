import Foundation
import RefreshCore

// The control API's JSON bodies as Codable types: the daemon encodes them (Hummingbird answers
// with `WireJSON.encoder`'s bytes), refreshctl decodes the same types. The snake_case keys are
// written once, in each type's CodingKeys; a field the document names and the type lacks (or the
// other way round) fails `everyFieldIsOnBothSides` against docs/openapi.json.
//
// Absent values are sent as JSON null, never left out (`@Null`): clients read one shape.

/// The encoder and decoder of every body: instants as RFC 3339 UTC text (`Timestamp`).
public enum WireJSON {
    public static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(Timestamp.rfc3339(date))
        }
        return encoder
    }

    public static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = Timestamp.parseRFC3339(text) else {
                throw DecodingError.dataCorruptedError(
                    in: container, debugDescription: "\"\(text)\" is not an RFC 3339 instant")
            }
            return date
        }
        return decoder
    }
}

/// An optional field sent as `null` when absent (Codable's synthesized encoding would leave it out).
@propertyWrapper
public struct Null<Value: Codable & Sendable & Equatable>: Codable, Sendable, Equatable {
    public var wrappedValue: Value?

    public init(wrappedValue: Value?) { self.wrappedValue = wrappedValue }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        wrappedValue = container.decodeNil() ? nil : try container.decode(Value.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        if let wrappedValue { try container.encode(wrappedValue) } else { try container.encodeNil() }
    }
}

extension KeyedDecodingContainer {
    /// A `@Null` field that is missing altogether decodes as nil (an older daemon's answer).
    public func decode<Value>(_ type: Null<Value>.Type, forKey key: Key) throws -> Null<Value> {
        try decodeIfPresent(type, forKey: key) ?? Null(wrappedValue: nil)
    }
}

/// A job as every route shows it.
public struct JobBody: Codable, Sendable, Equatable {
    public var id: Int64
    public var state: JobState
    public var account: String
    public var segmentID: String
    public var timeZone: String
    public var priority: Int
    public var source: String
    @Null public var idempotencyKey: String?
    @Null public var notBefore: Date?
    @Null public var expiresAt: Date?
    @Null public var note: String?
    /// The attempt that sent it (or tried last).
    @Null public var attemptID: Int64?
    /// Why it failed, expired or was cancelled.
    @Null public var reason: String?
    public var tries: Int
    @Null public var retryAt: Date?
    /// Why a queued job is held back (its zone cannot be loaded); null otherwise.
    @Null public var heldReason: String?
    public var createdAt: Date
    public var updatedAt: Date

    enum CodingKeys: String, CodingKey {
        case id, state, account, priority, source, note, reason, tries
        case segmentID = "segment_id", timeZone = "time_zone", idempotencyKey = "idempotency_key"
        case notBefore = "not_before", expiresAt = "expires_at", attemptID = "attempt_id", retryAt = "retry_at"
        case heldReason = "held_reason", createdAt = "created_at", updatedAt = "updated_at"
    }

    public init(
        id: Int64, state: JobState, account: String, segmentID: String, timeZone: String, priority: Int,
        source: String, idempotencyKey: String?, notBefore: Date?, expiresAt: Date?, note: String?,
        attemptID: Int64?, reason: String?, tries: Int, retryAt: Date?, heldReason: String?, createdAt: Date,
        updatedAt: Date
    ) {
        (self.id, self.state, self.account, self.segmentID, self.timeZone) = (id, state, account, segmentID, timeZone)
        (self.priority, self.source, self.idempotencyKey) = (priority, source, idempotencyKey)
        (self.notBefore, self.expiresAt, self.note, self.attemptID) = (notBefore, expiresAt, note, attemptID)
        (self.reason, self.tries, self.retryAt, self.heldReason) = (reason, tries, retryAt, heldReason)
        (self.createdAt, self.updatedAt) = (createdAt, updatedAt)
    }
}

/// What the plan expects for one queued job.
public struct JobForecast: Codable, Sendable, Equatable {
    public var fate: PlanFate
    @Null public var at: Date?
    /// The job whose send carries this one (coalesce), or this job's own id (send).
    @Null public var leader: Int64?

    public init(fate: PlanFate, at: Date? = nil, leader: Int64? = nil) {
        self.fate = fate
        self.at = at
        self.leader = leader
    }
}

/// `GET /v1/jobs/{id}`: the job and, while it is queued, its forecast.
public struct JobAnswer: Codable, Sendable, Equatable {
    public var job: JobBody
    @Null public var forecast: JobForecast?

    public init(job: JobBody, forecast: JobForecast?) {
        self.job = job
        self.forecast = forecast
    }
}

/// `POST /v1/jobs` (`created`: false when the idempotency key named an existing job) and the
/// single-job verbs (cancel, retry, edit: no `created`).
public struct JobEnvelope: Codable, Sendable, Equatable {
    public var job: JobBody
    public var created: Bool?

    public init(job: JobBody, created: Bool? = nil) {
        self.job = job
        self.created = created
    }
}

/// `GET /v1/jobs`: one page, oldest first; `next_cursor` null on the last page.
public struct JobsPage: Codable, Sendable, Equatable {
    public var jobs: [JobBody]
    @Null public var nextCursor: String?

    enum CodingKeys: String, CodingKey {
        case jobs
        case nextCursor = "next_cursor"
    }

    public init(jobs: [JobBody], nextCursor: String?) {
        self.jobs = jobs
        self.nextCursor = nextCursor
    }
}

/// The bulk verbs (`POST /v1/jobs/cancel`, `/v1/jobs/retry`): what they did, or would do.
public struct BulkAnswer: Codable, Sendable, Equatable {
    public var count: Int
    public var dryRun: Bool
    public var jobs: [JobBody]

    enum CodingKeys: String, CodingKey {
        case count, jobs
        case dryRun = "dry_run"
    }

    public init(count: Int, dryRun: Bool, jobs: [JobBody]) {
        self.count = count
        self.dryRun = dryRun
        self.jobs = jobs
    }
}

/// One rule's budget: how much of it is used, left, and when it resets.
public struct RuleBudgetBody: Codable, Sendable, Equatable {
    public var rule: Rule
    public var used: Int
    public var limit: Int
    public var remaining: Int
    @Null public var resetsAt: Date?

    enum CodingKeys: String, CodingKey {
        case rule, used, limit, remaining
        case resetsAt = "resets_at"
    }

    public init(rule: Rule, used: Int, limit: Int, remaining: Int, resetsAt: Date?) {
        (self.rule, self.used, self.limit, self.remaining, self.resetsAt) = (rule, used, limit, remaining, resetsAt)
    }
}

/// `GET /v1/budget`: one account's day (UTC).
public struct AccountBudgetBody: Codable, Sendable, Equatable {
    public var account: String
    public var used: Int
    public var limit: Int
    public var remaining: Int
    @Null public var resetsAt: Date?
    public var paused: Bool
    @Null public var pausedReason: String?
    public var dryRun: Bool
    public var queued: Int
    @Null public var nextSendAt: Date?

    enum CodingKeys: String, CodingKey {
        case account, used, limit, remaining, paused, queued
        case resetsAt = "resets_at", pausedReason = "paused_reason", dryRun = "dry_run"
        case nextSendAt = "next_send_at"
    }

    public init(
        account: String, used: Int, limit: Int, remaining: Int, resetsAt: Date? = nil, paused: Bool = false,
        pausedReason: String? = nil, dryRun: Bool = false, queued: Int = 0, nextSendAt: Date? = nil
    ) {
        (self.account, self.used, self.limit, self.remaining, self.resetsAt) = (
            account, used, limit, remaining, resetsAt
        )
        (self.paused, self.pausedReason, self.dryRun, self.queued, self.nextSendAt) = (
            paused, pausedReason, dryRun, queued, nextSendAt
        )
    }
}

/// `GET /v1/budget`.
public struct BudgetAnswer: Codable, Sendable, Equatable {
    public var now: Date
    public var accounts: [AccountBudgetBody]

    public init(now: Date, accounts: [AccountBudgetBody]) {
        self.now = now
        self.accounts = accounts
    }
}

/// `GET /v1/segments/{id}/budget`, and each row of `GET /v1/segments`.
public struct SegmentBudgetBody: Codable, Sendable, Equatable {
    public var segmentID: String
    public var account: String
    public var timeZone: String
    public var now: Date
    /// The rules allow a refresh now and nothing (a hold, a pause) keeps it back.
    public var allowedNow: Bool
    /// The rules that hold it back now.
    public var binding: [Rule]
    /// The earliest instant the rules allow one (null: not within the horizon).
    @Null public var earliest: Date?
    public var rules: [RuleBudgetBody]
    public var segmentRemainingToday: Int
    public var accountRemaining: Int
    @Null public var pausedReason: String?

    enum CodingKeys: String, CodingKey {
        case account, now, binding, earliest, rules
        case segmentID = "segment_id", timeZone = "time_zone", allowedNow = "allowed_now"
        case segmentRemainingToday = "segment_remaining_today", accountRemaining = "account_remaining"
        case pausedReason = "paused_reason"
    }

    public init(
        segmentID: String, account: String, timeZone: String, now: Date, allowedNow: Bool, binding: [Rule],
        earliest: Date?, rules: [RuleBudgetBody], segmentRemainingToday: Int, accountRemaining: Int,
        pausedReason: String?
    ) {
        (self.segmentID, self.account, self.timeZone, self.now) = (segmentID, account, timeZone, now)
        (self.allowedNow, self.binding, self.earliest, self.rules) = (allowedNow, binding, earliest, rules)
        (self.segmentRemainingToday, self.accountRemaining, self.pausedReason) = (
            segmentRemainingToday, accountRemaining, pausedReason
        )
    }
}

/// `GET /v1/segments`: every known segment's budget.
public struct SegmentsAnswer: Codable, Sendable, Equatable {
    public var now: Date
    public var segments: [SegmentBudgetBody]

    public init(now: Date, segments: [SegmentBudgetBody]) {
        self.now = now
        self.segments = segments
    }
}
