import Foundation
import RefreshCore
import RefreshPostgres
import RefreshStore
import RefreshWire
import TestSupport
import Testing

/// What only the shared ledger has: hosts, locks, identities, notifications, its migrator, and a
/// server that can go away. The invariants named are `PostgresLedger`'s design notes'.
@Suite("PostgreSQL ledger", .serialized)
struct PostgresLedgerTests {
    func open(
        _ place: LedgerPlace, host: String, now: Date = t0, identities: [String: String] = [:],
        leadership: LeadershipSettings? = nil, maxRequestSeconds: Double = 300
    ) async throws -> PostgresLedger {
        try #require(
            try await place.open(
                now: now, host: host, maxRequestSeconds: maxRequestSeconds, identities: identities,
                leadership: leadership) as? PostgresLedger)
    }

    /// Polls `condition` every 100 ms for up to `timeout` seconds.
    func within(_ timeout: Double, _ condition: () async throws -> Bool) async rethrows -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try await condition() { return true }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return try await condition()
    }

    /// R16: of three hosts on one account exactly one leads, the others stand by, and every host's
    /// cluster view names the leader; when the leader's connections close, another host leads
    /// within seconds, and still only one; the reservation the old leader left becomes
    /// `uncertain` one request timeout (1 s here) and the margin after the takeover, its job queued.
    @Test func oneLeaderPerAccountAndFailover() async throws {
        let place = try await LedgerPlace.make(.postgresql)
        let identities = ["default": "acct-1", "other": "acct-2"]
        var hosts: [PostgresLedger] = []
        for name in ["host-a", "host-b", "host-c"] {
            hosts.append(
                try await open(
                    place, host: name, now: Date(), identities: identities,
                    leadership: LeadershipSettings(maxClockSkew: 30), maxRequestSeconds: 1))
        }
        func leaders(_ account: String, _ among: [PostgresLedger]) -> [String] {
            among.filter { $0.dispatch(account: account) == .leads }.map(\.hostID)
        }
        #expect(await within(15) { leaders("default", hosts).count == 1 && leaders("other", hosts).count == 1 })
        for _ in 0..<20 {
            #expect(leaders("default", hosts).count <= 1 && leaders("other", hosts).count <= 1)
            try await Task.sleep(for: .milliseconds(100))
        }
        let leader = try #require(leaders("default", hosts).first)
        for host in hosts where host.hostID != leader {
            #expect(host.dispatch(account: "default") == .standsBy("another host leads the account"))
        }
        let view = try #require(try await hosts[2].cluster(now: Date()))
        #expect(view.leaders["default"] == leader && view.hostID == "host-c")
        #expect(view.hosts.map(\.hostID) == ["host-a", "host-b", "host-c"])
        #expect(view.refusal == nil && abs(view.clockSkewSeconds ?? 99) < 2, "\(view)")

        let gone = try #require(hosts.first { $0.hostID == leader })
        let rest = hosts.filter { $0.hostID != leader }
        guard case .created(let job) = try await gone.enqueue(newJob(), now: Date()),
            case .reserved(let attempt, _) = try await gone.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: Date(), check: allow)
        else { Issue.record("not reserved"); return }
        let began = ContinuousClock.now
        await gone.shutdown()
        #expect(await within(15) { leaders("default", rest).count == 1 })
        let took = ContinuousClock.now - began
        #expect(took < .seconds(15), "failover took \(took)")
        let next = try #require(leaders("default", rest).first)
        #expect(try await rest[0].cluster(now: Date())?.leaders["default"] == next)
        #expect(try await rest[0].job(id: job.id)?.state == .sending, "not before the request timeout")
        #expect(
            try await within(20) {
                try await rest[0].attempts(since: t0, account: "default", segmentID: nil, limit: 10)
                    .first { $0.id == attempt }?.outcome == .uncertain
            })
        #expect(try await rest[0].job(id: job.id)?.state == .queued)
        for host in rest { await host.shutdown() }
    }

    /// R16's other half: a leader whose lock connection stops answering stops sending within its
    /// lease, while its session (and so the lock) still lives: no other host can lead before it
    /// stopped. The leader's server process is stopped (SIGSTOP): the session neither answers nor
    /// ends; once it ends, one host leads again.
    @Test func leaderCutOffStopsBeforeAnotherCanLead() async throws {
        let place = try await LedgerPlace.make(.postgresql)
        let identities = ["default": "acct-1"]
        let a = try await open(
            place, host: "host-a", now: Date(), identities: identities,
            leadership: LeadershipSettings(maxClockSkew: 30))
        #expect(await within(15) { a.dispatch(account: "default") == .leads })
        let b = try await open(
            place, host: "host-b", now: Date(), identities: identities,
            leadership: LeadershipSettings(maxClockSkew: 30))
        try await Task.sleep(for: .seconds(1.5))
        #expect(b.dispatch(account: "default") == .standsBy("another host leads the account"))
        let cluster = try PostgresCluster.shared()
        let database = place.location
        let found = try await offPool {
            try cluster.psql(
                """
                SELECT l.pid FROM pg_locks l,
                    (SELECT hashtextextended('refreshd leader acct-1', 0) AS key) k
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                    AND l.classid = ((k.key >> 32) & 4294967295)::oid AND l.objid = (k.key & 4294967295)::oid
                """, database: database)
        }
        let pid = try #require(Int32(found), "the leader's server process: \(found)")
        try #require(kill(pid, SIGSTOP) == 0, "signalling the server process (errno \(errno))")
        let stopped = ContinuousClock.now
        var released = false
        func release() async throws {
            guard !released else { return }
            released = true
            kill(pid, SIGCONT)
            _ = try await offPool {
                try cluster.psql("SELECT pg_terminate_backend(\(pid))", database: database)
            }
        }
        do {
            #expect(await within(10) { a.dispatch(account: "default") != .leads }, "the leader stops")
            let heldBack = ContinuousClock.now - stopped
            print("leader cut off: stopped sending after \(heldBack) (lease 3 s)")
            // Its session and lock live on: nobody else leads, however long it lasts.
            for _ in 0..<30 {
                #expect(b.dispatch(account: "default") != .leads, "no second leader while the lock is held")
                #expect(a.dispatch(account: "default") != .leads)
                try await Task.sleep(for: .milliseconds(100))
            }
            try await release()
            #expect(
                await within(15) {
                    [a, b].filter { $0.dispatch(account: "default") == .leads }.count == 1
                }, "one host leads again once the session ended")
        } catch {
            try? await release()
            throw error
        }
        try? await release()
        await a.shutdown()
        await b.shutdown()
    }

    /// R17: a host whose clock is 2 minutes ahead of the database's leads nothing and says why
    /// (`.refused`, the cluster view's skew and refusal); a host with the right clock leads. The
    /// limit follows a reload.
    @Test func clockAheadRefusesToLead() async throws {
        let place = try await LedgerPlace.make(.postgresql)
        let identities = ["default": "acct-1"]
        let ahead = try await open(
            place, host: "host-a", identities: identities,
            leadership: LeadershipSettings(maxClockSkew: 30, wallClock: { Date().addingTimeInterval(120) }))
        #expect(await within(10) { ahead.dispatch(account: "default").refusal?.contains("ahead") == true })
        let refusal = ahead.dispatch(account: "default").refusal ?? ""
        #expect(refusal.contains("ahead of the ledger database"), "\(refusal)")
        let right = try await open(
            place, host: "host-b", identities: identities, leadership: LeadershipSettings(maxClockSkew: 30))
        #expect(await within(10) { right.dispatch(account: "default") == .leads })
        #expect(ahead.dispatch(account: "default").refusal != nil)
        let view = try #require(try await ahead.cluster(now: Date()))
        #expect(abs((view.clockSkewSeconds ?? 0) - 120) < 2 && view.refusal != nil, "\(view)")
        #expect(view.leaders["default"] == "host-b")
        await right.shutdown()
        // Without a leader able to lead, nobody sends: the host with the wrong clock still refuses.
        try await Task.sleep(for: .seconds(2))
        #expect(ahead.dispatch(account: "default").refusal != nil)
        // A reload moves the limit (safety_margin_seconds): wider than the skew, the host leads;
        // narrower again, it gives the account up.
        ahead.serve(identities: identities, maxClockSkew: 150)
        #expect(await within(10) { ahead.dispatch(account: "default") == .leads })
        ahead.serve(identities: identities, maxClockSkew: 30)
        #expect(await within(10) { ahead.dispatch(account: "default").refusal?.contains("more than 30.0 s") == true })
        await ahead.shutdown()
    }

    /// R2 across hosts: another host never touches a live host's reservation, at its own start or
    /// while the first host's heartbeat is fresh; only once that heartbeat is older than the lease,
    /// the request timeout and the margin together does it become `uncertain` (and count).
    @Test func recoveryWaitsForTheOtherHostsLease() async throws {
        let place = try await LedgerPlace.make(.postgresql)
        let a = try await open(place, host: "host-a")
        _ = try await a.enqueue(newJob(), now: t0)
        guard
            case .reserved(let id, _) = try await a.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
        else { Issue.record("not reserved"); return }
        let b = try await open(place, host: "host-b", now: t0.addingTimeInterval(10))
        func outcome() async throws -> AttemptOutcome? {
            try await b.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 1).first?.outcome
        }
        #expect(try await outcome() == .reserved, "host-b's start leaves host-a's reservation alone")
        let silence = PostgresLedger.leaseSeconds + 300 + PostgresLedger.recoveryMarginSeconds
        #expect(try await a.heartbeat(now: t0.addingTimeInterval(100)) == 0)
        #expect(try await b.heartbeat(now: t0.addingTimeInterval(silence + 1)) == 0, "host-a beat at +100 s")
        #expect(try await outcome() == .reserved)
        #expect(try await b.heartbeat(now: t0.addingTimeInterval(100 + silence + 1)) == 1)
        #expect(try await outcome() == .uncertain)
        let job = try #require(try await b.queuedJobs().first)
        #expect(job.attemptID == id && job.tries == 1, "requeued, still linked (R5)")
        let hosts = try await b.hosts().map(\.hostID)
        #expect(hosts == ["host-a", "host-b"])
        await a.shutdown()
        await b.shutdown()
    }

    /// R16's takeover when its recovery fails (here a constraint refuses `uncertain` for a while):
    /// the new leader keeps the lead all along (the old reservation counts as in flight meanwhile)
    /// and recovers it on a later round, once the database lets it.
    @Test func failedTakeoverRecoveryKeepsTheLead() async throws {
        let place = try await LedgerPlace.make(.postgresql)
        let identities = ["default": "acct-1"]
        func host(_ name: String) async throws -> PostgresLedger {
            try await open(
                place, host: name, now: Date(), identities: identities,
                leadership: LeadershipSettings(maxClockSkew: 30), maxRequestSeconds: 1)
        }
        let a = try await host("host-a")
        #expect(await within(15) { a.dispatch(account: "default") == .leads })
        guard case .created(let job) = try await a.enqueue(newJob(), now: Date()),
            case .reserved(let attempt, _) = try await a.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: Date(), check: allow)
        else { Issue.record("not reserved"); return }
        let cluster = try PostgresCluster.shared()
        _ = try cluster.psql(
            "ALTER TABLE refreshd.attempt ADD CONSTRAINT test_refuses_uncertain CHECK (outcome <> 'uncertain') NOT VALID",
            database: place.location)
        let b = try await host("host-b")
        await a.shutdown()
        #expect(await within(15) { b.dispatch(account: "default") == .leads })
        // Past the request timeout and the takeover margin: the recovery is tried and refused.
        let refusedUntil = Date().addingTimeInterval(1 + 5 + 4)
        while Date() < refusedUntil {
            #expect(b.dispatch(account: "default") == .leads, "the lead is kept while the recovery fails")
            try await Task.sleep(for: .milliseconds(200))
        }
        func outcome() async throws -> AttemptOutcome? {
            try await b.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 10)
                .first { $0.id == attempt }?.outcome
        }
        #expect(try await outcome() == .reserved)
        _ = try cluster.psql(
            "ALTER TABLE refreshd.attempt DROP CONSTRAINT test_refuses_uncertain", database: place.location)
        #expect(try await within(20) { try await outcome() == .uncertain }, "recovered on a later round")
        #expect(try await b.job(id: job.id)?.state == .queued)
        #expect(b.dispatch(account: "default") == .leads)
        await b.shutdown()
    }

    /// R15's own half: a reservation of this host older than a request can take (its commit was
    /// cut off, or its lane lost it) becomes `uncertain` at the host's next heartbeat.
    @Test func ownLostReservationBecomesUncertain() async throws {
        let place = try await LedgerPlace.make(.postgresql)
        let a = try await open(place, host: "host-a")
        _ = try await a.enqueue(newJob(), now: t0)
        guard
            case .reserved = try await a.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
        else { Issue.record("not reserved"); return }
        #expect(try await a.heartbeat(now: t0.addingTimeInterval(60)) == 0)
        _ = try await a.heartbeat(now: t0.addingTimeInterval(300 + PostgresLedger.recoveryMarginSeconds + 1))
        let attempt = try #require(
            try await a.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 1).first)
        #expect(attempt.outcome == .uncertain && attempt.finishedAt == t0.addingTimeInterval(300))
        await a.shutdown()
    }

    /// R12: one process per host id; a second one is refused naming the id and what to do, another
    /// id is welcome; the id is free again once its process is gone.
    @Test func oneProcessPerHostID() async throws {
        let place = try await LedgerPlace.make(.postgresql)
        let a = try await open(place, host: "host-a")
        await #expect {
            _ = try await open(place, host: "host-a")
        } throws: { error in
            guard let error = error as? LedgerError else { return false }
            return error.code == .busy && error.message.contains("\"host-a\"") && error.message.contains("host_id")
        }
        let b = try await open(place, host: "host-b")
        await b.shutdown()
        await a.shutdown()
        let again = try await open(place, host: "host-a")
        await again.shutdown()
    }

    /// R14: a write on one host moves the other host's changeCount (LISTEN/NOTIFY), so its
    /// cached views are read again.
    @Test func anotherHostsWriteIsNoticed() async throws {
        let place = try await LedgerPlace.make(.postgresql)
        let a = try await open(place, host: "host-a")
        let b = try await open(place, host: "host-b")
        try await Task.sleep(for: .milliseconds(200))
        let before = b.changeCount
        _ = try await a.enqueue(newJob(), now: t0)
        var noticed = false
        for _ in 0..<100 where !noticed {
            try await Task.sleep(for: .milliseconds(50))
            noticed = b.changeCount > before
        }
        #expect(noticed, "host-b's changeCount stayed at \(before)")
        #expect(b.outsideChanges > 0)
        // Its own writes are not outside changes (the notice carries the writing host's id).
        try await Task.sleep(for: .milliseconds(300))
        let outside = b.outsideChanges
        _ = try await b.enqueue(newJob(segmentB), now: t0)
        try await Task.sleep(for: .milliseconds(500))
        #expect(b.outsideChanges == outside)
        // Another host's heartbeat with nothing to recover is no change (before, its recovery
        // statements notified every host every 10 s even when they changed no row).
        for second in 1...3 { _ = try await a.heartbeat(now: t0.addingTimeInterval(Double(second))) }
        try await Task.sleep(for: .milliseconds(500))
        #expect(b.outsideChanges == outside, "heartbeats are not changes")
        await a.shutdown()
        await b.shutdown()
    }

    /// A job's end is announced once: its events reach the hooks of the host that took the job,
    /// not every host's.
    @Test func jobEventsBelongToTheHostThatTookTheJob() async throws {
        let place = try await LedgerPlace.make(.postgresql)
        let a = try await open(place, host: "host-a")
        let b = try await open(place, host: "host-b")
        guard case .created(let job) = try await a.enqueue(newJob(), now: t0) else {
            Issue.record("not created"); return
        }
        _ = try await b.cancel(jobID: job.id, now: t0)
        #expect(try await a.jobEvents(after: 0, limit: 10).map(\.job.id) == [job.id])
        #expect(try await b.jobEvents(after: 0, limit: 10).isEmpty)
        await a.shutdown()
        await b.shutdown()
    }

    /// Rows hold the account's identity; each host reads them under its own local name, so two
    /// hosts naming one SendGrid account differently share its history and its budget.
    @Test func identitiesJoinLocalNames() async throws {
        let place = try await LedgerPlace.make(.postgresql)
        let a = try await open(place, host: "host-a", identities: ["prod": "acct-1"])
        let b = try await open(place, host: "host-b", identities: ["main": "acct-1"])
        _ = try await a.enqueue(newJob(account: "prod"), now: t0)
        #expect(try await b.queuedJobs().map(\.job.account) == ["main"])
        guard
            case .reserved(let id, _) = try await a.reserve(
                account: "prod", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
        else { Issue.record("not reserved"); return }
        let history = try await b.history(account: "main", segmentID: segmentA, now: t0)
        #expect(history.accountAttempts.map(\.id) == [id] && history.accountAttempts.first?.account == "main")
        let raw = try await open(place, host: "host-c")
        #expect(
            try await raw.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 5).map(\.account) == [
                "acct-1"
            ])
        for ledger in [a, b, raw] { await ledger.shutdown() }
    }

    /// R1 across hosts: two hosts (each its own connection pool, as two daemons have) race for the
    /// last slot of an account 1,000 times; the rule here allows a reservation only while the
    /// account has none. Exactly one wins each race.
    @Test func twoHostsRaceForTheLastSlot() async throws {
        let place = try await LedgerPlace.make(.postgresql)
        let a = try await open(place, host: "host-a")
        let b = try await open(place, host: "host-b")
        let lastSlot: @Sendable (LedgerHistory) -> Decision = { history in
            history.accountAttempts.isEmpty
                ? Decision(verdict: .allowed, binding: [], budgets: [])
                : Decision(verdict: .notBefore(t0.addingTimeInterval(86400)), binding: [.accountDaily], budgets: [])
        }
        var wins = [0, 0, 0]  // none, one, both
        for race in 0..<1000 {
            let account = "race-\(race)"
            _ = try await a.enqueue(newJob(segmentA, account: account), now: t0)
            _ = try await b.enqueue(newJob(segmentB, account: account), now: t0)
            async let first = a.reserve(
                account: account, segmentID: segmentA, timeZone: "UTC", now: t0, check: lastSlot)
            async let second = b.reserve(
                account: account, segmentID: segmentB, timeZone: "UTC", now: t0, check: lastSlot)
            let results = try await [first, second]
            let reserved = results.filter { if case .reserved = $0 { true } else { false } }.count
            wins[reserved] += 1
        }
        #expect(wins == [0, 1000, 0], "races with no winner, one, two: \(wins)")
        let attempts = try await a.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 5000)
        #expect(attempts.count == 1000 && Set(attempts.map(\.account)).count == 1000)
        await a.shutdown()
        await b.shutdown()
    }

    /// R1 across processes: two processes (refreshd-ledger-bench race, each its own PostgresLedger,
    /// host id and connections) queue a job for each of 1,000 accounts and race for its only slot,
    /// started together. Exactly one reservation per account, and the wins add up to 1,000.
    @Test func twoProcessesRaceForTheLastSlot() async throws {
        let place = try await LedgerPlace.make(.postgresql)
        let url = try place.configuration().url.value!
        // Create the schema first, so both processes start racing, not migrating.
        await (try await open(place, host: "setup")).shutdown()
        // The built refreshd-ledger-bench, next to the test bundle (or one level up).
        let products = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let binary = try #require(
            [products, products.deletingLastPathComponent()].map {
                $0.appendingPathComponent("refreshd-ledger-bench").path
            }
            .first { FileManager.default.isExecutableFile(atPath: $0) })
        let start = Date().timeIntervalSince1970 + 2
        let wins = try await offPool {
            try [0, 1].map { worker -> Process in
                let process = Process()
                process.executableURL = URL(fileURLWithPath: binary)
                process.arguments = ["race", url, "--worker", "\(worker)", "--races", "1000"]
                process.environment = ["BENCH_START": "\(start)", "PATH": "/usr/bin:/bin"]
                process.standardOutput = Pipe()
                try process.run()
                return process
            }.map { process -> Int in
                let pipe = process.standardOutput as! Pipe
                let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                process.waitUntilExit()
                guard process.terminationStatus == 0, let line = output.split(separator: "\n").last,
                    line.hasPrefix("won="), let won = Int(line.dropFirst(4))
                else { throw LedgerError(.invalidState, "a racer failed (\(process.terminationStatus)): \(output)") }
                return won
            }
        }
        // Which process wins a race depends on timing; that each has exactly one winner does not.
        #expect(wins.reduce(0, +) == 1000, "wins per process: \(wins)")
        print("twoProcessesRaceForTheLastSlot: wins per process \(wins)")
        let check = try await open(place, host: "check")
        let attempts = try await check.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 5000)
        #expect(attempts.count == 1000 && Set(attempts.map(\.account)).count == 1000)
        await check.shutdown()
    }

    /// The migrator: version 1 applied once, reported by check-config's probe; a database that a
    /// newer refreshd migrated is refused, not written.
    @Test func migrations() async throws {
        let place = try await LedgerPlace.make(.postgresql)
        let a = try await open(place, host: "host-a")
        #expect(try await a.appliedMigrations() == [1])
        await a.shutdown()
        let again = try await open(place, host: "host-a")
        #expect(try await again.appliedMigrations() == [1])
        await again.shutdown()
        let found = try await PostgresLedgerConnection.probe(place.configuration()).get()
        #expect(found.schemaVersion == 1)
        _ = try await offPool {
            try PostgresCluster.shared().psql(
                "INSERT INTO refreshd.\(PostgresLedgerConnection.migrationsTable) (version) VALUES (99)",
                database: place.location)
        }
        await #expect {
            _ = try await open(place, host: "host-a")
        } throws: { error in
            guard let error = error as? LedgerError else { return false }
            return error.code == .unusableDatabase && error.message.contains("version 99")
        }
    }
}

/// The server goes away and comes back: a cluster of its own (the shared one serves the other
/// tests meanwhile).
@Suite("PostgreSQL ledger across a server restart")
struct PostgresRestartTests {
    /// R15: with the server down, operations fail within the deadline as `unreachable` and nothing
    /// is reserved; a restart in the middle of a reservation rolls it back (no attempt, the job
    /// still queued); once the server is back, the same ledger reserves again by itself.
    @Test func serverRestartIdleAndMidReservation() async throws {
        let cluster = try await offPool { try PostgresCluster.start() }
        defer { cluster.stop() }
        let database = try await offPool { try cluster.createDatabase() }
        var configuration = LedgerConfiguration()
        configuration.backend = Setting(.postgresql)
        configuration.url = Setting(cluster.url(database: database))
        configuration.tls = Setting(.disable)
        configuration.poolSize = Setting(2)
        let ledger = try await PostgresLedger(
            configuration: configuration, hostID: "host-a", identities: [:], now: t0,
            operationTimeout: .seconds(30))
        _ = try await ledger.enqueue(newJob(), now: t0)

        // Idle.
        try await offPool { try cluster.stopServer() }
        await #expect {
            _ = try await ledger.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
        } throws: { ($0 as? LedgerError)?.code == .unreachable && "\($0)".contains("127.0.0.1:\(cluster.port)") }
        try await offPool { try cluster.startServerAgain() }
        func reserveWhenBack(_ segment: String) async throws -> ReservationResult {
            for _ in 0..<150 {
                do {
                    return try await ledger.reserve(
                        account: "default", segmentID: segment, timeZone: "UTC", now: t0, check: allow)
                } catch let error as LedgerError where error.code == .unreachable {
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
            throw LedgerError(.unreachable, "still unreachable after 150 tries")
        }
        guard case .reserved(let first, _) = try await reserveWhenBack(segmentA) else {
            Issue.record("no reservation after the restart"); return
        }
        try await ledger.complete(
            attemptID: first, outcome: .accepted, httpStatus: 202, sendGridJobID: nil, error: nil, finishedAt: t0,
            jobs: .sent)

        // In the middle of a reservation: the server stops while the rules are being checked.
        _ = try await ledger.enqueue(newJob(segmentB), now: t0)
        let stopping: @Sendable (LedgerHistory) -> Decision = { _ in
            try? cluster.stopServer()
            return Decision(verdict: .allowed, binding: [], budgets: [])
        }
        await #expect {
            _ = try await ledger.reserve(
                account: "default", segmentID: segmentB, timeZone: "UTC", now: t0, check: stopping)
        } throws: { ($0 as? LedgerError)?.code == .unreachable }
        try await offPool { try cluster.startServerAgain() }
        guard case .reserved(let second, let jobs) = try await reserveWhenBack(segmentB) else {
            Issue.record("no reservation after the restart"); return
        }
        #expect(jobs.map(\.job.segmentID) == [segmentB] && jobs.first?.tries == 0)
        let attempts = try await ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 10)
        #expect(attempts.map(\.id) == [second, first], "the cut reservation left no attempt")
        await ledger.shutdown()
    }
}
