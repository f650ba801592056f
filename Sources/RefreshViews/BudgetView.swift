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

    /// GET /v1/plan: one planned refresh, the wire module's type.
    public typealias Send = PlannedSendBody

    /// GET /v1/plan: one queued job's fate, the wire module's type.
    public typealias JobFate = PlannedJobBody

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
        struct BudgetBody: Decodable { var accounts: [AccountBudgetBody] }
        struct RefreshesBody: Decodable { var refreshes: [RefreshBody] }
        struct BlocksBody: Decodable { var blocks: [BlockBody] }
        struct HoldsBody: Decodable { var holds: [HoldBody] }
        let decoder = WireJSON.decoder
        let planBody = try decoder.decode(PlanAnswer.self, from: plan)
        self.init(
            now: planBody.now, accounts: try decoder.decode(BudgetBody.self, from: budget).accounts,
            sends: planBody.sends,
            jobs: planBody.jobs, refreshes: try decoder.decode(RefreshesBody.self, from: refreshes).refreshes,
            blocks: try decoder.decode(BlocksBody.self, from: blocks).blocks,
            holds: try decoder.decode(HoldsBody.self, from: holds).holds)
    }
}
