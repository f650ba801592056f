import Foundation
import RefreshCore

// The control API's JSON bodies as Codable types: the daemon encodes them (Hummingbird answers
// with `WireJSON.encode`'s bytes, see JSONWriter.swift), refreshctl decodes the same types. The snake_case keys are
// written once, in each type's CodingKeys; a field the document names and the type lacks (or the
// other way round) fails `everyFieldIsOnBothSides` against docs/openapi.json.
//
// Absent values are sent as JSON null, never left out (`@Null`): clients read one shape.

/// The encoder and decoder of every body: instants as RFC 3339 UTC text (`Timestamp`). Bodies are
/// written with `encode(_:)` (a streaming writer held equal to `encoder`'s JSON by a test);
/// `encoder` is its reference and its fallback.
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

/// An operator's hold on an account or one segment of it (`GET /v1/holds`, `/v1/status`).
public struct HoldBody: Codable, Sendable, Equatable {
    public var id: Int64
    public var account: String
    /// nil: the whole account.
    @Null public var segmentID: String?
    public var reason: String
    public var who: String
    public var since: Date

    enum CodingKeys: String, CodingKey {
        case id, account, reason, who, since
        case segmentID = "segment_id"
    }

    public init(id: Int64, account: String, segmentID: String?, reason: String, since: Date, who: String = "") {
        (self.id, self.account, self.segmentID, self.reason, self.since, self.who) = (
            id, account, segmentID, reason, since, who
        )
    }
}

/// `GET /v1/holds`.
public struct HoldsAnswer: Codable, Sendable, Equatable {
    public var holds: [HoldBody]
    public init(holds: [HoldBody]) { self.holds = holds }
}

/// `POST /v1/holds` (201 new, 200 already in force) and `DELETE /v1/holds/{id}`.
public struct HoldEnvelope: Codable, Sendable, Equatable {
    public var hold: HoldBody
    public init(hold: HoldBody) { self.hold = hold }
}

/// `GET /v1/status`: the daemon, its queue, spool intake and accounts.
public struct StatusAnswer: Codable, Sendable, Equatable {
    /// Spool intake since start.
    public struct Spool: Codable, Sendable, Equatable {
        /// Files waiting in incoming/.
        public var backlog: Int
        public var taken: Int
        public var rejected: Int
        /// Why intake is blocked (the ledger cannot be written), or null.
        @Null public var blocked: String?
        /// Names in incoming/ intake does not take (not regular files, unreadable), with why.
        public var skipped: [String]
        public var rejectedFiles: Int
        public var rejectedBytes: Int

        enum CodingKeys: String, CodingKey {
            case backlog, taken, rejected, blocked, skipped
            case rejectedFiles = "rejected_files", rejectedBytes = "rejected_bytes"
        }

        public init(
            backlog: Int = 0, taken: Int = 0, rejected: Int = 0, blocked: String? = nil, skipped: [String] = [],
            rejectedFiles: Int = 0, rejectedBytes: Int = 0
        ) {
            (self.backlog, self.taken, self.rejected, self.blocked) = (backlog, taken, rejected, blocked)
            (self.skipped, self.rejectedFiles, self.rejectedBytes) = (skipped, rejectedFiles, rejectedBytes)
        }
    }

    /// One account's lane.
    public struct Account: Codable, Sendable, Equatable {
        public var name: String
        public var dryRun: Bool
        public var queued: Int
        public var paused: Bool
        @Null public var pausedReason: String?
        @Null public var nextSendAt: Date?
        @Null public var lastError: String?
        /// Queued jobs held back (their zone cannot be loaded).
        public var held: Int
        /// The host that sends for the account (a shared ledger), or null (one host, or none leads).
        @Null public var leader: String?
        /// Why this host does not send for it (another host leads, its clock), or null: it sends.
        @Null public var standby: String?

        enum CodingKeys: String, CodingKey {
            case name, queued, paused, held, leader, standby
            case dryRun = "dry_run", pausedReason = "paused_reason", nextSendAt = "next_send_at"
            case lastError = "last_error"
        }

        public init(
            name: String, dryRun: Bool, queued: Int, pausedReason: String?, nextSendAt: Date?, lastError: String?,
            held: Int, leader: String? = nil, standby: String? = nil
        ) {
            (self.name, self.dryRun, self.queued, self.paused, self.pausedReason) = (
                name, dryRun, queued, pausedReason != nil, pausedReason
            )
            (self.nextSendAt, self.lastError, self.held) = (nextSendAt, lastError, held)
            (self.leader, self.standby) = (leader, standby)
        }
    }

    /// Where the ledger is and whether its database answers.
    public struct Ledger: Codable, Sendable, Equatable {
        /// "sqlite" or "postgresql".
        public var backend: String
        /// "SQLite /var/lib/refreshd/ledger.sqlite", "PostgreSQL refreshd@db:5432/refreshd as host web-1".
        public var location: String
        /// False while a shared ledger's database cannot be reached: nothing is sent then.
        public var reachable: Bool
        /// Why it cannot be reached, or null.
        @Null public var unreachableReason: String?

        enum CodingKeys: String, CodingKey {
            case backend, location, reachable
            case unreachableReason = "unreachable_reason"
        }

        public init(backend: String, location: String, unreachable: String?) {
            (self.backend, self.location, self.reachable, self.unreachableReason) = (
                backend, location, unreachable == nil, unreachable
            )
        }
    }

    /// The hosts sharing a PostgreSQL ledger, as this one sees them (#14).
    public struct Cluster: Codable, Sendable, Equatable {
        public struct Host: Codable, Sendable, Equatable {
            public var hostID: String
            public var heartbeatAt: Date
            /// Its heartbeat is within the lease (30 s).
            public var alive: Bool

            enum CodingKeys: String, CodingKey {
                case alive
                case hostID = "host_id", heartbeatAt = "heartbeat_at"
            }

            public init(hostID: String, heartbeatAt: Date, alive: Bool) {
                (self.hostID, self.heartbeatAt, self.alive) = (hostID, heartbeatAt, alive)
            }
        }

        /// This host.
        public var hostID: String
        public var hosts: [Host]
        /// This host's clock minus the database's, seconds (null: not measured yet).
        @Null public var clockSkewSeconds: Double?
        /// Why this host sends nothing (its clock disagrees with the database's), or null.
        @Null public var refusal: String?

        enum CodingKeys: String, CodingKey {
            case hosts, refusal
            case hostID = "host_id", clockSkewSeconds = "clock_skew_seconds"
        }

        public init(hostID: String, hosts: [Host], clockSkewSeconds: Double?, refusal: String?) {
            (self.hostID, self.hosts, self.clockSkewSeconds, self.refusal) = (
                hostID, hosts, clockSkewSeconds, refusal
            )
        }
    }

    public var version: String
    @Null public var tzdataVersion: String?
    public var tzDirectory: String
    /// The loopback TCP listener, or null (the unix socket only).
    @Null public var listen: String?
    /// Every account runs dry.
    public var dryRun: Bool
    public var startedAt: Date
    public var uptimeSeconds: Int
    public var now: Date
    /// Jobs in each state (every state named, 0 included).
    public var jobs: [String: Int]
    public var queueSize: Int
    public var spool: Spool
    public var accounts: [Account]
    @Null public var lastError: String?
    public var pausedAccounts: [String]
    public var heldJobs: Int
    public var holds: [HoldBody]
    public var ledger: Ledger
    /// The hosts sharing the ledger (null: a ledger of one host, or its database cannot be read).
    @Null public var cluster: Cluster?

    enum CodingKeys: String, CodingKey {
        case version, listen, now, jobs, spool, accounts, holds, ledger, cluster
        case tzdataVersion = "tzdata_version", tzDirectory = "tz_directory", dryRun = "dry_run"
        case startedAt = "started_at", uptimeSeconds = "uptime_seconds", queueSize = "queue_size"
        case lastError = "last_error", pausedAccounts = "paused_accounts", heldJobs = "held_jobs"
    }

    public init(
        version: String, tzdataVersion: String?, tzDirectory: String, listen: String?, dryRun: Bool, startedAt: Date,
        uptimeSeconds: Int, now: Date, jobs: [String: Int], queueSize: Int, spool: Spool, accounts: [Account],
        lastError: String?, pausedAccounts: [String], heldJobs: Int, holds: [HoldBody], ledger: Ledger,
        cluster: Cluster? = nil
    ) {
        self.ledger = ledger
        self.cluster = cluster
        (self.version, self.tzdataVersion, self.tzDirectory, self.listen, self.dryRun) = (
            version, tzdataVersion, tzDirectory, listen, dryRun
        )
        (self.startedAt, self.uptimeSeconds, self.now, self.jobs, self.queueSize) = (
            startedAt, uptimeSeconds, now, jobs, queueSize
        )
        (self.spool, self.accounts, self.lastError, self.pausedAccounts, self.heldJobs, self.holds) = (
            spool, accounts, lastError, pausedAccounts, heldJobs, holds
        )
    }
}

/// `GET /v1/refreshes`: one attempt (a request to SendGrid, or a refresh learned from its counts).
public struct RefreshBody: Codable, Sendable, Equatable {
    public var id: Int64
    public var account: String
    public var segmentID: String
    public var timeZone: String
    public var outcome: AttemptOutcome
    @Null public var httpStatus: Int?
    @Null public var sendGridJobID: String?
    public var startedAt: Date
    @Null public var finishedAt: Date?
    @Null public var error: String?
    /// It counts toward the segment's rules (I1, I2).
    public var countsForSegment: Bool
    /// It counts toward the account's day (I3).
    public var countsForAccount: Bool
    /// When the refresh took place for the rules (its finish, else its start).
    public var at: Date { finishedAt ?? startedAt }

    /// The segment under which refreshd records requests SendGrid counts for the account that it
    /// did not make (X-RateLimit headers name no segment): the nil UUID. They count for the
    /// account's day only; views show them on the account, never as a segment.
    public static let elsewhereSegment = "00000000-0000-0000-0000-000000000000"

    enum CodingKeys: String, CodingKey {
        case id, account, outcome, error
        case segmentID = "segment_id", timeZone = "time_zone", httpStatus = "http_status"
        case sendGridJobID = "sendgrid_job_id", startedAt = "started_at", finishedAt = "finished_at"
        case countsForSegment = "counts_for_segment", countsForAccount = "counts_for_account"
    }

    /// The counting columns follow the outcome (`AttemptOutcome.countsAsRefresh`, `countsTowardAccount`).
    public init(
        id: Int64, account: String, segmentID: String, timeZone: String, outcome: AttemptOutcome,
        httpStatus: Int? = nil, sendGridJobID: String? = nil, startedAt: Date, finishedAt: Date?, error: String? = nil
    ) {
        (self.id, self.account, self.segmentID, self.timeZone, self.outcome) = (
            id, account, segmentID, timeZone, outcome
        )
        (self.httpStatus, self.sendGridJobID, self.startedAt, self.finishedAt, self.error) = (
            httpStatus, sendGridJobID, startedAt, finishedAt, error
        )
        countsForSegment = outcome.countsAsRefresh
        countsForAccount = outcome.countsTowardAccount
    }
}

/// `GET /v1/refreshes`: newest last.
public struct RefreshesAnswer: Codable, Sendable, Equatable {
    public var refreshes: [RefreshBody]
    public init(refreshes: [RefreshBody]) { self.refreshes = refreshes }
}

/// A block learned from SendGrid's 429s (`GET /v1/blocks`).
public struct BlockBody: Codable, Sendable, Equatable {
    public enum Scope: String, Codable, Sendable { case account, segment }
    public var id: Int64
    public var account: String
    /// nil: the whole account.
    @Null public var segmentID: String?
    public var scope: Scope
    public var until: Date
    public var reason: String

    enum CodingKeys: String, CodingKey {
        case id, account, scope, until, reason
        case segmentID = "segment_id"
    }

    public init(id: Int64, account: String, segmentID: String?, until: Date, reason: String) {
        (self.id, self.account, self.segmentID, self.until, self.reason) = (id, account, segmentID, until, reason)
        scope = segmentID == nil ? .account : .segment
    }
}

/// `GET /v1/blocks`: the blocks in force now.
public struct BlocksAnswer: Codable, Sendable, Equatable {
    public var now: Date
    public var blocks: [BlockBody]
    public init(now: Date, blocks: [BlockBody]) {
        self.now = now
        self.blocks = blocks
    }
}

/// `DELETE /v1/blocks/{id}`: the block lifted.
public struct BlockEnvelope: Codable, Sendable, Equatable {
    public var block: BlockBody
    public init(block: BlockBody) { self.block = block }
}

/// `GET /v1/plan`, `POST /v1/plan`: one planned refresh.
public struct PlannedSendBody: Codable, Sendable, Equatable {
    public var at: Date
    public var account: String
    public var segmentID: String
    public var timeZone: String
    /// The jobs it carries (the first is the leader); what-if candidates are -1, -2, ...
    public var jobs: [Int64]
    /// Why it cannot go earlier.
    public var reasons: [PlanReason]

    enum CodingKeys: String, CodingKey {
        case at, account, jobs, reasons
        case segmentID = "segment_id", timeZone = "time_zone"
    }

    public init(
        at: Date, account: String, segmentID: String, timeZone: String, jobs: [Int64], reasons: [PlanReason]
    ) {
        (self.at, self.account, self.segmentID, self.timeZone, self.jobs, self.reasons) = (
            at, account, segmentID, timeZone, jobs, reasons
        )
    }
}

/// `GET /v1/plan`, `POST /v1/plan`: one queued job's fate.
public struct PlannedJobBody: Codable, Sendable, Equatable {
    public var id: Int64
    public var account: String
    public var segmentID: String
    public var timeZone: String
    public var fate: PlanFate
    @Null public var at: Date?
    /// With fate send or coalesce: the job whose send carries it (absent otherwise).
    public var leader: Int64?
    /// With fate held: why (absent otherwise).
    public var reason: String?

    enum CodingKeys: String, CodingKey {
        case id, account, fate, at, leader, reason
        case segmentID = "segment_id", timeZone = "time_zone"
    }

    public init(
        id: Int64, account: String, segmentID: String, timeZone: String, fate: PlanFate, at: Date? = nil,
        leader: Int64? = nil, reason: String? = nil
    ) {
        (self.id, self.account, self.segmentID, self.timeZone, self.fate) = (id, account, segmentID, timeZone, fate)
        (self.at, self.leader, self.reason) = (at, leader, reason)
    }
}

/// `GET /v1/plan`, `POST /v1/plan`: the forecast at `now`.
public struct PlanAnswer: Codable, Sendable, Equatable {
    public var now: Date
    /// In time order.
    public var sends: [PlannedSendBody]
    public var jobs: [PlannedJobBody]

    public init(now: Date, sends: [PlannedSendBody], jobs: [PlannedJobBody]) {
        (self.now, self.sends, self.jobs) = (now, sends, jobs)
    }
}

/// Every error: `{"error": {"code", "message"}}` (`code` stable, for programs; `message` for people).
public struct ErrorAnswer: Codable, Sendable, Equatable {
    public struct Detail: Codable, Sendable, Equatable {
        public var code: String
        public var message: String
    }
    public var error: Detail

    public init(code: String, message: String) { error = Detail(code: code, message: message) }
}

/// `GET /healthz`: `{"status": "ok"}` once the ledger answers.
public struct HealthAnswer: Codable, Sendable, Equatable {
    public var status: String
    public init(status: String = "ok") { self.status = status }
}

// Request bodies. refreshctl encodes them; the daemon reads requests with its strict JSON parser
// (duplicate members, bad UTF-8 and unknown members refused) and takes the member names it allows
// from these types' CodingKeys, so both sides name a member once.

/// `POST /v1/jobs/cancel`: every queued job of a segment and/or an account.
public struct CancelFilterBody: Encodable, Sendable, Equatable {
    public var state: JobState?
    public var account: String?
    public var segment: String?
    public var dryRun: Bool

    public enum CodingKeys: String, CodingKey, CaseIterable {
        case state, account, segment
        case dryRun = "dry_run"
    }

    public init(state: JobState? = nil, account: String? = nil, segment: String? = nil, dryRun: Bool = false) {
        (self.state, self.account, self.segment, self.dryRun) = (state, account, segment, dryRun)
    }
}

/// `POST /v1/jobs/retry`: failed or expired jobs by filter.
public struct RetryFilterBody: Encodable, Sendable, Equatable {
    public var state: JobState?
    public var account: String?
    public var segment: String?
    /// RFC 3339: only jobs that ended at or after it.
    public var since: String?
    public var dryRun: Bool

    public enum CodingKeys: String, CodingKey, CaseIterable {
        case state, account, segment, since
        case dryRun = "dry_run"
    }

    public init(
        state: JobState? = nil, account: String? = nil, segment: String? = nil, since: String? = nil,
        dryRun: Bool = false
    ) {
        (self.state, self.account, self.segment, self.since, self.dryRun) = (state, account, segment, since, dryRun)
    }
}

/// `POST /v1/holds`.
public struct NewHoldBody: Encodable, Sendable, Equatable {
    public var account: String
    public var segment: String?
    public var reason: String
    public var who: String?

    public enum CodingKeys: String, CodingKey, CaseIterable { case account, segment, reason, who }

    public init(account: String, segment: String? = nil, reason: String, who: String? = nil) {
        (self.account, self.segment, self.reason, self.who) = (account, segment, reason, who)
    }
}

/// `PATCH /v1/jobs/{id}`: what to change; a time given as `.clear` is sent as null (removed).
public struct JobEditBody: Encodable, Sendable, Equatable {
    public enum Time: Sendable, Equatable {
        case set(String)
        case clear
    }
    public var priority: Int?
    public var notBefore: Time?
    public var expiresAt: Time?

    public enum CodingKeys: String, CodingKey, CaseIterable {
        case priority
        case notBefore = "not_before", expiresAt = "expires_at"
    }

    public init(priority: Int? = nil, notBefore: Time? = nil, expiresAt: Time? = nil) {
        (self.priority, self.notBefore, self.expiresAt) = (priority, notBefore, expiresAt)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(priority, forKey: .priority)
        for (key, time) in [(CodingKeys.notBefore, notBefore), (.expiresAt, expiresAt)] {
            switch time {
            case .set(let text)?: try container.encode(text, forKey: key)
            case .clear?: try container.encodeNil(forKey: key)
            case nil: break
            }
        }
    }
}

extension CaseIterable where Self: CodingKey {
    /// The member names of a request body, for the daemon's strict reader.
    public static var memberNames: Set<String> { Set(allCases.map(\.stringValue)) }
}
