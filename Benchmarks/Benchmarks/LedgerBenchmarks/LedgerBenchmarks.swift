import AsyncHTTPClient
import Benchmark
import Foundation
import GRDB
import Logging
import RefreshCore
import RefreshDaemon
import RefreshStore
import ServiceLifecycle
import TZData

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

    apiBenchmarks()
}

// MARK: The control API over its unix socket, on the same 1M-attempt ledger (10,000 segments)

/// The API served in process on a unix socket; the clock is the ledger's "now". Started once,
/// from inside the first API benchmark (never blocking a thread while it comes up).
actor APIServer {
    let socket = FileManager.default.temporaryDirectory.appendingPathComponent("refreshd-bench-api.sock").path
    private var group: ServiceGroup?

    func start() async throws -> String {
        if group != nil { return socket }
        let ledger = try SQLiteLedger(path: ledgerPath, now: now)
        var loader = ConfigurationLoader(environment: ["HOME": NSTemporaryDirectory()], userID: 1000)
        var configuration = try loader.build(text: nil, path: nil)
        configuration.accounts = (0..<1000).map { AccountConfiguration(name: "acct-\($0)", apiKeySource: "none") }
        let zones = try ZoneInfoDirectory(path: ZoneInfoDirectory.defaultPath(environment: ProcessInfo.processInfo.environment))
        let state = ControlState(
            ledger: ledger, zones: zones, configuration: configuration, version: "bench", startedAt: now, now: { now }, metrics: RefreshdMetrics(),
            lanes: { [] }, intake: { nil }, wake: {})
        let quiet = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })
        try ControlAPIListeners.prepareSocket(socket)
        let services = try ControlAPIListeners.make(state: state, socketPath: socket, listen: nil, apiToken: nil, logger: quiet)
        let group = ServiceGroup(services: services, gracefulShutdownSignals: [], logger: quiet)
        self.group = group
        Task.detached { try await group.run() }
        while !FileManager.default.fileExists(atPath: socket) { try await Task.sleep(for: .milliseconds(10)) }
        try await Task.sleep(for: .milliseconds(100))
        return socket
    }
}

let apiServer = APIServer()
nonisolated(unsafe) var apiSocket = ""

let apiClient = HTTPClient(eventLoopGroupProvider: .singleton)

func segmentBudgetURL(_ i: Int) -> String {
    let segment = i % 10_000
    let uri = "/v1/segments/" + String(format: "00000000-0000-4000-8000-%012d", segment) + "/budget?account=acct-\(segment % 1000)"
    return URL(httpURLWithSocketPath: apiSocket, uri: uri)!.absoluteString
}

let apiBenchmarks: @Sendable () -> Void = {
    Benchmark(
        "control API: one segment budget over the unix socket (1 client)",
        configuration: .init(metrics: [.wallClock, .throughput], maxDuration: .seconds(10))
    ) { benchmark in
        apiSocket = try await apiServer.start()
        benchmark.startMeasurement()
        for i in benchmark.scaledIterations {
            let response = try await apiClient.execute(request: HTTPClient.Request(url: segmentBudgetURL(i))).get()
            precondition(response.status == .ok)
            blackHole(response)
        }
    }

    Benchmark(
        "control API: 10,000 segment budgets, 16 concurrent clients",
        configuration: .init(metrics: [.wallClock], maxDuration: .seconds(60), maxIterations: 5)
    ) { benchmark in
        apiSocket = try await apiServer.start()
        benchmark.startMeasurement()
        await withTaskGroup(of: Void.self) { group in
            for client in 0..<16 {
                group.addTask {
                    for k in 0..<625 {
                        let response = try? await apiClient.execute(request: HTTPClient.Request(url: segmentBudgetURL(client * 625 + k))).get()
                        precondition(response?.status == .ok)
                    }
                }
            }
        }
    }

    Benchmark("control API: GET /v1/budget, 1,000 accounts", configuration: .init(metrics: [.wallClock], maxDuration: .seconds(20), maxIterations: 20)) { benchmark in
        apiSocket = try await apiServer.start()
        benchmark.startMeasurement()
        let url = URL(httpURLWithSocketPath: apiSocket, uri: "/v1/budget")!.absoluteString
        let response = try await apiClient.execute(request: HTTPClient.Request(url: url)).get()
        precondition(response.status == .ok)
    }
}
