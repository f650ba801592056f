// refreshd-ledger-bench: the ledger's work for one sent job (enqueue, reserve, complete) on SQLite
// and on PostgreSQL, from one or several processes sharing one account (so every reservation of
// every process contends for the same account: SQLite's one writer, PostgreSQL's advisory lock).
//
//   refreshd-ledger-bench sqlite /tmp/bench.sqlite --processes 3 --seconds 10
//   refreshd-ledger-bench postgresql postgres://bench@127.0.0.1:5432/bench --processes 3 --seconds 10
//   refreshd-ledger-bench race postgres://bench@127.0.0.1:5432/bench --worker 0 --races 1000
//
// Prints cycles per second (all processes together) and the reserve call's latency (p50, p99,
// max) pooled over every process: the decision latency a lane sees, its transaction included.
// Benchmarks/ledger-bench.sh runs the table in Benchmarks/README.md (its own PostgreSQL cluster,
// durable: fsync and synchronous_commit on, like SQLite's synchronous = FULL).

import Foundation
import RefreshCore
import RefreshPostgres
import RefreshStore
import RefreshWire

let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
    FileHandle.standardError.write(
        Data("usage: refreshd-ledger-bench sqlite PATH | postgresql URL [--processes N] [--seconds S]\n".utf8))
    exit(64)
}
let backend = arguments[1]
let location = arguments[2]
func option(_ name: String, _ fallback: Int) -> Int {
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return fallback }
    return Int(arguments[index + 1]) ?? fallback
}
let processes = option("--processes", 1)
let seconds = option("--seconds", 10)
let worker = option("--worker", -1)

/// A segment id per worker and cycle (each reservation finds its own job due).
func segment(_ worker: Int, _ index: Int) -> String {
    String(format: "be0c4000-%04d-4000-8000-%012d", worker, index)
}

let allow: @Sendable (LedgerHistory) -> Decision = { _ in Decision(verdict: .allowed, binding: [], budgets: []) }

/// SQLite has one writer: several processes on one file wait for its lock, past the 2 s busy
/// timeout under this load. A busy answer is tried again and counted (the daemon's lanes do the
/// same); PostgreSQL's never are.
nonisolated(unsafe) var busy = 0
func retryingBusy<T>(_ body: () async throws -> T) async throws -> T {
    while true {
        do { return try await body() } catch let error as LedgerError where error.code == .busy { busy += 1 }
    }
}

func runWorker(_ worker: Int) async throws {
    let base = Date(timeIntervalSince1970: 1_800_000_000)
    let ledger: any Ledger
    switch backend {
    case "sqlite":
        ledger = try SQLiteLedger(path: location, now: base)
    default:
        var configuration = LedgerConfiguration()
        configuration.backend = Setting(.postgresql)
        configuration.url = Setting(location)
        configuration.tls = Setting(.disable)
        configuration.poolSize = Setting(2)
        ledger = try await PostgresLedger(
            configuration: configuration, hostID: "bench-\(worker)-\(getpid())", identities: [:], now: base)
    }
    // Start together: the parent writes a start instant into the environment.
    let startAt = Double(ProcessInfo.processInfo.environment["BENCH_START"] ?? "") ?? Date().timeIntervalSince1970
    while Date().timeIntervalSince1970 < startAt { usleep(1000) }
    let deadline = ContinuousClock.now + .seconds(seconds)
    var latencies: [Double] = []
    var index = 0
    while ContinuousClock.now < deadline {
        // Ten sends a simulated day per worker keeps the account's window (two UTC days) short.
        let now = base.addingTimeInterval(Double(index) * 8640 + Double(worker))
        let segmentID = segment(worker, index)
        _ = try await retryingBusy {
            try await ledger.enqueue(
                NewJob(source: "bench", account: "bench", segmentID: segmentID, timeZone: "UTC"), now: now)
        }
        let started = ContinuousClock.now
        let result = try await retryingBusy {
            try await ledger.reserve(account: "bench", segmentID: segmentID, timeZone: "UTC", now: now, check: allow)
        }
        let took = ContinuousClock.now - started
        latencies.append(Double(took.components.seconds) * 1e3 + Double(took.components.attoseconds) / 1e15)
        guard case .reserved(let attemptID, _) = result else {
            FileHandle.standardError.write(Data("not reserved: \(result)\n".utf8))
            exit(70)
        }
        try await retryingBusy {
            try await ledger.complete(
                attemptID: attemptID, outcome: .accepted, httpStatus: 202, sendGridJobID: nil, error: nil,
                finishedAt: now.addingTimeInterval(1), jobs: .sent)
        }
        index += 1
    }
    print("busy=\(busy)")
    print(latencies.map { String(format: "%.4f", $0) }.joined(separator: ","))
    await (ledger as? PostgresLedger)?.shutdown()
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

/// `race URL --worker K --races N`: for each of N accounts in turn, queue a job and try to reserve
/// the account's only slot (the rule here: allowed while the account has no attempt). Prints how
/// many this process won. Two of these on one database are the two hosts of the race test
/// (`PostgresLedgerTests.twoProcessesRaceForTheLastSlot`).
func runRace(_ worker: Int, races: Int) async throws {
    var configuration = LedgerConfiguration()
    configuration.backend = Setting(.postgresql)
    configuration.url = Setting(location)
    configuration.tls = Setting(.disable)
    configuration.poolSize = Setting(2)
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let ledger = try await PostgresLedger(
        configuration: configuration, hostID: "race-\(worker)", identities: [:], now: now,
        operationTimeout: .seconds(60))
    let lastSlot: @Sendable (LedgerHistory) -> Decision = { history in
        history.accountAttempts.isEmpty
            ? Decision(verdict: .allowed, binding: [], budgets: [])
            : Decision(verdict: .notBefore(now.addingTimeInterval(86400)), binding: [.accountDaily], budgets: [])
    }
    let startAt = Double(ProcessInfo.processInfo.environment["BENCH_START"] ?? "") ?? Date().timeIntervalSince1970
    while Date().timeIntervalSince1970 < startAt { usleep(1000) }
    var won = 0
    for race in 0..<races {
        let account = "race-\(race)"
        let segmentID = segment(worker, race)
        _ = try await ledger.enqueue(
            NewJob(source: "race", account: account, segmentID: segmentID, timeZone: "UTC"), now: now)
        if case .reserved = try await ledger.reserve(
            account: account, segmentID: segmentID, timeZone: "UTC", now: now, check: lastSlot)
        {
            won += 1
        }
    }
    print("won=\(won)")
    await ledger.shutdown()
}

if backend == "race" {
    try await runRace(max(worker, 0), races: option("--races", 1000))
} else if worker >= 0 {
    try await runWorker(worker)
} else {
    // Open once first (the schema and migrations), then the workers together.
    if backend == "sqlite" {
        _ = try SQLiteLedger(path: location, now: Date(timeIntervalSince1970: 1_800_000_000))
    }
    let start = Date().timeIntervalSince1970 + 2
    var children: [(Process, Pipe)] = []
    for index in 0..<processes {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        process.arguments = [backend, location, "--seconds", "\(seconds)", "--worker", "\(index)"]
        var environment = ProcessInfo.processInfo.environment
        environment["BENCH_START"] = "\(start)"
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        children.append((process, pipe))
    }
    var all: [Double] = []
    for (process, pipe) in children {
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            FileHandle.standardError.write(Data("a worker failed (\(process.terminationStatus))\n".utf8))
            exit(70)
        }
        for line in output.split(separator: "\n") {
            if line.hasPrefix("busy=") {
                busy += Int(line.dropFirst(5)) ?? 0
            } else {
                all += line.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
            }
        }
    }
    all.sort()
    print(
        String(
            format: "%@ processes=%d cycles/s=%.0f reserve_ms p50=%.2f p99=%.2f max=%.2f n=%d busy_retries=%d",
            backend, processes, Double(all.count) / Double(seconds), percentile(all, 0.5), percentile(all, 0.99),
            all.last ?? .nan, all.count, busy))
}
