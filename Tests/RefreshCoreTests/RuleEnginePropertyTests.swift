import Foundation
import PropertyBased
import RefreshCore
import TZData
import TestSupport
import Testing

/// The engine and the planner against the brute-force checker, on random worlds around DST changes.
@Suite("Rule engine properties")
struct RuleEnginePropertyTests {
    /// I1-I5: the engine's earliest instant is exactly the first minute the brute force allows.
    @Test func decisionMatchesBruteForce() async {
        await offPool {
            await propertyCheck(count: 150, input: Gen.int(in: 0...Int.max)) { seed in
                let world = Scenario(seed: UInt64(seed))
                let last = world.now + 4 * 86400
                let brute = world.brute(through: last)
                for target in world.segments {
                    let decision = RuleEngine.decide(
                        account: target.account, segment: target.segment, zone: target.zone, history: world.history,
                        blocks: world.blocks, limits: world.limits, now: Date(timeIntervalSince1970: Double(world.now)))
                    let expected = brute.earliest(
                        account: target.account, segment: target.segment, zones: [target.zone], history: world.history,
                        now: world.now, through: last)
                    let actual = decision.earliest(now: Date(timeIntervalSince1970: Double(world.now))).map {
                        Int64($0.timeIntervalSince1970)
                    }
                    #expect(actual == expected, "\(world) segment \(target.segment)")
                    if case .never = decision.verdict {
                        #expect(world.limits.segmentDaily == 0 || world.limits.accountDaily == 0)
                    }
                }
            }
        }
    }

    /// plan() sends every job exactly when the brute-force dispatcher does: no schedule breaks a
    /// rule, each refresh goes at the earliest allowed minute, coalescing and expiry agree.
    @Test func planMatchesBruteForce() async {
        await offPool {
            await propertyCheck(
                count: Int(ProcessInfo.processInfo.environment["REFRESHD_PROPERTY_COUNT"] ?? "") ?? 150,
                input: Gen.int(in: 0...Int.max)
            ) { seed in
                Self.checkPlanMatches(seed: UInt64(seed))
            }
        }
    }

    static func checkPlanMatches(seed: UInt64) {
        let world = Scenario(seed: seed)
        let last = world.now + 16 * 86400
        let plan = Planner.plan(
            queue: world.queue, history: world.history, blocks: world.blocks, limits: world.limits,
            now: Date(timeIntervalSince1970: Double(world.now)))
        let expected = world.brute(through: last).simulate(
            queue: world.queue, history: world.history, now: world.now, through: last)
        for job in world.queue {
            #expect(plan.fates[job.id] == expected[job.id], "\(world) \(job.id)")
        }
    }

    /// Every planned send, replayed in order, is allowed by the brute-force rules at its instant.
    @Test func plannedSendsBreakNoRule() async {
        await offPool {
            await propertyCheck(count: 80, input: Gen.int(in: 0...Int.max)) { seed in
                Self.checkPlannedSends(seed: UInt64(seed))
            }
        }
    }

    /// Seeds that once failed, kept as regressions.
    @Test(arguments: [UInt64(5_110_294_718_341_069_575), 7_893_982_855_663_172_380])
    func regressionSeeds(_ seed: UInt64) {
        Self.checkPlannedSends(seed: seed)
        Self.checkPlanMatches(seed: seed)
    }

    static func checkPlannedSends(seed: UInt64) {
        let world = Scenario(seed: seed, maxJobs: 14)
        let last = world.now + 20 * 86400
        let brute = world.brute(through: last)
        let plan = Planner.plan(
            queue: world.queue, history: world.history, blocks: world.blocks, limits: world.limits,
            now: Date(timeIntervalSince1970: Double(world.now)))
        var history = world.history
        for send in plan.sends {
            let at = Int64(send.at.timeIntervalSince1970)
            let served = send.jobs.map { id in world.queue.first { $0.id == id }! }
            #expect(served[0].zone.name == send.zone)
            let zones = served.map(\.zone)
            let allowed = brute.allowed(
                account: send.account, segment: send.segment, zones: zones, history: history, at: at, now: world.now)
            #expect(allowed, "\(world) send at \(send.at)")
            history.append(
                Attempt(
                    account: send.account, segment: send.segment, zone: zones[0], outcome: .accepted,
                    startedAt: send.at, finishedAt: send.at))
        }
    }
}
