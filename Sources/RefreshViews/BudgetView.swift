import Foundation
import RefreshCore
import RefreshWire

// What the timeline and the status page are drawn from: the bodies of GET /v1/plan, /v1/refreshes,
// /v1/blocks, /v1/holds and /v1/budget, decoded from the same JSON a client receives, so the
// terminal (refreshctl, a client) and the page (the daemon) draw exactly what the API says.

/// The control API's bodies that the budget views are drawn from, decoded.
public struct BudgetView: Sendable, Equatable {
    /// GET /v1/refreshes: one attempt, the wire module's type.
    public typealias Refresh = RefreshBody

    /// GET /v1/plan: one planned refresh.
    public struct Send: Sendable, Equatable, Decodable {
        public var at: Date
        public var account: String
        public var segmentID: String
        public var timeZone: String
        public var jobs: [Int64]
        public var reasons: [String]

        enum CodingKeys: String, CodingKey {
            case at, account, jobs, reasons
            case segmentID = "segment_id", timeZone = "time_zone"
        }

        public init(at: Date, account: String, segmentID: String, timeZone: String, jobs: [Int64], reasons: [String]) {
            (self.at, self.account, self.segmentID, self.timeZone, self.jobs, self.reasons) = (
                at, account, segmentID, timeZone, jobs, reasons
            )
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(
                at: try c.instant(.at), account: try c.decode(String.self, forKey: .account),
                segmentID: try c.decode(String.self, forKey: .segmentID),
                timeZone: try c.decode(String.self, forKey: .timeZone), jobs: try c.decode([Int64].self, forKey: .jobs),
                reasons: try c.decode([String].self, forKey: .reasons))
        }
    }

    /// GET /v1/plan: one queued job's fate.
    public struct JobFate: Sendable, Equatable, Decodable {
        public var id: Int64
        public var account: String
        public var segmentID: String
        public var timeZone: String?
        public var fate: String
        public var at: Date?
        public var reason: String?

        enum CodingKeys: String, CodingKey {
            case id, account, fate, at, reason
            case segmentID = "segment_id", timeZone = "time_zone"
        }

        public init(
            id: Int64, account: String, segmentID: String, timeZone: String? = nil, fate: String, at: Date?,
            reason: String? = nil
        ) {
            (self.id, self.account, self.segmentID, self.timeZone, self.fate, self.at, self.reason) = (
                id, account, segmentID, timeZone, fate, at, reason
            )
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(
                id: try c.decode(Int64.self, forKey: .id), account: try c.decode(String.self, forKey: .account),
                segmentID: try c.decode(String.self, forKey: .segmentID),
                timeZone: try c.decodeIfPresent(String.self, forKey: .timeZone),
                fate: try c.decode(String.self, forKey: .fate), at: try c.instantIfPresent(.at),
                reason: try c.decodeIfPresent(String.self, forKey: .reason))
        }
    }

    /// GET /v1/blocks: a block learned from SendGrid's 429s, the wire module's type.
    public typealias Block = BlockBody

    /// GET /v1/holds: an operator's hold, the wire module's type.
    public typealias Hold = HoldBody

    /// GET /v1/budget: one account's day (UTC), the wire module's type.
    public typealias Account = AccountBudgetBody

    /// The instant the bodies describe (the plan's `now`).
    public var now: Date
    public var accounts: [Account]
    public var sends: [Send]
    public var jobs: [JobFate]
    public var refreshes: [Refresh]
    public var blocks: [Block]
    public var holds: [Hold]

    public init(
        now: Date, accounts: [Account], sends: [Send] = [], jobs: [JobFate] = [], refreshes: [Refresh] = [],
        blocks: [Block] = [], holds: [Hold] = []
    ) {
        (self.now, self.accounts, self.sends, self.jobs, self.refreshes, self.blocks, self.holds) = (
            now, accounts, sends, jobs, refreshes, blocks, holds
        )
    }

    /// Decodes the five bodies (GET /v1/plan, /v1/budget, /v1/refreshes, /v1/blocks, /v1/holds).
    public init(plan: Data, budget: Data, refreshes: Data, blocks: Data, holds: Data) throws {
        struct PlanBody: Decodable {
            var now: String
            var sends: [Send]
            var jobs: [JobFate]
        }
        struct BudgetBody: Decodable { var accounts: [AccountBudgetBody] }
        struct RefreshesBody: Decodable { var refreshes: [RefreshBody] }
        struct BlocksBody: Decodable { var blocks: [BlockBody] }
        struct HoldsBody: Decodable { var holds: [HoldBody] }
        let decoder = WireJSON.decoder
        let planBody = try decoder.decode(PlanBody.self, from: plan)
        guard let now = Timestamp.parseRFC3339(planBody.now) else {
            throw DecodingError.dataCorrupted(.init(codingPath: [], debugDescription: "now is not an RFC 3339 instant"))
        }
        self.init(
            now: now, accounts: try decoder.decode(BudgetBody.self, from: budget).accounts, sends: planBody.sends,
            jobs: planBody.jobs, refreshes: try decoder.decode(RefreshesBody.self, from: refreshes).refreshes,
            blocks: try decoder.decode(BlocksBody.self, from: blocks).blocks,
            holds: try decoder.decode(HoldsBody.self, from: holds).holds)
    }
}

extension KeyedDecodingContainer {
    /// An RFC 3339 instant.
    func instant(_ key: Key) throws -> Date {
        let text = try decode(String.self, forKey: key)
        guard let date = Timestamp.parseRFC3339(text) else {
            throw DecodingError.dataCorruptedError(
                forKey: key, in: self, debugDescription: "\"\(text)\" is not an RFC 3339 instant")
        }
        return date
    }

    /// An RFC 3339 instant, or nil when absent or null.
    func instantIfPresent(_ key: Key) throws -> Date? {
        guard let text = try decodeIfPresent(String.self, forKey: key) else { return nil }
        guard let date = Timestamp.parseRFC3339(text) else {
            throw DecodingError.dataCorruptedError(
                forKey: key, in: self, debugDescription: "\"\(text)\" is not an RFC 3339 instant")
        }
        return date
    }
}
