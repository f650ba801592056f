import Foundation
import RefreshCore
import TZData
import Testing

func job(
    _ id: String, segment: String = "s1", priority: Int = 0, sequence: Int64, zone: String = "UTC",
    notBefore: String? = nil,
    expiresAt: String? = nil, account: String = "default"
) -> QueuedJob {
    QueuedJob(
        id: id, account: account, segment: segment, zone: rules(zone), priority: priority, sequence: sequence,
        notBefore: notBefore.map(at), expiresAt: expiresAt.map(at))
}

@Suite("Planner")
struct PlannerTests {
    let now = at("2026-11-25T12:00:00Z")

    /// Jobs of one segment that are due together are served by one refresh (coalesced).
    @Test func coalescesDueJobs() {
        let plan = Planner.plan(
            queue: [job("a", sequence: 1), job("b", sequence: 2)], history: [], blocks: [], limits: .sendGrid, now: now)
        #expect(plan.sends.count == 1)
        #expect(plan.sends[0].jobs == ["a", "b"])
        #expect(plan.fates["b"] == .send(at: now, leader: "a"))
    }

    /// A job due after a refresh needs its own, an interval (plus margin) later.
    @Test func laterJobNeedsNewRefresh() {
        let plan = Planner.plan(
            queue: [job("a", sequence: 1), job("b", sequence: 2, notBefore: "2026-11-25T12:10:00Z")], history: [],
            blocks: [],
            limits: .sendGrid, now: now)
        #expect(plan.fates["a"] == .send(at: now, leader: "a"))
        #expect(plan.fates["b"] == .send(at: at("2026-11-25T13:01:00Z"), leader: "b"))
        #expect(plan.sends[1].reasons == [.segmentInterval])
    }

    /// With one account slot left, the higher priority takes it; FIFO breaks ties.
    @Test func priorityThenFIFO() {
        let history = (0..<9).map { attempt(.accepted, "2026-11-25T0\($0):00:00Z", segment: "old\($0)", zone: "UTC") }
        let queue = [
            job("low", segment: "s1", priority: 0, sequence: 1), job("high", segment: "s2", priority: 5, sequence: 2),
            job("high-later", segment: "s3", priority: 5, sequence: 3),
        ]
        let plan = Planner.plan(queue: queue, history: history, blocks: [], limits: .sendGrid, now: now)
        #expect(plan.fates["high"] == .send(at: now, leader: "high"))
        #expect(plan.fates["high-later"] == .send(at: at("2026-11-26T00:01:00Z"), leader: "high-later"))
        #expect(plan.fates["low"] == .send(at: at("2026-11-26T00:01:00Z"), leader: "low"))
        #expect(plan.sends.map(\.jobs) == [["high"], ["high-later"], ["low"]])
        #expect(plan.sends[1].reasons == [.accountDaily])
    }

    /// not_before holds a job back; the reason says so.
    @Test func notBeforeHoldsBack() {
        let plan = Planner.plan(
            queue: [job("a", sequence: 1, notBefore: "2026-11-25T18:00:00Z")], history: [], blocks: [],
            limits: .sendGrid, now: now)
        #expect(plan.fates["a"] == .send(at: at("2026-11-25T18:00:00Z"), leader: "a"))
        #expect(plan.sends[0].reasons == [.notBefore])
    }

    /// A job whose expiry comes before the rules allow a refresh expires unsent.
    @Test func expiresUnsent() {
        let history = [
            attempt(.accepted, "2026-11-25T08:00:00Z", zone: "UTC"),
            attempt(.accepted, "2026-11-25T10:00:00Z", zone: "UTC"),
        ]
        let plan = Planner.plan(
            queue: [job("a", sequence: 1, expiresAt: "2026-11-25T23:00:00Z")], history: history, blocks: [],
            limits: .sendGrid, now: now)
        #expect(plan.fates["a"] == .expire(at: at("2026-11-25T23:00:00Z")))
        #expect(plan.sends.isEmpty)
    }

    /// A limit of 0 plans no send: jobs are "never" (or expire).
    @Test func zeroLimitNeverSends() {
        let plan = Planner.plan(
            queue: [job("a", sequence: 1), job("b", segment: "s2", sequence: 2, expiresAt: "2026-11-26T00:00:00Z")],
            history: [],
            blocks: [], limits: Limits(segmentDaily: 0), now: now)
        #expect(plan.fates["a"] == .never)
        #expect(plan.fates["b"] == .expire(at: at("2026-11-26T00:00:00Z")))
    }

    /// Ten segments of one account: 10 go today, the 11th after 00:00 UTC + margin.
    @Test func accountDayFillsThenWaits() {
        let queue = (0..<11).map { job("j\($0)", segment: "s\($0)", sequence: Int64($0)) }
        let plan = Planner.plan(queue: queue, history: [], blocks: [], limits: .sendGrid, now: now)
        #expect(plan.sends.filter { $0.at == now }.count == 10)
        #expect(plan.fates["j10"] == .send(at: at("2026-11-26T00:01:00Z"), leader: "j10"))
    }

    /// Accounts do not share budgets.
    @Test func accountsAreIndependent() {
        let queue = (0..<12).map { job("j\($0)", segment: "s\($0)", sequence: Int64($0), account: $0 < 6 ? "a" : "b") }
        let plan = Planner.plan(queue: queue, history: [], blocks: [], limits: .sendGrid, now: now)
        #expect(plan.sends.allSatisfy { $0.at == now })
    }
}
