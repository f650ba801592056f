import FakeSendGrid
import Foundation
import Logging
import RefreshCore
import RefreshDaemon
import RefreshPostgres
import RefreshStore
import RefreshWire
import TZData
import TestSupport

/// Simulated wall-clock time shared by the dispatcher and the fake SendGrid.
final class SimulatedTime: @unchecked Sendable {
    private let lock = NSLock()
    private var current: Date
    init(_ start: Date) { current = start }
    var now: Date { lock.withLock { current } }
    func set(_ t: Date) { lock.withLock { current = t } }
    func advance(_ seconds: Double) { lock.withLock { current = current.addingTimeInterval(seconds) } }
}

/// A dispatcher lane for one account, a real ledger file and a fake SendGrid on 127.0.0.1, all
/// on simulated time. Requests travel over real HTTP.
final class DispatchHarness: @unchecked Sendable {
    let time: SimulatedTime
    let fake: FakeSendGrid
    let ledger: any Ledger
    let client: SendGridClient
    let lane: AccountLane
    let logs = LogSink.memory()
    let baseURL: String

    init(
        start: Date, limits: Limits = .sendGrid, preflight: Bool = true, maxAttempts: Int = 5,
        requestTimeout: Double = 2,
        dryRun: Bool = false, baseURL overrideURL: String? = nil, onBehalfOf: String? = nil,
        zones: ZoneInfoDirectory = hostZones, backend: LedgerConfiguration.Backend = .sqlite
    ) async throws {
        time = SimulatedTime(start)
        let time = self.time
        fake = FakeSendGrid(apiKey: fakeKey, zones: hostZones, now: { time.now })
        let started = try await fake.start()
        baseURL = overrideURL ?? started
        switch backend {
        case .sqlite:
            ledger = try SQLiteLedger(path: temporaryDirectory() + "/ledger.sqlite", now: start)
        case .postgresql:
            // A database of its own in the test process's throwaway cluster.
            let url = try await offPool {
                let cluster = try PostgresCluster.shared()
                return cluster.url(database: try cluster.createDatabase())
            }
            var configuration = LedgerConfiguration()
            configuration.backend = Setting(.postgresql)
            configuration.url = Setting(url)
            configuration.tls = Setting(.disable)
            configuration.poolSize = Setting(2)
            ledger = try await PostgresLedger(
                configuration: configuration, hostID: "sim-\(UUID().uuidString.prefix(8))", identities: [:], now: start,
                operationTimeout: .seconds(60))
        }
        client = SendGridClient(
            baseURL: baseURL, requestTimeoutSeconds: requestTimeout, connectTimeoutSeconds: 1, version: "test")
        let sink = logs
        let logger = Logger(label: "refreshd") { label in
            JournalLogHandler(label: label, level: .debug, journald: false, sink: sink, clock: { time.now })
        }
        let account = AccountConfiguration(
            name: "default", onBehalfOf: onBehalfOf, apiKey: APIKey(fakeKey), apiKeySource: "test")
        lane = AccountLane(
            account: account, ledger: ledger, client: dryRun ? nil : client, zones: zones, limits: limits,
            preflight: preflight,
            maxAttempts: maxAttempts, now: { time.now }, logger: logger)
    }

    func shutdown() async {
        await client.shutdown()
        await fake.stop()
        await (ledger as? PostgresLedger)?.shutdown()
    }

    @discardableResult
    func enqueue(
        _ segment: String, zone: String = "UTC", priority: Int = 0, notBefore: Date? = nil, expiresAt: Date? = nil
    ) async throws -> Int64 {
        let job = NewJob(
            source: "test", account: "default", segmentID: segment, timeZone: zone, priority: priority,
            notBefore: notBefore, expiresAt: expiresAt)
        switch try await ledger.enqueue(job, now: time.now) {
        case .created(let stored), .duplicate(let stored): return stored.id
        }
    }

    /// Runs the lane on simulated time until `end`, enqueueing `arrivals` as their instants come.
    /// Time jumps straight to the next instant the lane asked for or the next arrival.
    func run(until end: Date, arrivals: [(at: Date, segment: String, zone: String, priority: Int)] = []) async throws {
        var pending = arrivals.sorted { $0.at < $1.at }[...]
        while true {
            let t = time.now
            while let arrival = pending.first, arrival.at <= t {
                pending.removeFirst()
                try await enqueue(arrival.segment, zone: arrival.zone, priority: arrival.priority)
            }
            let next = await lane.step()
            var target = min(next ?? end, pending.first?.at ?? end, end)
            if t >= end { return }
            if target <= t { target = t.addingTimeInterval(1) }
            time.set(target)
        }
    }

    func job(_ id: Int64) async throws -> StoredJob { try await ledger.job(id: id)! }
    func attempts() async throws -> [StoredAttempt] {
        try await ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 100_000).reversed()
    }
}

/// A segment id for an index.
func segmentID(_ index: Int) -> String { String(format: "5e9a1c3e-0000-4000-8000-%012d", index) }

/// The earliest instant at or after `from` at which a refresh of a segment (in `zone`) may go out
/// given earlier sends, by the fake SendGrid's own day arithmetic plus refreshd's margin: the
/// yardstick the simulation holds the dispatcher to. `segmentSends` are this segment's refreshes,
/// `accountSends` every request of the account.
func earliestLegal(
    from: Date, zone: ZoneRules, segmentSends: [Date], accountSends: [Date], margin: Double = 60,
    dayEnds: inout [Date: Date]
) -> Date {
    var c = from
    for _ in 0..<100 {
        var required = c
        if let last = segmentSends.max() { required = max(required, last.addingTimeInterval(3600 + margin)) }
        let segmentExpiries = segmentSends.map { send -> Date in
            if let end = dayEnds[send] { return end.addingTimeInterval(margin) }
            let end = FakeSendGrid.nextDayStart(after: send, zone: zone)
            dayEnds[send] = end
            return end.addingTimeInterval(margin)
        }.filter { $0 > c }.sorted()
        if segmentExpiries.count >= 2 { required = max(required, segmentExpiries[segmentExpiries.count - 2]) }
        let accountExpiries = accountSends.map {
            Date(timeIntervalSince1970: (($0.timeIntervalSince1970 / 86400).rounded(.down) + 1) * 86400 + margin)
        }
        .filter { $0 > c }.sorted()
        if accountExpiries.count >= 10 { required = max(required, accountExpiries[accountExpiries.count - 10]) }
        if required <= c { return c }
        c = required
    }
    return c
}
