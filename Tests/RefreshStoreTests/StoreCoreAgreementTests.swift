import Foundation
import GRDB
import PropertyBased
import RefreshCore
import TZData
import TestSupport
import Testing

@testable import RefreshStore

let zones: ZoneInfoDirectory = try! ZoneInfoDirectory(
    path: ZoneInfoDirectory.defaultPath(environment: ProcessInfo.processInfo.environment))

/// The store loads only a window of history; the decision it yields must equal the one from the
/// whole history.
@Suite("Store and core agree")
struct StoreCoreAgreementTests {
    @Test func decisionsFromStoreHistoryEqualDecisionsFromAllHistory() async throws {
        await offPool {
            await propertyCheck(count: 60, input: Gen.int(in: 0...Int.max)) { seed in
                var rng = SystemRandomNumberGeneratorSeeded(seed: UInt64(seed))
                let ledger = try! SQLiteLedger(inMemoryAt: t0)
                let zoneNames = [
                    "America/Chicago", "Asia/Tokyo", "Pacific/Apia", "America/Santiago", "UTC", "Australia/Lord_Howe",
                ]
                let segments = [segmentA, segmentB]
                let outcomes = AttemptOutcome.allCases.filter { $0 != .reserved }
                var all: [Attempt] = []
                let now = t0.addingTimeInterval(Double(Int.random(in: 0...(30 * 86400), using: &rng)))
                try! ledger.writer.write { db in
                    for _ in 0..<Int.random(in: 0...40, using: &rng) {
                        let started = now.addingTimeInterval(-Double(Int.random(in: 0...(8 * 86400), using: &rng)))
                        let finished = started.addingTimeInterval(Double(Int.random(in: 0...120, using: &rng)))
                        let attempt = Attempt(
                            account: ["default", "other"][Int.random(in: 0...1, using: &rng)],
                            segment: segments[Int.random(in: 0...1, using: &rng)],
                            zone: try! zones.rules(for: zoneNames[Int.random(in: 0..<zoneNames.count, using: &rng)]),
                            outcome: outcomes[Int.random(in: 0..<outcomes.count, using: &rng)], startedAt: started,
                            finishedAt: finished)
                        all.append(attempt)
                        try db.execute(
                            sql:
                                "INSERT INTO attempt (account, segment_id, time_zone, outcome, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?)",
                            arguments: [
                                attempt.account, attempt.segment, attempt.zone!.name, attempt.outcome.rawValue,
                                started.timeIntervalSince1970, finished.timeIntervalSince1970,
                            ])
                    }
                }
                for segment in segments {
                    let zone = try! zones.rules(for: zoneNames[Int.random(in: 0..<zoneNames.count, using: &rng)])
                    let history = try! ledger.history(account: "default", segmentID: segment, now: now)
                    let inputs = history.engineInputs(resolve: { try? zones.rules(for: $0) })
                    let fromStore = RuleEngine.decide(
                        account: "default", segment: segment, zone: zone, history: inputs.attempts,
                        blocks: inputs.blocks, limits: .sendGrid, now: now)
                    let fromAll = RuleEngine.decide(
                        account: "default", segment: segment, zone: zone, history: all, blocks: [], limits: .sendGrid,
                        now: now)
                    #expect(fromStore == fromAll, "seed \(seed) segment \(segment)")
                }
            }
        }
    }
}

/// The control API answers budget questions from an `AccountView` read once per ledger write: at
/// any later instant (until the next write) its history must equal the ledger's own read.
@Suite("Account views")
struct AccountViewTests {
    @Test func viewAnswersAsTheLedgerDoesAtEveryLaterInstant() async throws {
        await offPool {
            await propertyCheck(count: 60, input: Gen.int(in: 0...Int.max)) { seed in
                var rng = SystemRandomNumberGeneratorSeeded(seed: UInt64(seed))
                let ledger = try! SQLiteLedger(inMemoryAt: t0)
                let segments = [segmentA, segmentB]
                let readAt = t0.addingTimeInterval(Double(Int.random(in: 0...(30 * 86400), using: &rng)))
                let outcomes = AttemptOutcome.allCases.filter { $0 != .reserved }
                try! ledger.writer.write { db in
                    for _ in 0..<Int.random(in: 0...40, using: &rng) {
                        let started = readAt.addingTimeInterval(-Double(Int.random(in: 0...(8 * 86400), using: &rng)))
                        // Now and then a request still in flight (no finish: it counts until now).
                        let inFlight = Int.random(in: 0..<10, using: &rng) == 0
                        try db.execute(
                            sql:
                                "INSERT INTO attempt (account, segment_id, time_zone, outcome, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?)",
                            arguments: [
                                ["default", "other"][Int.random(in: 0...1, using: &rng)],
                                segments[Int.random(in: 0...1, using: &rng)],
                                ["Asia/Tokyo", "Pacific/Apia", "UTC"][Int.random(in: 0...2, using: &rng)],
                                inFlight
                                    ? AttemptOutcome.reserved.rawValue
                                    : outcomes[Int.random(in: 0..<outcomes.count, using: &rng)].rawValue,
                                started.timeIntervalSince1970, inFlight ? nil : started.timeIntervalSince1970 + 1,
                            ])
                    }
                }
                for _ in 0..<Int.random(in: 0...4, using: &rng) {
                    try! ledger.addBlock(
                        account: ["default", "other"][Int.random(in: 0...1, using: &rng)],
                        segmentID: [nil, segmentA, segmentB][Int.random(in: 0...2, using: &rng)],
                        until: readAt.addingTimeInterval(
                            Double(Int.random(in: -(3 * 86400)...(2 * 86400), using: &rng))),
                        reason: "test", now: readAt)
                }
                for segment in segments where Bool.random(using: &rng) {
                    _ = try! ledger.enqueue(newJob(segment), now: readAt)
                }
                if Bool.random(using: &rng) {
                    _ = try! ledger.hold(account: "default", segmentID: segmentB, reason: "test", who: "t", now: readAt)
                }
                let view = try! ledger.accountView(account: "default", now: readAt)
                #expect(view.changeCount == ledger.changeCount)
                #expect(view.holds == (try! ledger.activeHolds(account: "default")))
                for segment in segments {
                    #expect(
                        view.queuedZones[segment] ?? []
                            == (try! ledger.queuedJobs(account: "default", segmentID: segment)).map(\.job.timeZone))
                }
                #expect(
                    view.history(segmentID: segmentA, now: readAt.addingTimeInterval(-1)) == nil, "the clock went back")
                // The control API's engine form decides as the lane does from the ledger's history.
                let resolve: (String) -> ZoneRules? = { try? zones.rules(for: $0) }
                let engine = EngineView(view, resolve: resolve)
                let limits = Limits(safetyMarginSeconds: Double(Int.random(in: 0...120, using: &rng)))
                #expect(
                    engine.decide(
                        account: "default", segmentID: segmentA, zone: try! zones.rules(for: "UTC"), alsoZones: [],
                        limits: limits, now: readAt.addingTimeInterval(-1)) == nil, "the clock went back")
                for _ in 0..<5 {
                    let later = readAt.addingTimeInterval(Double(Int.random(in: 0...(5 * 86400), using: &rng)))
                    for segment in segments {
                        let expected = try! ledger.history(account: "default", segmentID: segment, now: later)
                        #expect(view.history(segmentID: segment, now: later) == expected, "seed \(seed) at \(later)")
                        let zone = try! zones.rules(
                            for: ["Asia/Tokyo", "Pacific/Apia", "UTC"].randomElement(using: &rng)!)
                        let also = [try! zones.rules(for: "Pacific/Apia")].filter { _ in Bool.random(using: &rng) }
                        let inputs = expected.engineInputs(resolve: resolve)
                        let fromLedger = RuleEngine.decide(
                            account: "default", segment: segment, zone: zone, alsoZones: also, history: inputs.attempts,
                            blocks: inputs.blocks, limits: limits, now: later)
                        let fromView = engine.decide(
                            account: "default", segmentID: segment, zone: zone, alsoZones: also, limits: limits,
                            now: later)
                        #expect(fromView == fromLedger, "seed \(seed) segment \(segment) at \(later)")
                    }
                }
            }
        }
    }
}

/// A small seeded generator (SplitMix64) for reproducible store contents.
struct SystemRandomNumberGeneratorSeeded: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
