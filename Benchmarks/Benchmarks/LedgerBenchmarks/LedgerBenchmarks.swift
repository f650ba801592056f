import Benchmark
import Foundation
import GRDB
import RefreshCore
import RefreshStore

/// A ledger file with 1,000,000 attempts: 1,000 accounts of 10 segments each (about 11 attempts per
/// account per day, near what SendGrid allows), spread over 90 days, and
/// 100,000 finished jobs. Built once (bulk insert in one transaction) and reused.
let now = Date(timeIntervalSince1970: 1_764_072_000)
let ledgerPath: String = {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("refreshd-bench-1M.sqlite").path
    if FileManager.default.fileExists(atPath: path) { return path }
    _ = try! SQLiteLedger(path: path, now: now)  // migrations
    let pool = try! DatabasePool(path: path)
    try! pool.write { db in
        let insert = try db.makeStatement(
            sql: "INSERT INTO attempt (account, segment_id, time_zone, outcome, http_status, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
        let zones = ["America/Chicago", "Europe/Paris", "Asia/Tokyo", "UTC"]
        for i in 0..<1_000_000 {
            let segment = i % 10_000
            let started = now.timeIntervalSince1970 - Double((i * 7919) % (90 * 86400))
            try insert.execute(arguments: [
                "acct-\(segment % 1000)", String(format: "00000000-0000-4000-8000-%012d", segment), zones[segment % 4],
                i % 13 == 0 ? "rejected" : "accepted", i % 13 == 0 ? 404 : 202, started, started + 0.4,
            ])
        }
        let job = try db.makeStatement(
            sql: "INSERT INTO job (source, content_digest, account, segment_id, time_zone, state, created_at, updated_at) VALUES ('bench', 'x', ?, ?, 'UTC', 'sent', ?, ?)")
        for i in 0..<100_000 {
            let segment = i % 10_000
            let t = now.timeIntervalSince1970 - Double((i * 104_729) % (90 * 86400))
            try job.execute(arguments: ["acct-\(segment % 1000)", String(format: "00000000-0000-4000-8000-%012d", segment), t, t])
        }
    }
    return path
}()

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .mallocCountTotal, .peakMemoryResident], maxDuration: .seconds(10))
    let path = ledgerPath
    let size = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
    print("ledger: \(path), \(size / 1_048_576) MiB")

    Benchmark("open a 1M-attempt ledger (migrations check, quick_check, recovery)", configuration: .init(maxIterations: 20)) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try SQLiteLedger(path: path, now: now))
        }
    }

    let ledger = try! SQLiteLedger(path: path, now: now)
    Benchmark("load one decision's history from a 1M-attempt ledger") { benchmark in
        for i in benchmark.scaledIterations {
            let segment = i % 10_000
            blackHole(try ledger.history(account: "acct-\(segment % 1000)", segmentID: String(format: "00000000-0000-4000-8000-%012d", segment), now: now))
        }
    }

}
