import Benchmark
import Foundation
import RefreshCore
import TZData

// Inputs are built once, outside the measured closures.
let zones: ZoneInfoDirectory = try! ZoneInfoDirectory(path: ZoneInfoDirectory.defaultPath(environment: ProcessInfo.processInfo.environment))
let zonePool = ["America/Santiago", "America/Chicago", "Europe/Paris", "Asia/Kathmandu", "Australia/Lord_Howe", "Pacific/Apia", "UTC", "Africa/Casablanca"]
    .map { try! zones.rules(for: $0) }
let now = Date(timeIntervalSince1970: 1_764_072_000)  // 2025-11-25T12:00:00Z

/// Two days of history for one segment, and the account's UTC day: a typical decision's input.
let decisionHistory: [Attempt] = {
    var history: [Attempt] = []
    for hours in [40.0, 30.0, 20.0, 3.0] {
        let t = now.addingTimeInterval(-hours * 3600)
        history.append(Attempt(account: "default", segment: "seg-0", zone: zonePool[0], outcome: .accepted, startedAt: t, finishedAt: t.addingTimeInterval(1)))
    }
    for i in 0..<9 {
        let t = now.addingTimeInterval(-Double(i + 1) * 1200)
        history.append(Attempt(account: "default", segment: "other-\(i)", zone: zonePool[i % zonePool.count], outcome: .accepted, startedAt: t, finishedAt: t))
    }
    return history
}()

/// 100,000 queued jobs over 10,000 segments (10 per segment), priorities -1...1, some not_before.
func bigQueue(accounts: Int) -> [QueuedJob] {
    var generator = SystemRandomNumberGenerator()
    return (0..<100_000).map { i in
        let segment = i % 10_000
        return QueuedJob(
            id: "job-\(i)", account: "acct-\(segment % accounts)", segment: "seg-\(segment)", zone: zonePool[segment % zonePool.count],
            priority: Int.random(in: -1...1, using: &generator), sequence: Int64(i),
            notBefore: i % 7 == 0 ? now.addingTimeInterval(Double(Int.random(in: 0...172_800, using: &generator))) : nil)
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .mallocCountTotal, .peakMemoryResident], maxDuration: .seconds(5))

    Benchmark("decide: one segment, 2 days of history") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(RuleEngine.decide(
                account: "default", segment: "seg-0", zone: zonePool[0], history: decisionHistory, blocks: [], limits: .sendGrid, now: now))
        }
    }

    Benchmark("dayWindow(containing:) America/Santiago", configuration: .init(scalingFactor: .kilo)) { benchmark in
        let rules = zonePool[0]
        for i in benchmark.scaledIterations {
            blackHole(rules.dayWindow(containing: 1_764_072_000 + Int64(i) * 3_607))
        }
    }

    let queueOneAccount = bigQueue(accounts: 1)
    Benchmark("plan: 100,000 jobs, 10,000 segments, 1 account", configuration: .init(maxDuration: .seconds(20), maxIterations: 5)) { benchmark in
        blackHole(Planner.plan(queue: queueOneAccount, history: decisionHistory, blocks: [], limits: .sendGrid, now: now))
    }

    let queueHundredAccounts = bigQueue(accounts: 100)
    Benchmark("plan: 100,000 jobs, 10,000 segments, 100 accounts", configuration: .init(maxDuration: .seconds(20), maxIterations: 5)) { benchmark in
        blackHole(Planner.plan(queue: queueHundredAccounts, history: decisionHistory, blocks: [], limits: .sendGrid, now: now))
    }

    Benchmark("load and parse every zone of the host database", configuration: .init(maxDuration: .seconds(10), maxIterations: 20)) { benchmark in
        let fresh = try ZoneInfoDirectory(path: zones.path)
        for name in fresh.zoneNames { blackHole(try fresh.rules(for: name)) }
    }
}
