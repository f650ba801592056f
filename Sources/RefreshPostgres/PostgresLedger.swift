// Notes on the design of the shared ledger
// ========================================
//
// The same ledger as `SQLiteLedger` (its terms and R1-R10 hold here word for word), in one
// PostgreSQL database that several hosts of one SendGrid account share. What changes is who
// can write at the same time: SQLite has one writer; here every host writes, so the invariants
// below say how they stay true across hosts. The tests name the one they check.
//
//   R1 (reservation)  As SQLite's R1, and atomic across hosts: the reserving transaction first
//                     takes a transaction-scoped advisory lock on the account's identity
//                     (`pg_advisory_xact_lock(hashtextextended('refreshd account ' || identity, 0))`),
//                     then reads the due jobs (FOR UPDATE), the holds and the history, re-checks the
//                     rules, and inserts the `reserved` attempt. Two hosts reserving for one account
//                     are serialised by that lock, so the second reads the first's attempt.
//   R2 (recovery)     A host turns only its *own* leftover `reserved` attempts (`host_id`) into
//                     `uncertain` when it opens the ledger; another host's only once that host's
//                     heartbeat is older than the lease, the request timeout and the margin together
//                     (`recoverAbandoned`): before then its request may still be out.
//   R11 (loosening)   The writes that loosen the rules (lifting a block, marking attempts
//                     unrecorded) take the same account lock as R1, so no reservation decides on a
//                     history that changes under it.
//   R12 (host)        Every attempt records the host that reserved it, every job the host that
//                     submitted it (`host_id`) and the one that claimed it for sending
//                     (`claimed_by`). One process per `host_id`: a session advisory lock on it is held
//                     by the ledger's own connection while it is open; a second process with the
//                     same id is refused at open.
//   R13 (spool files) A spool file's identity is (host, device, inode, size, mtime): inodes of two
//                     hosts collide, hosts never.
//   R14 (changes)     Every committed change of jobs, attempts, blocks or holds notifies
//                     `refreshd_ledger` with the writing host's id (a statement trigger; connections
//                     carry the id as `application_name`); each open ledger listens, and another
//                     host's change moves its `changeCount` and `outsideChanges`, so views and lanes
//                     on one host follow writes of the others. A lost listening connection moves
//                     them too (nothing is assumed unchanged).
//   R15 (fail closed) An operation that cannot reach the database within `operationTimeout` fails
//                     with `LedgerError.unreachable`; nothing is reserved, so nothing is sent. A
//                     reservation whose commit was cut off counts as if made (it is `reserved`, then
//                     `uncertain` by R2 once older than the request timeout): never fewer counted
//                     than sent.
//   R16, R17          One leader per account across hosts, and a host whose clock disagrees with
//                     the database's leads none: PostgresLeadership.swift.
//
// Instants are `double precision` Unix seconds, like SQLite's REAL: the same values round-trip
// exactly, so both backends answer the same history to the rules.

import Foundation
import Logging
import PostgresNIO
import RefreshCore
import RefreshStore
import RefreshWire
import Synchronization

/// The ledger in a PostgreSQL database shared by every host of the accounts it holds.
///
/// Rows hold the SendGrid account's stable identity (`AccountConfiguration.identity`), not the
/// host's local `[[account]] name`: `identities` maps one to the other, both ways, so the rest of
/// refreshd keeps speaking local names.
public final class PostgresLedger: Ledger {
    /// The schema refreshd's tables live in (created by the first migration).
    public static let schema = "refreshd"
    /// How long a host's heartbeat stays good without renewal.
    public static let leaseSeconds: Double = 30
    /// Added to the request timeout before another host's reservation is judged abandoned (clock
    /// skew between hosts is charged against it).
    public static let recoveryMarginSeconds: Double = 60

    public let hostID: String
    /// The host id as the server keeps it in `application_name` (at most 63 bytes).
    let applicationName: String
    public let endpoint: PostgresEndpoint
    let client: PostgresClient
    let connectionConfiguration: PostgresConnection.Configuration
    let logger: Logger
    let maxRequestSeconds: Double
    let operationTimeout: Duration
    let hostLockWait: Duration
    /// Local account names and SendGrid identities, both ways; a reload may change them.
    let identities: Locked<Identities>
    private let changes = Atomic<UInt64>(0)
    private let notices = Atomic<UInt64>(0)
    private let failure = Locked<String?>(nil)
    let changeHandler = Locked<(@Sendable () -> Void)?>(nil)
    let tasks = Locked<[Task<Void, Never>]>([])
    private let instance = UUID().uuidString
    /// Leading accounts (R16, R17); nil: this ledger never leads nor stands by (`dispatch` is
    /// always `.leads`), as for a ledger opened by a tool or a test of the ledger alone.
    let leadership: LeadershipState?

    /// Connects, migrates the schema (one host at a time), takes the host's lock, renews its lease
    /// and recovers its own leftover reservations (R2).
    ///
    /// - Parameters:
    ///   - identities: local account name -> account identity.
    ///   - operationTimeout: how long an operation waits for the database before `unreachable`.
    ///   - hostLockWait: how long to wait for `hostID`'s lock before calling it taken.
    /// - Throws: `LedgerError.unreachable` when the server cannot be reached, `.unusableDatabase`
    ///   when it refuses the login or the schema, `.busy` when another process holds `host_id`.
    public init(
        configuration ledger: LedgerConfiguration, hostID: String, identities: [String: String], now: Date,
        maxRequestSeconds: Double = 300, operationTimeout: Duration = .seconds(10),
        hostLockWait: Duration = .seconds(5), leadership: LeadershipSettings? = nil,
        logger: Logger = Logger(label: "refreshd.ledger", factory: { _ in SwiftLogNoOpLogHandler() })
    ) async throws {
        guard let url = ledger.url.value else {
            throw LedgerError(.unusableDatabase, "[ledger] backend = \"postgresql\" needs ledger.url")
        }
        do { endpoint = try PostgresEndpoint.parse(url) } catch {
            throw LedgerError(.unusableDatabase, error.description)
        }
        self.hostID = hostID
        applicationName = String(hostID.utf8.prefix(63)) ?? hostID
        self.logger = logger
        self.maxRequestSeconds = maxRequestSeconds
        self.operationTimeout = operationTimeout
        self.hostLockWait = hostLockWait
        self.leadership = leadership.map { LeadershipState($0) }
        self.identities = Locked(Identities(identities))
        var connection = try PostgresLedgerConnection.configuration(ledger, endpoint: endpoint)
        let startup = [("search_path", Self.schema), ("application_name", applicationName)]
        connection.options.additionalStartupParameters = startup
        connectionConfiguration = connection
        var clientConfiguration = try PostgresLedgerConnection.clientConfiguration(ledger, endpoint: endpoint)
        clientConfiguration.options.additionalStartupParameters = startup
        clientConfiguration.options.maximumConnections = max(1, ledger.poolSize.value)
        clientConfiguration.options.minimumConnections = 0
        client = PostgresClient(configuration: clientConfiguration, backgroundLogger: logger)
        let client = client
        // Started at once (up to its first wait), so the pool is marked running before the
        // first lease below (the client warns about a lease before `run()`).
        tasks.withLock { $0.append(Task.immediate { await client.run() }) }
        do {
            try await migrate()
            try await holdHostAndListen()
            try await transaction { connection in
                try await self.renewLease(connection, now: now)
                try await self.recoverOwn(connection, now: now)
            }
            if self.leadership != nil { startLeading() }
        } catch {
            close()
            throw error
        }
    }

    /// Stops the pool and the listening connection (the host lock goes with it).
    public func close() {
        tasks.withLock { tasks in
            for task in tasks { task.cancel() }
            tasks.removeAll()
        }
    }

    /// `close()`, returning once the connections are closed.
    public func shutdown() async {
        let running = tasks.withLock { tasks in
            defer { tasks.removeAll() }
            return tasks
        }
        for task in running { task.cancel() }
        for task in running { await task.value }
    }

    deinit { close() }

    // MARK: Identities

    struct Identities {
        let byName: [String: String]
        let byIdentity: [String: String]

        init(_ byName: [String: String]) {
            self.byName = byName
            byIdentity = Dictionary(byName.map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        }
    }

    func stored(_ name: String) -> String { identities.withLock { $0.byName[name] } ?? name }
    func local(_ identity: String) -> String { identities.withLock { $0.byIdentity[identity] } ?? identity }

    /// A reload's accounts and clock limit: rows of an added account carry its identity at once,
    /// and the leader connection takes the accounts added, lets go of those no longer served and
    /// checks the clock against the new limit at its next round (R16, R17). An account whose
    /// identity changed is another SendGrid account to the ledger: jobs queued under the old
    /// identity stay there for the hosts that still serve it.
    public func serve(identities next: [String: String], maxClockSkew: Double) {
        leadership?.state.withLock { $0.maxClockSkew = maxClockSkew }
        let previous = identities.withLock { current in
            defer { current = Identities(next) }
            return current.byName
        }
        for (name, identity) in next.sorted(by: { $0.key < $1.key }) {
            if let old = previous[name], old != identity {
                logger.warning(
                    "ledger: the account's SendGrid identity changed; jobs queued under the old one stay for the hosts that still serve it",
                    metadata: ["account": "\(name)"])
            }
        }
    }

    // MARK: Sessions

    /// Runs `body` on a pooled connection inside `operationTimeout`; a connection that cannot be
    /// had or a server that does not answer is `unreachable` (R15).
    func session<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let client = client
        let timeout = operationTimeout
        let endpoint = endpoint
        do {
            let value = try await withThrowingTaskGroup(of: T?.self) { group in
                group.addTask { try await client.withConnection { try await body($0) } }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let value = first else {
                    throw LedgerError(
                        .unreachable, "the ledger database \(endpoint) did not answer within \(timeout)")
                }
                return value
            }
            failure.withLock { $0 = nil }
            return value
        } catch let error as LedgerError {
            throw noted(error)
        } catch is CancellationError {
            throw noted(LedgerError(.unreachable, "the ledger database \(endpoint) did not answer (cancelled)"))
        } catch let error as PSQLError {
            throw noted(Self.ledgerError(error, endpoint: endpoint))
        } catch {
            // The pool closed (shutdown) or another failure on the way to the server.
            throw noted(LedgerError(.unreachable, "cannot reach the ledger database \(endpoint): \(error)"))
        }
    }

    /// Keeps the reason of an `unreachable` error for status; any other answer shows it reachable.
    private func noted(_ error: LedgerError) -> LedgerError {
        failure.withLock { $0 = error.code == .unreachable ? error.message : nil }
        return error
    }

    public var unreachableReason: String? { failure.withLock { $0 } }

    public var location: String { "PostgreSQL \(endpoint) as host \(hostID)" }

    public var outsideChanges: UInt64 { notices.load(ordering: .acquiring) }

    /// Called (on a connection's thread: keep it short) when another process may have changed
    /// the ledger: the daemon wakes its lanes.
    public func onOutsideChange(_ handler: @escaping @Sendable () -> Void) {
        changeHandler.withLock { $0 = handler }
    }

    func noticeOutsideChange() {
        changes.add(1, ordering: .releasing)
        notices.add(1, ordering: .releasing)
        changeHandler.withLock { $0 }?()
    }

    /// A transaction on a pooled connection (BEGIN ... COMMIT, ROLLBACK on any error, the error
    /// rethrown as it was); `changeCount` moves once it committed.
    func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T
    {
        defer { changes.add(1, ordering: .releasing) }
        return try await session { connection in
            try await self.run(connection, "BEGIN")
            do {
                let value = try await body(connection)
                try await self.run(connection, "COMMIT")
                return value
            } catch {
                _ = try? await self.run(connection, "ROLLBACK")
                throw error
            }
        }
    }

    static func ledgerError(_ error: PSQLError, endpoint: PostgresEndpoint) -> LedgerError {
        let text = PostgresLedgerConnection.explain(error)
        guard let state = error.serverInfo?[.sqlState] else {
            return LedgerError(.unreachable, "cannot reach the ledger database \(endpoint): \(text)")
        }
        switch state.prefix(2) {
        case "53":  // insufficient resources: disk full, out of memory, too many connections
            return LedgerError(.notWritable, "cannot write the ledger database \(endpoint): \(text)")
        case "57", "08":  // operator intervention (shutdown), connection exceptions
            return LedgerError(.unreachable, "cannot reach the ledger database \(endpoint): \(text)")
        case "40", "55":  // serialization failure, lock not available
            return LedgerError(.busy, "the ledger database \(endpoint) is busy: \(text)")
        case "25":  // read-only transaction
            return LedgerError(.notWritable, "cannot write the ledger database \(endpoint): \(text)")
        default:
            return LedgerError(.unusableDatabase, "the ledger database \(endpoint) refused: \(text)")
        }
    }

    /// Runs one statement and collects its rows. It ends, with `unreachable`, when the connection
    /// closes or `operationTimeout` passes first: postgres-nio leaves a statement written to a
    /// connection the server just closed waiting for ever (its promise is never completed), and
    /// a lane must never wait on a database that went away (R15).
    func rows(_ connection: PostgresConnection, _ query: PostgresQuery, timeout: Duration? = nil) async throws
        -> [PostgresRandomAccessRow]
    {
        let endpoint = endpoint
        guard !connection.isClosed else {
            throw LedgerError(.unreachable, "the connection to the ledger database \(endpoint) closed")
        }
        let logger = logger
        let timeout = timeout ?? operationTimeout
        return try await withCheckedThrowingContinuation { continuation in
            let once = ResumeOnce<[PostgresRandomAccessRow]>(continuation)
            let work = Task {
                do {
                    var rows: [PostgresRandomAccessRow] = []
                    for try await row in try await connection.query(query, logger: logger) {
                        rows.append(row.makeRandomAccess())
                    }
                    once.resume(.success(rows))
                } catch {
                    once.resume(.failure(error))
                }
            }
            connection.closeFuture.whenComplete { _ in
                once.resume(
                    .failure(LedgerError(.unreachable, "the connection to the ledger database \(endpoint) closed")))
                work.cancel()
            }
            let timer = connection.eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout / .nanoseconds(1)))) {
                once.resume(
                    .failure(
                        LedgerError(.unreachable, "the ledger database \(endpoint) did not answer within \(timeout)")))
                work.cancel()
            }
            once.onResume { timer.cancel() }
        }
    }

    func run(_ connection: PostgresConnection, _ query: PostgresQuery, timeout: Duration? = nil) async throws {
        _ = try await rows(connection, query, timeout: timeout)
    }

    /// The R1/R11 lock of one account identity, held to the end of the transaction.
    func lockAccount(_ connection: PostgresConnection, identity: String) async throws {
        try await run(
            connection, "SELECT pg_advisory_xact_lock(hashtextextended('refreshd account ' || \(identity), 0))")
    }

    // MARK: Schema

    /// The migrations, in order; the version is the position plus one. Never edit a shipped one.
    static let migrations: [[String]] = [
        [
            """
            CREATE TABLE host (
                host_id text PRIMARY KEY,
                instance text NOT NULL,
                started_at double precision NOT NULL,
                heartbeat_at double precision NOT NULL
            )
            """,
            """
            CREATE TABLE attempt (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                account text NOT NULL,
                segment_id text NOT NULL,
                time_zone text NOT NULL,
                outcome text NOT NULL CHECK (outcome IN ('reserved', 'accepted', 'rejected', 'rate_limited',
                    'unauthorized', 'forbidden', 'uncertain', 'dry_run', 'not_sent', 'external', 'unrecorded')),
                http_status integer,
                sendgrid_job_id text,
                started_at double precision NOT NULL,
                finished_at double precision,
                error text CHECK (error IS NULL OR length(error) <= 600),
                host_id text NOT NULL
            )
            """,
            "CREATE INDEX attempt_by_segment ON attempt(account, segment_id, started_at)",
            "CREATE INDEX attempt_by_account ON attempt(account, started_at)",
            "CREATE INDEX attempt_by_time ON attempt(started_at)",
            "CREATE INDEX attempt_reserved ON attempt(host_id) WHERE outcome = 'reserved'",
            """
            CREATE TABLE job (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                source text NOT NULL,
                idempotency_key text UNIQUE,
                content_digest text NOT NULL,
                account text NOT NULL,
                segment_id text NOT NULL,
                time_zone text NOT NULL,
                priority integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
                not_before double precision,
                expires_at double precision,
                note text,
                state text NOT NULL CHECK (state IN ('queued', 'sending', 'sent', 'coalesced', 'failed',
                    'cancelled', 'expired')),
                attempt_id bigint REFERENCES attempt(id),
                reason text,
                tries integer NOT NULL DEFAULT 0,
                retry_at double precision,
                created_at double precision NOT NULL,
                updated_at double precision NOT NULL,
                host_id text NOT NULL,
                claimed_by text
            )
            """,
            "CREATE INDEX job_by_state ON job(state, id)",
            "CREATE INDEX job_by_segment ON job(account, segment_id, state)",
            "CREATE INDEX job_by_attempt ON job(attempt_id)",
            "CREATE INDEX job_queued_by_segment ON job(account, segment_id, id) WHERE state = 'queued'",
            """
            CREATE TABLE learned_block (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                account text NOT NULL,
                segment_id text,
                until double precision NOT NULL,
                reason text NOT NULL,
                created_at double precision NOT NULL
            )
            """,
            "CREATE INDEX learned_block_by_account ON learned_block(account, until)",
            """
            CREATE TABLE segment_usage (
                account text NOT NULL,
                segment_id text NOT NULL,
                refreshes_used integer NOT NULL,
                last_refreshed_at double precision,
                observed_at double precision NOT NULL,
                PRIMARY KEY (account, segment_id)
            )
            """,
            """
            CREATE TABLE spool_file (
                host_id text NOT NULL,
                identity text NOT NULL,
                content_digest text NOT NULL,
                job_id bigint REFERENCES job(id) ON DELETE SET NULL,
                name text NOT NULL,
                taken_at double precision NOT NULL,
                PRIMARY KEY (host_id, identity, content_digest)
            )
            """,
            "CREATE INDEX spool_file_by_time ON spool_file(taken_at)",
            """
            CREATE TABLE job_event (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                job_id bigint NOT NULL,
                state text NOT NULL,
                at double precision NOT NULL
            )
            """,
            "CREATE INDEX job_event_by_time ON job_event(at)",
            """
            CREATE FUNCTION job_event_on_finish() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.state IN ('sent', 'coalesced', 'failed', 'expired', 'cancelled') AND OLD.state <> NEW.state THEN
                    INSERT INTO job_event (job_id, state, at) VALUES (NEW.id, NEW.state, NEW.updated_at);
                END IF;
                RETURN NEW;
            END $$
            """,
            """
            CREATE TRIGGER job_event_on_finish AFTER UPDATE OF state ON job
                FOR EACH ROW EXECUTE FUNCTION job_event_on_finish()
            """,
            """
            CREATE TABLE hook_cursor (
                name text PRIMARY KEY,
                event_id bigint NOT NULL
            )
            """,
            """
            CREATE TABLE hold (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                account text NOT NULL,
                segment_id text,
                reason text NOT NULL CHECK (length(reason) <= 1024),
                who text NOT NULL CHECK (length(who) <= 256),
                created_at double precision NOT NULL,
                released_at double precision
            )
            """,
            "CREATE INDEX hold_active ON hold(account) WHERE released_at IS NULL",
            """
            CREATE FUNCTION notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('refreshd_ledger', current_setting('application_name'));
                RETURN NULL;
            END $$
            """,
            "CREATE TRIGGER attempt_changed AFTER INSERT OR UPDATE OR DELETE ON attempt FOR EACH STATEMENT EXECUTE FUNCTION notify_change()",
            "CREATE TRIGGER job_changed AFTER INSERT OR UPDATE OR DELETE ON job FOR EACH STATEMENT EXECUTE FUNCTION notify_change()",
            "CREATE TRIGGER learned_block_changed AFTER INSERT OR UPDATE OR DELETE ON learned_block FOR EACH STATEMENT EXECUTE FUNCTION notify_change()",
            "CREATE TRIGGER hold_changed AFTER INSERT OR UPDATE OR DELETE ON hold FOR EACH STATEMENT EXECUTE FUNCTION notify_change()",
        ]
    ]

    /// The schema versions applied to the database, in order.
    public func appliedMigrations() async throws -> [Int] {
        let table = PostgresLedgerConnection.migrationsTable
        return try await session { connection in
            try await self.rows(connection, PostgresQuery(unsafeSQL: "SELECT version FROM \(table) ORDER BY version"))
                .map { try $0[0].decode(Int.self) }
        }
    }

    /// Applies the migrations not yet applied, in one transaction under a lock, so two hosts
    /// starting together migrate once.
    func migrate() async throws {
        let table = PostgresLedgerConnection.migrationsTable
        let schema = Self.schema
        try await transaction { connection in
            try await self.run(connection, "SELECT pg_advisory_xact_lock(hashtextextended('refreshd schema', 0))")
            try await self.run(connection, PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(schema)"))
            try await self.run(
                connection,
                PostgresQuery(
                    unsafeSQL: """
                        CREATE TABLE IF NOT EXISTS \(schema).\(table) (
                            version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())
                        """))
            let applied = Set(
                try await self.rows(connection, PostgresQuery(unsafeSQL: "SELECT version FROM \(schema).\(table)"))
                    .map { try $0[0].decode(Int.self) })
            if let newest = applied.max(), newest > Self.migrations.count {
                throw LedgerError(
                    .unusableDatabase,
                    "the ledger database holds refreshd schema version \(newest), newer than this refreshd knows "
                        + "(\(Self.migrations.count)): upgrade refreshd on this host")
            }
            for (index, statements) in Self.migrations.enumerated() where !applied.contains(index + 1) {
                for statement in statements {
                    try await self.run(connection, PostgresQuery(unsafeSQL: statement))
                }
                try await self.run(
                    connection,
                    PostgresQuery(unsafeSQL: "INSERT INTO \(schema).\(table) (version) VALUES (\(index + 1))"))
            }
        }
    }

    // MARK: Hosts (R2, R12, R14)

    /// Opens the ledger's own connection: it holds the host's lock (R12) and listens for changes
    /// (R14). Lost, it is opened again; `changeCount` moves each time.
    func holdHostAndListen() async throws {
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(
                configuration: connectionConfiguration, id: 0, logger: logger)
        } catch {
            throw LedgerError(
                .unreachable,
                "cannot reach the ledger database \(endpoint): \(PostgresLedgerConnection.explain(error))")
        }
        // A process that just died may still have its server session for a moment: wait for its
        // lock a little before calling the id taken.
        var locked = false
        let deadline = ContinuousClock.now + hostLockWait
        do {
            while true {
                for try await row in try await connection.query(
                    "SELECT pg_try_advisory_lock(hashtextextended('refreshd host ' || \(hostID), 0))", logger: logger)
                {
                    locked = try row.decode(Bool.self)
                }
                if locked || ContinuousClock.now >= deadline { break }
                try await Task.sleep(for: .milliseconds(100))
            }
        } catch {
            try? await connection.close()
            throw LedgerError(
                .unreachable,
                "cannot reach the ledger database \(endpoint): \(PostgresLedgerConnection.explain(error))")
        }
        guard locked else {
            try? await connection.close()
            throw LedgerError(
                .busy,
                "another refreshd is using the ledger \(endpoint) as host \"\(hostID)\": give each process its own "
                    + "[ledger] host_id")
        }
        let task = Task { [weak self, logger] in
            do {
                try await connection.listen(on: "refreshd_ledger") { notifications in
                    for try await notification in notifications {
                        // Each host's connections carry its id as application_name (R14):
                        // this host's own writes are not outside changes.
                        if notification.payload != self?.applicationName { self?.noticeOutsideChange() }
                    }
                }
            } catch {}
            try? await connection.close()
            guard let self, !Task.isCancelled else { return }
            self.noticeOutsideChange()
            logger.warning("ledger: the listening connection closed; opening it again")
            while !Task.isCancelled {
                do {
                    try await self.holdHostAndListen()
                    return
                } catch {
                    try? await Task.sleep(for: .seconds(1))
                }
            }
        }
        tasks.withLock { $0.append(task) }
    }

    func renewLease(_ connection: PostgresConnection, now: Date) async throws {
        let t = now.timeIntervalSince1970
        try await run(
            connection,
            """
            INSERT INTO host (host_id, instance, started_at, heartbeat_at) VALUES (\(hostID), \(instance), \(t), \(t))
            ON CONFLICT (host_id) DO UPDATE SET instance = excluded.instance,
                started_at = CASE WHEN host.instance = excluded.instance THEN host.started_at ELSE excluded.started_at END,
                heartbeat_at = excluded.heartbeat_at
            """)
    }

    /// R2 for this host: its `reserved` attempts from before this process (or older than a request
    /// can take, R15) become `uncertain`; their jobs return to `queued`, still linked.
    func recoverOwn(_ connection: PostgresConnection, now: Date, olderThan: Double? = nil) async throws {
        let cutoff = olderThan.map { now.timeIntervalSince1970 - $0 } ?? .infinity
        let ids = try await rows(
            connection,
            """
            SELECT id FROM attempt WHERE outcome = 'reserved' AND host_id = \(hostID) AND started_at < \(cutoff)
            """
        ).map { try $0[0].decode(Int64.self) }
        try await recover(connection, ids, now: now, reason: "refreshd stopped while the request was in flight")
    }

    /// Renews this host's lease and recovers what hosts gone silent left `reserved` (R2): those
    /// whose heartbeat is older than the lease, the request timeout and the margin; and this
    /// host's own reservations older than a request can take (a commit cut off, R15). Returns how
    /// many attempts became `uncertain`.
    @discardableResult
    public func heartbeat(now: Date) async throws -> Int {
        let t = now.timeIntervalSince1970
        let silentFor = Self.leaseSeconds + maxRequestSeconds + Self.recoveryMarginSeconds
        let ownCutoff = maxRequestSeconds + Self.recoveryMarginSeconds
        return try await transaction { connection in
            try await self.renewLease(connection, now: now)
            try await self.recoverOwn(connection, now: now, olderThan: ownCutoff)
            let abandoned = try await self.rows(
                connection,
                """
                SELECT attempt.id FROM attempt JOIN host ON host.host_id = attempt.host_id
                WHERE attempt.outcome = 'reserved' AND attempt.host_id <> \(self.hostID)
                    AND host.heartbeat_at < \(t - silentFor)
                """
            ).map { try $0[0].decode(Int64.self) }
            try await self.recover(
                connection, abandoned, now: now,
                reason: "the host that reserved it went silent while the request was in flight")
            return abandoned.count
        }
    }

    /// The `reserved` attempts `ids` become `uncertain` (they count); their jobs go back to
    /// `queued`, still linked (R2). Nothing is written when there is nothing to recover: a
    /// statement, even one changing no row, notifies every other host (R14), and heartbeats run
    /// every 10 s on every host.
    func recover(_ connection: PostgresConnection, _ ids: [Int64], now: Date, reason: String) async throws {
        guard !ids.isEmpty else { return }
        let t = now.timeIntervalSince1970
        try await run(
            connection,
            """
            UPDATE job SET state = 'queued', updated_at = \(t), tries = tries + 1
            WHERE state = 'sending' AND attempt_id = ANY(\(ids))
            """)
        try await run(
            connection,
            """
            UPDATE attempt SET outcome = 'uncertain', finished_at = least(\(t), started_at + \(maxRequestSeconds)),
                error = \(reason)
            WHERE id = ANY(\(ids)) AND outcome = 'reserved'
            """)
    }

    /// The hosts that use this ledger, with their last heartbeat.
    public func hosts() async throws -> [(hostID: String, heartbeatAt: Date)] {
        try await session { connection in try await self.hosts(connection) }
    }

    func hosts(_ connection: PostgresConnection) async throws -> [(hostID: String, heartbeatAt: Date)] {
        try await rows(connection, "SELECT host_id, heartbeat_at FROM host ORDER BY host_id").map {
            (
                try $0["host_id"].decode(String.self),
                Date(timeIntervalSince1970: try $0["heartbeat_at"].decode(Double.self))
            )
        }
    }

    public var changeCount: UInt64 { changes.load(ordering: .acquiring) }

    // MARK: Rows

    func job(_ row: PostgresRandomAccessRow) throws -> StoredJob {
        StoredJob(
            id: try row["id"].decode(Int64.self),
            job: NewJob(
                source: try row["source"].decode(String.self),
                idempotencyKey: try row["idempotency_key"].decode(String?.self),
                account: local(try row["account"].decode(String.self)),
                segmentID: try row["segment_id"].decode(String.self),
                timeZone: try row["time_zone"].decode(String.self), priority: try row["priority"].decode(Int.self),
                notBefore: try Self.date(row["not_before"]), expiresAt: try Self.date(row["expires_at"]),
                note: try row["note"].decode(String?.self)),
            state: JobState(rawValue: try row["state"].decode(String.self)) ?? .failed,
            attemptID: try row["attempt_id"].decode(Int64?.self), reason: try row["reason"].decode(String?.self),
            tries: try row["tries"].decode(Int.self), retryAt: try Self.date(row["retry_at"]),
            createdAt: Date(timeIntervalSince1970: try row["created_at"].decode(Double.self)),
            updatedAt: Date(timeIntervalSince1970: try row["updated_at"].decode(Double.self)))
    }

    func attempt(_ row: PostgresRandomAccessRow) throws -> StoredAttempt {
        StoredAttempt(
            id: try row["id"].decode(Int64.self), account: local(try row["account"].decode(String.self)),
            segmentID: try row["segment_id"].decode(String.self), timeZone: try row["time_zone"].decode(String.self),
            outcome: AttemptOutcome(rawValue: try row["outcome"].decode(String.self)) ?? .uncertain,
            httpStatus: try row["http_status"].decode(Int?.self),
            sendGridJobID: try row["sendgrid_job_id"].decode(String?.self),
            startedAt: Date(timeIntervalSince1970: try row["started_at"].decode(Double.self)),
            finishedAt: try Self.date(row["finished_at"]), error: try row["error"].decode(String?.self))
    }

    func block(_ row: PostgresRandomAccessRow) throws -> StoredBlock {
        StoredBlock(
            id: try row["id"].decode(Int64.self), account: local(try row["account"].decode(String.self)),
            segmentID: try row["segment_id"].decode(String?.self),
            until: Date(timeIntervalSince1970: try row["until"].decode(Double.self)),
            reason: try row["reason"].decode(String.self))
    }

    func hold(_ row: PostgresRandomAccessRow) throws -> StoredHold {
        StoredHold(
            id: try row["id"].decode(Int64.self), account: local(try row["account"].decode(String.self)),
            segmentID: try row["segment_id"].decode(String?.self), reason: try row["reason"].decode(String.self),
            who: try row["who"].decode(String.self),
            createdAt: Date(timeIntervalSince1970: try row["created_at"].decode(Double.self)),
            releasedAt: try Self.date(row["released_at"]))
    }

    static func date(_ cell: PostgresCell) throws -> Date? {
        try cell.decode(Double?.self).map(Date.init(timeIntervalSince1970:))
    }

    // MARK: Jobs

    public func enqueue(_ job: NewJob, now: Date) async throws -> EnqueueResult {
        try await transaction { connection in try await self.enqueue(connection, job, now: now) }
    }

    func enqueue(_ connection: PostgresConnection, _ job: NewJob, now: Date) async throws -> EnqueueResult {
        let t = now.timeIntervalSince1970
        let inserted = try await rows(
            connection,
            """
            INSERT INTO job (source, idempotency_key, content_digest, account, segment_id, time_zone, priority,
                not_before, expires_at, note, state, created_at, updated_at, host_id)
            VALUES (\(job.source), \(job.idempotencyKey), \(job.contentDigest), \(stored(job.account)), \(job.segmentID),
                \(job.timeZone), \(job.priority), \(job.notBefore?.timeIntervalSince1970),
                \(job.expiresAt?.timeIntervalSince1970), \(job.note), 'queued', \(t), \(t), \(hostID))
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING id
            """)
        if let row = inserted.first {
            return .created(
                StoredJob(
                    id: try row[0].decode(Int64.self), job: job, state: .queued, attemptID: nil, reason: nil, tries: 0,
                    retryAt: nil, createdAt: Date(timeIntervalSince1970: t), updatedAt: Date(timeIntervalSince1970: t)))
        }
        // The key was taken (by this host or another, committed before this insert).
        guard let key = job.idempotencyKey,
            let existing = try await rows(connection, "SELECT * FROM job WHERE idempotency_key = \(key)").first
        else { throw LedgerError(.invalidState, "the job was neither inserted nor found") }
        let stored = try self.job(existing)
        guard try existing["content_digest"].decode(String.self) == job.contentDigest else {
            throw LedgerError(
                .idempotencyConflict,
                "a job with id \"\(key)\" already exists (ledger job \(stored.id)) with different content; use a new id"
            )
        }
        return .duplicate(stored)
    }

    public func job(id: Int64) async throws -> StoredJob? {
        try await session { connection in
            try await self.rows(connection, "SELECT * FROM job WHERE id = \(id)").first.map(self.job)
        }
    }

    public func jobs(state: JobState?, segmentID: String?, after cursor: Int64?, limit: Int) async throws
        -> [StoredJob]
    {
        try await session { connection in
            try await self.rows(
                connection,
                """
                SELECT * FROM job WHERE id > \(cursor ?? 0) AND (\(state?.rawValue)::text IS NULL OR state = \(state?.rawValue))
                    AND (\(segmentID)::text IS NULL OR segment_id = \(segmentID))
                ORDER BY id LIMIT \(limit)
                """
            ).map(self.job)
        }
    }

    public func queuedJobs() async throws -> [StoredJob] {
        try await session { connection in
            try await self.rows(connection, "SELECT * FROM job WHERE state = 'queued' ORDER BY id").map(self.job)
        }
    }

    public func queuedJobs(account: String, segmentID: String) async throws -> [StoredJob] {
        let identity = stored(account)
        return try await session { connection in
            try await self.rows(
                connection,
                "SELECT * FROM job WHERE account = \(identity) AND segment_id = \(segmentID) AND state = 'queued' ORDER BY id"
            ).map(self.job)
        }
    }

    public func jobCounts() async throws -> [JobState: Int] {
        try await session { connection in
            var counts: [JobState: Int] = [:]
            for row in try await self.rows(connection, "SELECT state, count(*) FROM job GROUP BY state") {
                if let state = JobState(rawValue: try row[0].decode(String.self)) {
                    counts[state] = try row[1].decode(Int.self)
                }
            }
            return counts
        }
    }

    public func oldestQueuedAt() async throws -> Date? {
        try await session { connection in
            try await self.rows(connection, "SELECT min(created_at) FROM job WHERE state = 'queued'").first.flatMap {
                try Self.date($0[0])
            }
        }
    }

    public func cancel(jobID: Int64, now: Date) async throws -> StoredJob {
        try await transaction { connection in
            let changed = try await self.rows(
                connection,
                """
                UPDATE job SET state = 'cancelled', reason = 'cancelled', updated_at = \(now.timeIntervalSince1970)
                WHERE id = \(jobID) AND state = 'queued' RETURNING *
                """)
            if let row = changed.first { return try self.job(row) }
            guard let row = try await self.rows(connection, "SELECT * FROM job WHERE id = \(jobID)").first else {
                throw LedgerError(.notFound, "no job \(jobID)")
            }
            try LedgerSemantics.checkCancellable(try self.job(row))
            throw LedgerError(.invalidState, "job \(jobID) changed while it was being cancelled")
        }
    }

    /// The condition of a filter (its states, account, segment, since).
    func condition(_ filter: JobFilter) -> PostgresQuery {
        let states = filter.states.map(\.rawValue)
        let account = filter.account.map(stored)
        let segment = filter.segmentID
        let since = filter.since?.timeIntervalSince1970
        return """
            state = ANY(\(states)) AND (\(account)::text IS NULL OR account = \(account))
                AND (\(segment)::text IS NULL OR segment_id = \(segment))
                AND (\(since)::float8 IS NULL OR updated_at >= \(since))
            """
    }

    static func query(_ head: String, _ condition: PostgresQuery, _ tail: String = "") -> PostgresQuery {
        PostgresQuery(unsafeSQL: head + " " + condition.sql + " " + tail, binds: condition.binds)
    }

    public func jobs(matching filter: JobFilter) async throws -> [StoredJob] {
        guard !filter.states.isEmpty else { return [] }
        let query = Self.query("SELECT * FROM job WHERE", condition(filter), "ORDER BY id")
        return try await session { connection in try await self.rows(connection, query).map(self.job) }
    }

    public func cancelJobs(matching filter: JobFilter, now: Date) async throws -> [StoredJob] {
        var filter = filter
        filter.states = filter.states.filter { $0 == .queued }
        guard !filter.states.isEmpty else { return [] }
        var condition = condition(filter)
        condition.sql =
            "UPDATE job SET state = 'cancelled', reason = 'cancelled', updated_at = $\(condition.binds.count + 1) WHERE "
            + condition.sql + " RETURNING *"
        condition.binds.append(now.timeIntervalSince1970)
        let query = condition
        return try await transaction { connection in
            try await self.rows(connection, query).map(self.job).sorted { $0.id < $1.id }
        }
    }

    public func retry(jobID: Int64, now: Date) async throws -> StoredJob {
        try await transaction { connection in
            guard let row = try await self.rows(connection, "SELECT * FROM job WHERE id = \(jobID) FOR UPDATE").first
            else { throw LedgerError(.notFound, "no job \(jobID)") }
            try LedgerSemantics.checkRetryable(try self.job(row))
            return try await self.requeue(connection, jobID, now: now)
        }
    }

    public func retryJobs(matching filter: JobFilter, now: Date) async throws -> [StoredJob] {
        var filter = filter
        filter.states = filter.states.filter { $0 == .failed || $0 == .expired }
        guard !filter.states.isEmpty else { return [] }
        let query = Self.query("SELECT id FROM job WHERE", condition(filter), "ORDER BY id FOR UPDATE")
        return try await transaction { connection in
            var jobs: [StoredJob] = []
            for row in try await self.rows(connection, query) {
                jobs.append(try await self.requeue(connection, try row[0].decode(Int64.self), now: now))
            }
            return jobs
        }
    }

    /// A failed or expired job queued again (R8), as SQLite's.
    func requeue(_ connection: PostgresConnection, _ id: Int64, now: Date) async throws -> StoredJob {
        let t = now.timeIntervalSince1970
        let rows = try await rows(
            connection,
            """
            UPDATE job SET state = 'queued', reason = NULL, tries = 0, retry_at = NULL, updated_at = \(t), claimed_by = NULL,
                attempt_id = CASE WHEN (SELECT outcome FROM attempt WHERE attempt.id = job.attempt_id) = 'uncertain'
                    THEN attempt_id ELSE NULL END,
                expires_at = CASE WHEN expires_at IS NOT NULL AND expires_at <= \(t) THEN NULL ELSE expires_at END
            WHERE id = \(id) RETURNING *
            """)
        return try job(rows[0])
    }

    public func edit(jobID: Int64, change: JobChange, now: Date) async throws -> StoredJob {
        try await transaction { connection in
            guard let row = try await self.rows(connection, "SELECT * FROM job WHERE id = \(jobID) FOR UPDATE").first
            else { throw LedgerError(.notFound, "no job \(jobID)") }
            let (priority, notBefore, expiresAt) = try LedgerSemantics.edited(try self.job(row), change)
            return try self.job(
                try await self.rows(
                    connection,
                    """
                    UPDATE job SET priority = \(priority), not_before = \(notBefore?.timeIntervalSince1970),
                        expires_at = \(expiresAt?.timeIntervalSince1970), updated_at = \(now.timeIntervalSince1970)
                    WHERE id = \(jobID) RETURNING *
                    """)[0])
        }
    }

    public func expireJobs(now: Date) async throws -> [StoredJob] {
        let t = now.timeIntervalSince1970
        return try await transaction { connection in
            try await self.rows(
                connection,
                """
                UPDATE job SET state = 'expired', reason = 'expires_at passed', updated_at = \(t)
                WHERE state = 'queued' AND expires_at IS NOT NULL AND expires_at <= \(t) RETURNING *
                """
            ).map(self.job).sorted { $0.id < $1.id }
        }
    }

    // MARK: Holds (R10)

    public func hold(account: String, segmentID: String?, reason: String, who: String, now: Date) async throws
        -> StoredHold
    {
        let identity = stored(account)
        return try await transaction { connection in
            // One hold per scope, also across hosts: the account's lock orders two operators.
            try await self.lockAccount(connection, identity: identity)
            if let row = try await self.rows(
                connection,
                """
                SELECT * FROM hold WHERE released_at IS NULL AND account = \(identity)
                    AND segment_id IS NOT DISTINCT FROM \(segmentID)
                """
            ).first {
                return try self.hold(row)
            }
            return try self.hold(
                try await self.rows(
                    connection,
                    """
                    INSERT INTO hold (account, segment_id, reason, who, created_at)
                    VALUES (\(identity), \(segmentID), \(String(reason.prefix(1024))), \(String(who.prefix(256))),
                        \(now.timeIntervalSince1970))
                    RETURNING *
                    """)[0])
        }
    }

    public func release(holdID: Int64, now: Date) async throws -> StoredHold? {
        try await transaction { connection in
            try await self.rows(
                connection,
                """
                UPDATE hold SET released_at = \(now.timeIntervalSince1970) WHERE id = \(holdID) AND released_at IS NULL
                RETURNING *
                """
            ).first.map(self.hold)
        }
    }

    public func activeHolds(account: String?) async throws -> [StoredHold] {
        let identity = account.map(stored)
        return try await session { connection in
            try await self.rows(
                connection,
                """
                SELECT * FROM hold WHERE released_at IS NULL AND (\(identity)::text IS NULL OR account = \(identity))
                ORDER BY id
                """
            ).map(self.hold)
        }
    }

    // MARK: Job events (R9)

    public func jobEvents(after id: Int64, limit: Int) async throws -> [JobEvent] {
        try await session { connection in
            try await self.rows(
                connection,
                """
                SELECT job_event.id AS event_id, job_event.state AS event_state, job_event.at AS event_at, job.*,
                    attempt.http_status AS attempt_status
                FROM job_event JOIN job ON job.id = job_event.job_id LEFT JOIN attempt ON attempt.id = job.attempt_id
                WHERE job_event.id > \(id) AND job.host_id = \(self.hostID) ORDER BY job_event.id LIMIT \(limit)
                """
            ).map { row in
                JobEvent(
                    id: try row["event_id"].decode(Int64.self),
                    state: JobState(rawValue: try row["event_state"].decode(String.self)) ?? .failed,
                    at: Date(timeIntervalSince1970: try row["event_at"].decode(Double.self)), job: try self.job(row),
                    httpStatus: try row["attempt_status"].decode(Int?.self))
            }
        }
    }

    public func latestJobEventID() async throws -> Int64 {
        try await session { connection in
            try await self.rows(connection, "SELECT coalesce(max(id), 0) FROM job_event")[0][0].decode(Int64.self)
        }
    }

    /// The hook runner's position is this host's: each host runs the hooks of the jobs it took
    /// (`jobEvents` lists those only), so a job's end is announced once, by the host that queued it.
    public func hookCursor() async throws -> Int64? {
        try await session { connection in
            try await self.rows(connection, "SELECT event_id FROM hook_cursor WHERE name = \("hooks:" + self.hostID)")
                .first.map { try $0[0].decode(Int64.self) }
        }
    }

    public func setHookCursor(_ id: Int64) async throws {
        try await transaction { connection in
            try await self.run(
                connection,
                """
                INSERT INTO hook_cursor (name, event_id) VALUES (\("hooks:" + self.hostID), \(id))
                ON CONFLICT (name) DO UPDATE SET event_id = excluded.event_id
                """)
        }
    }

    // MARK: Spool intake (R6, R13)

    public func ingestSpoolFiles(_ files: [SpoolFileJob], now: Date) async throws
        -> [Result<SpoolIngestResult, LedgerError>]
    {
        try await transaction { connection in
            var results: [Result<SpoolIngestResult, LedgerError>] = []
            for file in files {
                if let row = try await self.rows(
                    connection,
                    """
                    SELECT job_id FROM spool_file WHERE host_id = \(self.hostID) AND identity = \(file.identity)
                        AND content_digest = \(file.contentDigest)
                    """
                ).first {
                    results.append(.success(.alreadyTaken(jobID: try row[0].decode(Int64?.self))))
                    continue
                }
                let result: EnqueueResult
                do {
                    result = try await self.enqueue(connection, file.job, now: now)
                } catch let error as LedgerError where error.code == .idempotencyConflict {
                    results.append(.failure(error))
                    continue
                }
                let jobID: Int64
                switch result {
                case .created(let stored), .duplicate(let stored): jobID = stored.id
                }
                try await self.run(
                    connection,
                    """
                    INSERT INTO spool_file (host_id, identity, content_digest, job_id, name, taken_at)
                    VALUES (\(self.hostID), \(file.identity), \(file.contentDigest), \(jobID), \(file.name),
                        \(now.timeIntervalSince1970))
                    """)
                results.append(.success(.enqueued(result)))
            }
            return results
        }
    }

    public func queuedCount() async throws -> Int {
        try await session { connection in
            try await self.rows(connection, "SELECT count(*) FROM job WHERE state = 'queued'")[0][0].decode(Int.self)
        }
    }

    // MARK: History

    public func history(account: String, segmentID: String, now: Date) async throws -> LedgerHistory {
        let identity = stored(account)
        return try await session { connection in
            try await self.history(connection, identity: identity, segmentID: segmentID, now: now)
        }
    }

    func history(_ connection: PostgresConnection, identity: String, segmentID: String, now: Date) async throws
        -> LedgerHistory
    {
        let segment = try await rows(
            connection,
            """
            SELECT * FROM attempt WHERE account = \(identity) AND segment_id = \(segmentID)
                AND started_at >= \(HistoryWindows.segmentSince(now)) ORDER BY started_at, id
            """
        ).map(attempt)
        let account = try await rows(
            connection,
            """
            SELECT * FROM attempt WHERE account = \(identity) AND started_at >= \(HistoryWindows.accountSince(now))
            ORDER BY started_at, id
            """
        ).map(attempt)
        let blocks = try await rows(
            connection,
            """
            SELECT * FROM learned_block WHERE account = \(identity) AND (segment_id IS NULL OR segment_id = \(segmentID))
                AND until >= \(HistoryWindows.blocksSince(now)) ORDER BY id
            """
        ).map(block)
        return LedgerHistory(segmentAttempts: segment, accountAttempts: account, blocks: blocks)
    }

    public func accountView(account: String, now: Date) async throws -> AccountView {
        let changes = changeCount
        let identity = stored(account)
        return try await session { connection in
            let attempts = try await self.rows(
                connection,
                """
                SELECT * FROM attempt WHERE account = \(identity) AND started_at >= \(HistoryWindows.segmentSince(now))
                ORDER BY started_at, id
                """
            ).map(self.attempt)
            let blocks = try await self.rows(
                connection,
                """
                SELECT * FROM learned_block WHERE account = \(identity) AND until >= \(HistoryWindows.blocksSince(now))
                ORDER BY id
                """
            ).map(self.block)
            let holds = try await self.rows(
                connection, "SELECT * FROM hold WHERE released_at IS NULL AND account = \(identity) ORDER BY id"
            ).map(self.hold)
            var queuedZones: [String: [String]] = [:]
            for row in try await self.rows(
                connection,
                "SELECT segment_id, time_zone FROM job WHERE state = 'queued' AND account = \(identity) ORDER BY id")
            {
                queuedZones[try row[0].decode(String.self), default: []].append(try row[1].decode(String.self))
            }
            return AccountView(
                account: account, readAt: now, changeCount: changes, attempts: attempts, blocks: blocks, holds: holds,
                queuedZones: queuedZones)
        }
    }

    public func attempts(since: Date, account: String?, segmentID: String?, limit: Int) async throws
        -> [StoredAttempt]
    {
        let identity = account.map(stored)
        return try await session { connection in
            try await self.rows(
                connection,
                """
                SELECT * FROM attempt WHERE started_at >= \(since.timeIntervalSince1970)
                    AND (\(identity)::text IS NULL OR account = \(identity))
                    AND (\(segmentID)::text IS NULL OR segment_id = \(segmentID))
                ORDER BY started_at DESC, id DESC LIMIT \(limit)
                """
            ).map(self.attempt)
        }
    }

    // MARK: Reservation protocol (R1)

    public func reserve(
        account: String, segmentID: String, timeZone: String, now: Date, admit: (StoredJob) -> Bool,
        check: (LedgerHistory) -> Decision
    ) async throws -> ReservationResult {
        let identity = stored(account)
        let t = now.timeIntervalSince1970
        let hostID = hostID
        // The rules run inside the transaction, on the task that `session` starts for it while
        // this one waits: the closures are used by one task at a time, and not after this returns.
        return try await withoutActuallyEscaping(admit) { admit in
            try await withoutActuallyEscaping(check) { check in
                let rules = Unchecked(admit: admit, check: check)
                return try await transaction { connection in
                    try await self.lockAccount(connection, identity: identity)
                    let due = try await self.rows(
                        connection,
                        """
                        SELECT * FROM job WHERE account = \(identity) AND segment_id = \(segmentID) AND state = 'queued'
                            AND (not_before IS NULL OR not_before <= \(t)) AND (retry_at IS NULL OR retry_at <= \(t))
                            AND (expires_at IS NULL OR expires_at > \(t))
                        ORDER BY priority DESC, id FOR UPDATE
                        """
                    ).map(self.job).filter(rules.admit)
                    guard !due.isEmpty else { return .nothingDue }
                    if let row = try await self.rows(
                        connection,
                        """
                        SELECT * FROM hold WHERE released_at IS NULL AND account = \(identity)
                            AND (segment_id IS NULL OR segment_id = \(segmentID)) ORDER BY id LIMIT 1
                        """
                    ).first {
                        return .held(try self.hold(row))
                    }
                    let history = try await self.history(
                        connection, identity: identity, segmentID: segmentID, now: now)
                    let decision = rules.check(history)
                    guard decision.verdict == .allowed else { return .denied(decision) }
                    let attemptID = try await self.rows(
                        connection,
                        """
                        INSERT INTO attempt (account, segment_id, time_zone, outcome, started_at, host_id)
                        VALUES (\(identity), \(segmentID), \(timeZone), 'reserved', \(t), \(hostID)) RETURNING id
                        """)[0][0].decode(Int64.self)
                    let ids = due.map(\.id)
                    try await self.run(
                        connection,
                        """
                        UPDATE job SET state = 'sending', attempt_id = \(attemptID), updated_at = \(t),
                            claimed_by = \(hostID)
                        WHERE id = ANY(\(ids))
                        """)
                    return .reserved(
                        attemptID: attemptID,
                        jobs: due.map { job in
                            var sending = job
                            sending.state = .sending
                            sending.attemptID = attemptID
                            sending.updatedAt = now
                            return sending
                        })
                }
            }
        }
    }

    public func complete(
        attemptID: Int64, outcome: AttemptOutcome, httpStatus: Int?, sendGridJobID: String?, error: String?,
        finishedAt: Date, jobs disposition: JobDisposition
    ) async throws {
        try await transaction { connection in
            guard
                let row = try await self.rows(
                    connection, "SELECT outcome FROM attempt WHERE id = \(attemptID) FOR UPDATE"
                ).first
            else { throw LedgerError(.notFound, "no attempt \(attemptID)") }
            let current = try row[0].decode(String.self)
            // R4: the real answer wins over `uncertain`/`unrecorded` set meanwhile.
            let late = try LedgerSemantics.isLateAnswer(attemptID: attemptID, current: current)
            let t = finishedAt.timeIntervalSince1970
            let text = LedgerSemantics.answerText(error, lateAfter: late ? current : nil)
            try await self.run(
                connection,
                """
                UPDATE attempt SET outcome = \(outcome.rawValue), http_status = \(httpStatus),
                    sendgrid_job_id = \(sendGridJobID), error = \(text), finished_at = \(t)
                WHERE id = \(attemptID)
                """)
            let states = late ? ["sending", "queued"] : ["sending"]
            let jobIDs = try await self.rows(
                connection,
                """
                SELECT id FROM job WHERE attempt_id = \(attemptID) AND state = ANY(\(states))
                ORDER BY priority DESC, id FOR UPDATE
                """
            ).map { try $0[0].decode(Int64.self) }
            switch disposition {
            case .sent:
                for (index, id) in jobIDs.enumerated() {
                    let state = index == 0 ? "sent" : "coalesced"
                    try await self.run(
                        connection, "UPDATE job SET state = \(state), updated_at = \(t) WHERE id = \(id)")
                }
            case .failed(let reason):
                let counts = outcome == .uncertain ? 1 : 0
                try await self.run(
                    connection,
                    """
                    UPDATE job SET state = 'failed', reason = \(boundedErrorText(reason)), updated_at = \(t),
                        tries = tries + \(counts) WHERE id = ANY(\(jobIDs))
                    """)
            case .requeue(let retryAt, let countsTry):
                // R5: kept linked to an attempt that may have reached SendGrid.
                try await self.run(
                    connection,
                    """
                    UPDATE job SET state = 'queued', attempt_id = CASE WHEN \(countsTry) THEN attempt_id END,
                        updated_at = \(t), retry_at = \(retryAt?.timeIntervalSince1970), tries = tries + \(countsTry ? 1 : 0),
                        claimed_by = NULL
                    WHERE id = ANY(\(jobIDs))
                    """)
            }
        }
    }

    // MARK: What SendGrid tells us

    public func recordExternal(account: String, segmentID: String, timeZone: String, at: Date) async throws
        -> StoredAttempt
    {
        let identity = stored(account)
        let t = at.timeIntervalSince1970
        return try await transaction { connection in
            try self.attempt(
                try await self.rows(
                    connection,
                    """
                    INSERT INTO attempt (account, segment_id, time_zone, outcome, started_at, finished_at, error, host_id)
                    VALUES (\(identity), \(segmentID), \(timeZone), 'external', \(t), \(t),
                        'refreshed outside refreshd (seen in refreshes_used)', \(self.hostID))
                    RETURNING *
                    """)[0])
        }
    }

    public func addBlock(account: String, segmentID: String?, until: Date, reason: String, now: Date) async throws {
        let identity = stored(account)
        try await transaction { connection in
            try await self.run(
                connection,
                """
                INSERT INTO learned_block (account, segment_id, until, reason, created_at)
                VALUES (\(identity), \(segmentID), \(until.timeIntervalSince1970), \(boundedErrorText(reason) ?? ""),
                    \(now.timeIntervalSince1970))
                """)
        }
    }

    public func blocks(account: String, now: Date) async throws -> [StoredBlock] {
        let identity = stored(account)
        return try await session { connection in
            try await self.rows(
                connection,
                """
                SELECT * FROM learned_block WHERE account = \(identity) AND until >= \(HistoryWindows.blocksSince(now))
                ORDER BY id
                """
            ).map(self.block)
        }
    }

    public func activeBlocks(account: String?, now: Date) async throws -> [StoredBlock] {
        let identity = account.map(stored)
        return try await session { connection in
            try await self.rows(
                connection,
                """
                SELECT * FROM learned_block WHERE (\(identity)::text IS NULL OR account = \(identity))
                    AND until > \(now.timeIntervalSince1970) ORDER BY id
                """
            ).map(self.block)
        }
    }

    public func liftBlock(id: Int64, now: Date) async throws -> StoredBlock? {
        try await transaction { connection in
            guard
                let found = try await self.rows(
                    connection, "SELECT account FROM learned_block WHERE id = \(id)"
                ).first
            else { return nil }
            // R11: lifting a block loosens the rules: under the account's lock.
            try await self.lockAccount(connection, identity: try found[0].decode(String.self))
            guard
                let row = try await self.rows(
                    connection,
                    "SELECT * FROM learned_block WHERE id = \(id) AND until > \(now.timeIntervalSince1970) FOR UPDATE"
                ).first
            else { return nil }
            let block = try self.block(row)
            let reason = LedgerSemantics.liftedReason(block, now: now)
            try await self.run(
                connection,
                "UPDATE learned_block SET until = \(now.timeIntervalSince1970), reason = \(reason) WHERE id = \(id)")
            return StoredBlock(
                id: block.id, account: block.account, segmentID: block.segmentID, until: now, reason: reason)
        }
    }

    public func confirmRecorded(attemptIDs: [Int64], now: Date) async throws -> [StoredJob] {
        guard !attemptIDs.isEmpty else { return [] }
        let t = now.timeIntervalSince1970
        return try await transaction { connection in
            var finished: [StoredJob] = []
            for id in attemptIDs {
                let changed = try await self.rows(
                    connection,
                    """
                    UPDATE attempt SET outcome = 'accepted',
                        error = substr(coalesce(error, '') || ' (recorded by SendGrid, seen by pre-flight)', 1, 600)
                    WHERE id = \(id) AND outcome = 'uncertain' RETURNING id
                    """)
                guard !changed.isEmpty else { continue }
                let rows = try await self.rows(
                    connection,
                    "SELECT * FROM job WHERE attempt_id = \(id) AND state = 'queued' ORDER BY priority DESC, id FOR UPDATE"
                )
                for (index, row) in rows.enumerated() {
                    var job = try self.job(row)
                    job.state = index == 0 ? .sent : .coalesced
                    job.reason = LedgerSemantics.confirmedByPreflight
                    job.updatedAt = now
                    try await self.run(
                        connection,
                        """
                        UPDATE job SET state = \(job.state.rawValue), reason = \(job.reason), retry_at = NULL,
                            updated_at = \(t) WHERE id = \(job.id)
                        """)
                    finished.append(job)
                }
            }
            return finished
        }
    }

    public func markUnrecorded(attemptIDs: [Int64]) async throws -> Int {
        guard !attemptIDs.isEmpty else { return 0 }
        return try await transaction { connection in
            // R11: fewer refreshes counted for the segment: under each account's lock, in one order.
            let accounts = try await self.rows(
                connection, "SELECT DISTINCT account FROM attempt WHERE id = ANY(\(attemptIDs)) ORDER BY account"
            ).map { try $0[0].decode(String.self) }
            for account in accounts { try await self.lockAccount(connection, identity: account) }
            return try await self.rows(
                connection,
                """
                UPDATE attempt SET outcome = 'unrecorded',
                    error = substr(coalesce(error, '') || ' (not recorded by SendGrid, seen by pre-flight)', 1, 600)
                WHERE id = ANY(\(attemptIDs)) AND outcome = 'uncertain' RETURNING id
                """
            ).count
        }
    }

    public func recordUsage(
        account: String, segmentID: String, refreshesUsed: Int, lastRefreshedAt: Date?, observedAt: Date
    ) async throws {
        let identity = stored(account)
        try await transaction { connection in
            try await self.run(
                connection,
                """
                INSERT INTO segment_usage (account, segment_id, refreshes_used, last_refreshed_at, observed_at)
                VALUES (\(identity), \(segmentID), \(refreshesUsed), \(lastRefreshedAt?.timeIntervalSince1970),
                    \(observedAt.timeIntervalSince1970))
                ON CONFLICT (account, segment_id) DO UPDATE SET refreshes_used = excluded.refreshes_used,
                    last_refreshed_at = excluded.last_refreshed_at, observed_at = excluded.observed_at
                """)
        }
    }

    // MARK: Retention (R3)

    public func prune(retentionDays: Int, now: Date) async throws -> Int {
        let cutoff = now.timeIntervalSince1970 - Double(max(retentionDays, 3)) * 86400
        let t = now.timeIntervalSince1970
        return try await transaction { connection in
            var removed = try await self.rows(
                connection,
                """
                DELETE FROM job WHERE state IN ('sent', 'coalesced', 'failed', 'cancelled', 'expired')
                    AND updated_at < \(cutoff) RETURNING id
                """
            ).count
            removed += try await self.rows(
                connection,
                """
                DELETE FROM attempt WHERE started_at < \(cutoff) AND outcome <> 'reserved'
                    AND NOT EXISTS (SELECT 1 FROM job WHERE job.attempt_id = attempt.id) RETURNING id
                """
            ).count
            removed += try await self.rows(
                connection, "DELETE FROM learned_block WHERE until < \(t - 86400) RETURNING id"
            ).count
            try await self.run(connection, "DELETE FROM job_event WHERE at < \(t - 7 * 86400)")
            try await self.run(connection, "DELETE FROM spool_file WHERE taken_at < \(cutoff)")
            return removed
        }
    }
}

/// The reservation's two closures, carried into the task that runs its transaction (see `reserve`).
private struct Unchecked: @unchecked Sendable {
    let admit: (StoredJob) -> Bool
    let check: (LedgerHistory) -> Decision
}

/// A continuation resumed by whichever of a statement, its connection's close and its deadline
/// comes first; the others find it resumed.
private final class ResumeOnce<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<Value, any Error>?
    private var cleanup: (@Sendable () -> Void)?

    init(_ continuation: CheckedContinuation<Value, any Error>) {
        self.continuation = continuation
    }

    func resume(_ result: Result<Value, any Error>) {
        lock.lock()
        let (continuation, cleanup) = (self.continuation, self.cleanup)
        (self.continuation, self.cleanup) = (nil, nil)
        lock.unlock()
        cleanup?()
        continuation?.resume(with: result)
    }

    /// Runs `cleanup` once resumed (now, if it already is).
    func onResume(_ cleanup: @escaping @Sendable () -> Void) {
        lock.lock()
        let resumed = continuation == nil
        if !resumed { self.cleanup = cleanup }
        lock.unlock()
        if resumed { cleanup() }
    }
}

/// A value behind a pthread lock (`NSLock`): ThreadSanitizer sees it, where it cannot see
/// `Synchronization.Mutex`'s futex on Linux (the project's rule, see CHANGELOG).
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
