import Benchmark
import Foundation
import Logging
import RefreshCore
import RefreshDaemon
import RefreshStore
import TZData

// Inputs are built once, outside the measured closures.
let zones: ZoneInfoDirectory = try! ZoneInfoDirectory(path: ZoneInfoDirectory.defaultPath(environment: ProcessInfo.processInfo.environment))
let zonePool = ["America/Santiago", "America/Chicago", "Europe/Paris", "Asia/Kathmandu", "Australia/Lord_Howe", "Pacific/Apia", "UTC", "Africa/Casablanca"]
let start = Date(timeIntervalSince1970: 1_795_586_400)  // 2026-11-25T06:00:00Z

/// A mutable value shared by a benchmark's runs (the queue keeps draining across them).
final class Box<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}

/// 100,000 queued jobs over 10,000 segments, one account.
func bigSendQueue() -> SendQueue {
    var queue = SendQueue(account: "default", limits: .sendGrid)
    var generator = SystemRandomNumberGenerator()
    for segment in 0..<10_000 {
        let zone = try! zones.rules(for: zonePool[segment % zonePool.count])
        let jobs = (0..<10).map { k in
            PendingJob(
                id: Int64(segment * 10 + k), segment: "seg-\(segment)", zone: zone, priority: Int.random(in: -1...1, using: &generator),
                dueAt: k == 9 ? start.addingTimeInterval(Double(Int.random(in: 0...172_800, using: &generator))) : nil)
        }
        queue.setJobs(segment: "seg-\(segment)", jobs, history: [], now: start)
    }
    return queue
}

/// A ledger file holding `count` queued jobs (10 per segment), written in a few transactions.
func ledgerWithJobs(_ count: Int, notBefore: Date?) throws -> SQLiteLedger {
    let path = NSTemporaryDirectory() + "refreshd-bench-dispatch-\(UUID().uuidString).sqlite"
    let ledger = try SQLiteLedger(path: path, now: start)
    for batch in stride(from: 0, to: count, by: 10_000) {
        let files = (batch..<min(batch + 10_000, count)).map { i in
            SpoolFileJob(
                identity: "bench:\(i)", contentDigest: "\(i)", name: "job-\(i).json",
                job: NewJob(
                    source: "bench", account: "default", segmentID: String(format: "5e9a1c3e-0000-4000-8000-%012d", i / 10),
                    timeZone: zonePool[(i / 10) % zonePool.count], notBefore: notBefore))
        }
        _ = try ledger.ingestSpoolFiles(files, now: start)
    }
    return ledger
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .mallocCountTotal, .peakMemoryResident], maxDuration: .seconds(5))

    Benchmark("SendQueue: load 100,000 jobs over 10,000 segments", configuration: .init(maxDuration: .seconds(20), maxIterations: 5)) { _ in
        blackHole(bigSendQueue())
    }

    // One dispatch decision (what to send next, or how long to sleep) with 100,000 jobs queued,
    // including reporting the send back. The account's 10 a day bind, so most decisions after the
    // tenth are "wait until 00:00 UTC"; time jumps there, as the dispatcher's clock would.
    let queue = Box(bigSendQueue())
    let clock = Box(start)
    Benchmark("SendQueue.next: one dispatch decision, 100,000 jobs queued", configuration: .init(scalingFactor: .one)) { benchmark in
        for _ in benchmark.scaledIterations {
            let t = clock.value
            switch queue.value.next(now: t) {
            case .send(let segment, let zone, let jobs):
                queue.value.record(Attempt(account: "default", segment: segment, zone: zone, outcome: .accepted, startedAt: t, finishedAt: t), now: t)
                queue.value.remove(jobs, segment: segment, now: t)
            case .expire: break
            case .wait(let until): clock.value = until ?? t.addingTimeInterval(86400)
            }
        }
    }

    // The whole dispatcher step against a real ledger file holding 100,000 queued jobs, dry-run:
    // each run is one simulated day, whose step makes the day's 10 refreshes (pull, decide,
    // reserve with the rules re-checked in the transaction, complete, re-read the segment).
    let dayClock = Box(start)
    let lane: AccountLane? = {
        guard let ledger = try? ledgerWithJobs(100_000, notBefore: nil) else { return nil }
        let now = dayClock
        return AccountLane(
            account: AccountConfiguration(name: "default", apiKeySource: "none"), ledger: ledger, client: nil, zones: zones, limits: .sendGrid,
            preflight: false, maxAttempts: 5, now: { now.value }, logger: Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() }))
    }()
    Benchmark("AccountLane.step: a day's 10 dry-run sends, 100,000 jobs in the ledger", configuration: .init(maxDuration: .seconds(20), maxIterations: 30)) { _ in
        guard let lane else { return }
        let next = await lane.step()
        dayClock.value = next ?? dayClock.value.addingTimeInterval(86400)
    }

    // Idle: 10,000 jobs waiting for tomorrow; the loop runs 10 s of real time. CPU time and
    // context switches over those 10 s show there is no busy loop.
    let idleLane: AccountLane? = {
        guard let ledger = try? ledgerWithJobs(10_000, notBefore: Date().addingTimeInterval(86400)) else { return nil }
        return AccountLane(
            account: AccountConfiguration(name: "default", apiKeySource: "none"), ledger: ledger, client: nil, zones: zones, limits: .sendGrid,
            preflight: false, maxAttempts: 5, now: { Date() }, logger: Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() }))
    }()
    Benchmark(
        "idle: dispatcher loop for 10 s with 10,000 jobs waiting for tomorrow",
        configuration: .init(metrics: [.wallClock, .cpuTotal, .contextSwitches, .syscalls], maxDuration: .seconds(30), maxIterations: 1)
    ) { benchmark in
        guard let idleLane else { return }
        _ = await idleLane.step()  // loads the queue (not part of the idle figure)
        benchmark.startMeasurement()
        let loop = Task { await idleLane.run(clock: ContinuousClock(), maxSleep: .seconds(60)) }
        try? await Task.sleep(for: .seconds(10))
        idleLane.stop()
        _ = await loop.value
        benchmark.stopMeasurement()
    }
}
