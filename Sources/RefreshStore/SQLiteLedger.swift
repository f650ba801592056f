// Notes on the design of the ledger
// =================================
//
// Terms. An *attempt* is one row per request refreshd made, or may have made, to SendGrid's
// refresh endpoint (plus `external` rows for refreshes SendGrid reports that refreshd did not
// make). A *job* is one submitted refresh request; the attempt that carried it is its
// `attempt_id`. A *write* is one IMMEDIATE transaction on the single writer connection.
//
// Invariants. The tests name the one they check.
//
//   R1 (reservation)  No request is sent without a durable `reserved` attempt, inserted by the same
//                     write that re-reads the segment's and the account's history and re-checks the
//                     rules (`reserve`). Its jobs move to `sending` in that write.
//   R2 (recovery)     On open, every attempt still `reserved` becomes `uncertain` (it may have reached
//                     SendGrid: it counts), finished no later than the request timeout after it
//                     started; its jobs return to `queued`, still linked to it.
//   R3 (retention)    Pruning never deletes a queued or sending job, a `reserved` attempt, or any row
//                     younger than 3 days (every rule window is shorter).
//   R4 (late answer)  An answer for an attempt that became `uncertain` or `unrecorded` meanwhile is
//                     recorded with its real outcome, and the jobs still linked to it and not yet
//                     finished follow it (sent, failed): never an error that holds the account up.
//   R5 (linked retry) A job requeued after a request that may have reached SendGrid keeps its link
//                     to that attempt, so a pre-flight showing SendGrid counted the request marks
//                     the attempt `accepted` and the job sent (`confirmRecorded`), never sent twice.
//   R6 (spool files)  A spool file's identity and digest are committed with its job; the same file
//                     read again (a crash between commit and unlink) is recognised, not a new job.
//   R7 (one writer)   One daemon per ledger file: the daemon takes the state directory's lock
//                     (`StateDirectoryLock`) before this type opens, migrates or recovers it.
//   R8 (retry)        A failed or expired job retried by an operator is queued again with tries,
//                     backoff and reason afresh (a passed `expires_at` dropped); its attempts stay
//                     in the history, and a link to an `uncertain` attempt stays (R5 still holds).
//   R10 (holds)       No attempt is reserved for a segment while an operator's hold on it or on its
//                     account is in force: `reserve` reads the holds in its own transaction.
//   R9 (job events)   A job reaching sent, coalesced, failed, expired or cancelled gets a `job_event`
//                     row in the same transaction (a trigger: every code path), read in order by
//                     the hook runner, whose position (`hook_cursor`) is committed after its hooks ran.

import Foundation
import GRDB
import RefreshCore
import Synchronization

/// The ledger in one SQLite file (system libsqlite3 through GRDB): WAL, `synchronous=FULL`
/// (a ledger row decides money-like slots), a busy timeout, foreign keys on.
///
/// This type owns the database and its migrator. Instants are stored as REAL Unix seconds.
public final class SQLiteLedger: Ledger {
    /// The database file.
    public let path: String
    public var location: String { "SQLite " + path }
    /// Seconds a statement waits for a lock another process holds before `busy`.
    public static let busyTimeout: TimeInterval = 2
    let writer: any DatabaseWriter

    /// Opens (creating if absent) the ledger at `path`, migrates it, and turns every attempt left
    /// `reserved` by a crash into `uncertain`, finished no later than `maxRequestSeconds` after it
    /// started (the request cannot have reached SendGrid later), and its jobs back to `queued`.
    ///
    /// - Throws: `LedgerError.unusableDatabase` naming the file and the reason when it cannot be
    ///   opened, is not a database or fails its integrity check. The file is never overwritten.
    public init(path: String, now: Date, maxRequestSeconds: Double = 300) throws {
        self.path = path
        var configuration = Configuration()
        // Another process holding the write lock (a sqlite3 shell left in a transaction) is waited
        // for 2 s at most: every writer here retries on its own (the lane, intake) or answers 503
        // (the API), and a longer wait would only hold a thread and the writer connection.
        configuration.busyMode = .timeout(Self.busyTimeout)
        configuration.foreignKeysEnabled = true
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        do {
            if FileManager.default.fileExists(atPath: path), !FileManager.default.isReadableFile(atPath: path) {
                throw LedgerError(.unusableDatabase, "cannot read the ledger \(path): permission denied")
            }
            let pool = try DatabasePool(path: path, configuration: configuration)
            try pool.read { db in
                let result = try String.fetchOne(db, sql: "PRAGMA quick_check(1)") ?? "no answer"
                guard result == "ok" else {
                    throw LedgerError(.unusableDatabase, "the ledger \(path) failed its integrity check: \(result)")
                }
            }
            writer = pool
            try Self.migrator.migrate(pool)
        } catch let error as LedgerError {
            throw error
        } catch let error as DatabaseError {
            throw LedgerError(
                .unusableDatabase, "cannot open the ledger \(path): \(error.message ?? "\(error.resultCode)")")
        } catch {
            throw LedgerError(.unusableDatabase, "cannot open the ledger \(path): \(error)")
        }
        try recover(now: now, maxRequestSeconds: maxRequestSeconds)
    }

    /// An in-memory ledger for tests (same migrations, no file).
    public init(inMemoryAt now: Date) throws {
        path = ":memory:"
        var configuration = Configuration()
        configuration.foreignKeysEnabled = true
        let queue = try DatabaseQueue(configuration: configuration)
        try Self.migrator.migrate(queue)
        writer = queue
        try recover(now: now, maxRequestSeconds: 300)
    }

    /// The migrations, in order. Never edit a shipped migration: add the next one.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE attempt (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        account TEXT NOT NULL,
                        segment_id TEXT NOT NULL,
                        time_zone TEXT NOT NULL,
                        outcome TEXT NOT NULL CHECK (outcome IN ('reserved', 'accepted', 'rejected', 'rate_limited',
                            'unauthorized', 'forbidden', 'uncertain', 'dry_run', 'not_sent', 'external')),
                        http_status INTEGER,
                        sendgrid_job_id TEXT,
                        started_at REAL NOT NULL,
                        finished_at REAL,
                        error TEXT CHECK (error IS NULL OR length(error) <= 600)
                    );
                    CREATE INDEX attempt_by_segment ON attempt(account, segment_id, started_at);
                    CREATE INDEX attempt_by_account ON attempt(account, started_at);
                    CREATE INDEX attempt_by_time ON attempt(started_at);
                    CREATE INDEX attempt_reserved ON attempt(outcome) WHERE outcome = 'reserved';

                    CREATE TABLE job (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        source TEXT NOT NULL,
                        idempotency_key TEXT UNIQUE,
                        content_digest TEXT NOT NULL,
                        account TEXT NOT NULL,
                        segment_id TEXT NOT NULL,
                        time_zone TEXT NOT NULL,
                        priority INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
                        not_before REAL,
                        expires_at REAL,
                        note TEXT,
                        state TEXT NOT NULL CHECK (state IN ('queued', 'sending', 'sent', 'coalesced', 'failed',
                            'cancelled', 'expired')),
                        attempt_id INTEGER REFERENCES attempt(id),
                        reason TEXT,
                        created_at REAL NOT NULL,
                        updated_at REAL NOT NULL
                    );
                    CREATE INDEX job_by_state ON job(state, id);
                    CREATE INDEX job_by_segment ON job(account, segment_id, state);
                    CREATE INDEX job_by_attempt ON job(attempt_id);

                    CREATE TABLE learned_block (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        account TEXT NOT NULL,
                        segment_id TEXT,
                        until REAL NOT NULL,
                        reason TEXT NOT NULL,
                        created_at REAL NOT NULL
                    );
                    CREATE INDEX learned_block_by_account ON learned_block(account, until);

                    CREATE TABLE segment_usage (
                        account TEXT NOT NULL,
                        segment_id TEXT NOT NULL,
                        refreshes_used INTEGER NOT NULL,
                        last_refreshed_at REAL,
                        observed_at REAL NOT NULL,
                        PRIMARY KEY (account, segment_id)
                    );
                    """)
        }
        migrator.registerMigration("v2") { db in
            // Spool intake: which file (device, inode, size, mtime) with which content became which
            // job, written in the job's transaction, so a file read again after a crash between
            // commit and unlink is recognised instead of becoming a second job.
            try db.execute(
                sql: """
                    CREATE TABLE spool_file (
                        identity TEXT NOT NULL,
                        content_digest TEXT NOT NULL,
                        job_id INTEGER REFERENCES job(id) ON DELETE SET NULL,
                        name TEXT NOT NULL,
                        taken_at REAL NOT NULL,
                        PRIMARY KEY (identity, content_digest)
                    );
                    CREATE INDEX spool_file_by_time ON spool_file(taken_at);
                    """)
        }
        migrator.registerMigration("v3") { db in
            // The dispatcher: per-job tries and backoff (kept apart from the submitter's
            // not_before), and the outcome 'unrecorded' (an uncertain attempt a later pre-flight
            // showed SendGrid did not record). SQLite cannot change a CHECK, so attempt is rebuilt.
            try db.execute(
                sql: """
                    ALTER TABLE job ADD COLUMN tries INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE job ADD COLUMN retry_at REAL;
                    CREATE TABLE attempt_v3 (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        account TEXT NOT NULL,
                        segment_id TEXT NOT NULL,
                        time_zone TEXT NOT NULL,
                        outcome TEXT NOT NULL CHECK (outcome IN ('reserved', 'accepted', 'rejected', 'rate_limited',
                            'unauthorized', 'forbidden', 'uncertain', 'dry_run', 'not_sent', 'external', 'unrecorded')),
                        http_status INTEGER,
                        sendgrid_job_id TEXT,
                        started_at REAL NOT NULL,
                        finished_at REAL,
                        error TEXT CHECK (error IS NULL OR length(error) <= 600)
                    );
                    INSERT INTO attempt_v3 (id, account, segment_id, time_zone, outcome, http_status, sendgrid_job_id, started_at,
                        finished_at, error)
                        SELECT id, account, segment_id, time_zone, outcome, http_status, sendgrid_job_id, started_at, finished_at, error
                        FROM attempt;
                    DROP TABLE attempt;
                    ALTER TABLE attempt_v3 RENAME TO attempt;
                    CREATE INDEX attempt_by_segment ON attempt(account, segment_id, started_at);
                    CREATE INDEX attempt_by_account ON attempt(account, started_at);
                    CREATE INDEX attempt_by_time ON attempt(started_at);
                    CREATE INDEX attempt_reserved ON attempt(outcome) WHERE outcome = 'reserved';
                    CREATE INDEX job_queued_by_segment ON job(account, segment_id, id) WHERE state = 'queued';
                    """)
        }
        migrator.registerMigration("v4") { db in
            // Event hooks: every job that reaches a final state gets a row, written by a trigger in
            // the transaction that changes the state (whichever code path does), so no event is
            // lost to a crash between the change and the hook (R9). The hook runner's position is
            // kept beside it.
            try db.execute(
                sql: """
                    CREATE TABLE job_event (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        job_id INTEGER NOT NULL,
                        state TEXT NOT NULL,
                        at REAL NOT NULL
                    );
                    CREATE INDEX job_event_by_time ON job_event(at);
                    CREATE TRIGGER job_event_on_finish AFTER UPDATE OF state ON job
                        WHEN NEW.state IN ('sent', 'coalesced', 'failed', 'expired', 'cancelled') AND OLD.state <> NEW.state
                        BEGIN
                            INSERT INTO job_event (job_id, state, at) VALUES (NEW.id, NEW.state, NEW.updated_at);
                        END;
                    CREATE TABLE hook_cursor (
                        name TEXT PRIMARY KEY,
                        event_id INTEGER NOT NULL
                    );
                    """)
        }
        migrator.registerMigration("v5") { db in
            // Operator holds on an account or a segment (R10): nothing is reserved under one.
            try db.execute(
                sql: """
                    CREATE TABLE hold (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        account TEXT NOT NULL,
                        segment_id TEXT,
                        reason TEXT NOT NULL CHECK (length(reason) <= 1024),
                        who TEXT NOT NULL CHECK (length(who) <= 256),
                        created_at REAL NOT NULL,
                        released_at REAL
                    );
                    CREATE INDEX hold_active ON hold(account) WHERE released_at IS NULL;
                    """)
        }
        return migrator
    }

    /// The migration identifiers applied to the database, in order.
    public func appliedMigrations() throws -> [String] {
        try writer.read { db in try Self.migrator.appliedIdentifiers(db).sorted() }
    }

    private func recover(now: Date, maxRequestSeconds: Double) throws {
        try write { db in
            try db.execute(
                sql: """
                    UPDATE job SET state = 'queued', updated_at = ?, tries = tries + 1
                    WHERE state = 'sending' AND attempt_id IN (SELECT id FROM attempt WHERE outcome = 'reserved')
                    """, arguments: [now.timeIntervalSince1970])
            try db.execute(
                sql: """
                    UPDATE attempt SET outcome = 'uncertain', finished_at = min(?, started_at + ?),
                        error = 'refreshd stopped while the request was in flight'
                    WHERE outcome = 'reserved'
                    """, arguments: [now.timeIntervalSince1970, maxRequestSeconds])
        }
    }

    private let writes = Atomic<UInt64>(0)

    /// Goes up with every committed write through this ledger: readers cache what they derive from
    /// the ledger (the plan) until it moves.
    public var changeCount: UInt64 { writes.load(ordering: .acquiring) }

    /// Runs a write transaction (IMMEDIATE), mapping "disk full" and "read-only" to `notWritable`
    /// and a lock held too long by another process to `busy`.
    func write<T>(_ body: (Database) throws -> T) throws -> T {
        do {
            defer { writes.add(1, ordering: .releasing) }
            return try writer.write(body)
        } catch let error as DatabaseError where [.SQLITE_BUSY, .SQLITE_LOCKED].contains(error.resultCode) {
            throw LedgerError(
                .busy, "the ledger \(path) is locked by another process: \(error.message ?? "\(error.resultCode)")")
        } catch let error as DatabaseError
            where [.SQLITE_FULL, .SQLITE_READONLY, .SQLITE_IOERR, .SQLITE_CANTOPEN].contains(error.resultCode)
        {
            throw LedgerError(
                .notWritable, "cannot write the ledger \(path): \(error.message ?? "\(error.resultCode)")")
        }
    }

    // MARK: Jobs

    public func enqueue(_ job: NewJob, now: Date) throws -> EnqueueResult {
        try write { db in try Self.enqueue(db, job, now: now) }
    }

    static func enqueue(_ db: Database, _ job: NewJob, now: Date) throws -> EnqueueResult {
        if let key = job.idempotencyKey,
            let existing = try Row.fetchOne(
                db.cachedStatement(sql: "SELECT * FROM job WHERE idempotency_key = ?"), arguments: [key])
        {
            let stored = Self.job(existing)
            guard existing["content_digest"] as String == job.contentDigest else {
                throw LedgerError(
                    .idempotencyConflict,
                    "a job with id \"\(key)\" already exists (ledger job \(stored.id)) with different content; use a new id"
                )
            }
            return .duplicate(stored)
        }
        let t = now.timeIntervalSince1970
        try db.cachedStatement(
            sql: """
                INSERT INTO job (source, idempotency_key, content_digest, account, segment_id, time_zone, priority,
                    not_before, expires_at, note, state, created_at, updated_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)
                """
        ).execute(arguments: [
            job.source, job.idempotencyKey, job.contentDigest, job.account, job.segmentID, job.timeZone, job.priority,
            job.notBefore?.timeIntervalSince1970, job.expiresAt?.timeIntervalSince1970, job.note, t, t,
        ])
        // Real seconds round-trip through REAL exactly, so the row need not be read back.
        let stored = StoredJob(
            id: db.lastInsertedRowID, job: job, state: .queued, attemptID: nil, reason: nil, tries: 0, retryAt: nil,
            createdAt: Date(timeIntervalSince1970: t), updatedAt: Date(timeIntervalSince1970: t))
        return .created(stored)
    }

    public func job(id: Int64) throws -> StoredJob? {
        try writer.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM job WHERE id = ?", arguments: [id]).map(Self.job)
        }
    }

    public func jobs(state: JobState?, segmentID: String?, after cursor: Int64?, limit: Int) throws -> [StoredJob] {
        try writer.read { db in
            var conditions = ["id > ?"]
            var arguments: StatementArguments = [cursor ?? 0]
            if let state {
                conditions.append("state = ?")
                _ = arguments.append(contentsOf: [state.rawValue])
            }
            if let segmentID {
                conditions.append("segment_id = ?")
                _ = arguments.append(contentsOf: [segmentID])
            }
            _ = arguments.append(contentsOf: [limit])
            return try Row.fetchAll(
                db, sql: "SELECT * FROM job WHERE \(conditions.joined(separator: " AND ")) ORDER BY id LIMIT ?",
                arguments: arguments
            ).map(Self.job)
        }
    }

    public func queuedJobs() throws -> [StoredJob] {
        try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM job WHERE state = 'queued' ORDER BY id").map(Self.job)
        }
    }

    public func queuedJobs(account: String, segmentID: String) throws -> [StoredJob] {
        try writer.read { db in
            try Row.fetchAll(
                db.cachedStatement(
                    sql: "SELECT * FROM job WHERE account = ? AND segment_id = ? AND state = 'queued' ORDER BY id"),
                arguments: [account, segmentID]
            ).map(Self.job)
        }
    }

    public func jobCounts() throws -> [JobState: Int] {
        try writer.read { db in
            var counts: [JobState: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT state, count(*) AS n FROM job GROUP BY state") {
                if let state = JobState(rawValue: row["state"]) { counts[state] = row["n"] }
            }
            return counts
        }
    }

    public func oldestQueuedAt() throws -> Date? {
        try writer.read { db in
            try Double.fetchOne(db, sql: "SELECT min(created_at) FROM job WHERE state = 'queued'")
                .map(Date.init(timeIntervalSince1970:))
        }
    }

    public func cancel(jobID: Int64, now: Date) throws -> StoredJob {
        try write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM job WHERE id = ?", arguments: [jobID]) else {
                throw LedgerError(.notFound, "no job \(jobID)")
            }
            try LedgerSemantics.checkCancellable(Self.job(row))
            try db.execute(
                sql: "UPDATE job SET state = 'cancelled', reason = 'cancelled', updated_at = ? WHERE id = ?",
                arguments: [now.timeIntervalSince1970, jobID])
            return Self.job(try Row.fetchOne(db, sql: "SELECT * FROM job WHERE id = ?", arguments: [jobID])!)
        }
    }

    /// The WHERE clause and arguments of a filter.
    private static func condition(_ filter: JobFilter) -> (String, StatementArguments) {
        var conditions = ["state IN (\(filter.states.map { "'\($0.rawValue)'" }.joined(separator: ", ")))"]
        var arguments: StatementArguments = []
        if let account = filter.account {
            conditions.append("account = ?")
            _ = arguments.append(contentsOf: [account])
        }
        if let segment = filter.segmentID {
            conditions.append("segment_id = ?")
            _ = arguments.append(contentsOf: [segment])
        }
        if let since = filter.since {
            conditions.append("updated_at >= ?")
            _ = arguments.append(contentsOf: [since.timeIntervalSince1970])
        }
        return (conditions.joined(separator: " AND "), arguments)
    }

    public func jobs(matching filter: JobFilter) throws -> [StoredJob] {
        guard !filter.states.isEmpty else { return [] }
        let (condition, arguments) = Self.condition(filter)
        return try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM job WHERE \(condition) ORDER BY id", arguments: arguments).map(
                Self.job)
        }
    }

    public func cancelJobs(matching filter: JobFilter, now: Date) throws -> [StoredJob] {
        var filter = filter
        filter.states = filter.states.filter { $0 == .queued }
        guard !filter.states.isEmpty else { return [] }
        let (condition, arguments) = Self.condition(filter)
        return try write { db in
            let ids = try Int64.fetchAll(
                db, sql: "SELECT id FROM job WHERE \(condition) ORDER BY id", arguments: arguments)
            for id in ids {
                try db.execute(
                    sql: "UPDATE job SET state = 'cancelled', reason = 'cancelled', updated_at = ? WHERE id = ?",
                    arguments: [now.timeIntervalSince1970, id])
            }
            return try ids.map {
                try Self.job(Row.fetchOne(db, sql: "SELECT * FROM job WHERE id = ?", arguments: [$0])!)
            }
        }
    }

    public func retry(jobID: Int64, now: Date) throws -> StoredJob {
        try write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM job WHERE id = ?", arguments: [jobID]) else {
                throw LedgerError(.notFound, "no job \(jobID)")
            }
            try LedgerSemantics.checkRetryable(Self.job(row))
            try Self.requeue(db, jobID, now: now)
            return Self.job(try Row.fetchOne(db, sql: "SELECT * FROM job WHERE id = ?", arguments: [jobID])!)
        }
    }

    public func retryJobs(matching filter: JobFilter, now: Date) throws -> [StoredJob] {
        var filter = filter
        filter.states = filter.states.filter { $0 == .failed || $0 == .expired }
        guard !filter.states.isEmpty else { return [] }
        let (condition, arguments) = Self.condition(filter)
        return try write { db in
            let ids = try Int64.fetchAll(
                db, sql: "SELECT id FROM job WHERE \(condition) ORDER BY id", arguments: arguments)
            for id in ids { try Self.requeue(db, id, now: now) }
            return try ids.map {
                try Self.job(Row.fetchOne(db, sql: "SELECT * FROM job WHERE id = ?", arguments: [$0])!)
            }
        }
    }

    /// A failed or expired job queued again (R8): tries, backoff and reason start afresh (the
    /// attempts stay in the history); a passed `expires_at` is dropped; the link to its last
    /// attempt stays only if that one is `uncertain` (R5).
    private static func requeue(_ db: Database, _ id: Int64, now: Date) throws {
        let t = now.timeIntervalSince1970
        try db.execute(
            sql: """
                UPDATE job SET state = 'queued', reason = NULL, tries = 0, retry_at = NULL, updated_at = ?,
                    attempt_id = CASE WHEN (SELECT outcome FROM attempt WHERE attempt.id = job.attempt_id) = 'uncertain' THEN attempt_id ELSE NULL END,
                    expires_at = CASE WHEN expires_at IS NOT NULL AND expires_at <= ? THEN NULL ELSE expires_at END
                WHERE id = ?
                """, arguments: [t, t, id])
    }

    public func edit(jobID: Int64, change: JobChange, now: Date) throws -> StoredJob {
        try write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM job WHERE id = ?", arguments: [jobID]) else {
                throw LedgerError(.notFound, "no job \(jobID)")
            }
            let (priority, notBefore, expiresAt) = try LedgerSemantics.edited(Self.job(row), change)
            try db.execute(
                sql: "UPDATE job SET priority = ?, not_before = ?, expires_at = ?, updated_at = ? WHERE id = ?",
                arguments: [
                    priority, notBefore?.timeIntervalSince1970, expiresAt?.timeIntervalSince1970,
                    now.timeIntervalSince1970, jobID,
                ])
            return Self.job(try Row.fetchOne(db, sql: "SELECT * FROM job WHERE id = ?", arguments: [jobID])!)
        }
    }

    public func expireJobs(now: Date) throws -> [StoredJob] {
        try write { db in
            let t = now.timeIntervalSince1970
            let rows = try Row.fetchAll(
                db, sql: "SELECT * FROM job WHERE state = 'queued' AND expires_at IS NOT NULL AND expires_at <= ?",
                arguments: [t])
            try db.execute(
                sql:
                    "UPDATE job SET state = 'expired', reason = 'expires_at passed', updated_at = ? WHERE state = 'queued' AND expires_at IS NOT NULL AND expires_at <= ?",
                arguments: [t, t])
            return rows.map { row in
                var job = Self.job(row)
                job.state = .expired
                job.reason = "expires_at passed"
                return job
            }
        }
    }

    // MARK: Spool intake

    public func ingestSpoolFiles(_ files: [SpoolFileJob], now: Date) throws -> [Result<SpoolIngestResult, LedgerError>]
    {
        try write { db in
            var results: [Result<SpoolIngestResult, LedgerError>] = []
            for file in files {
                if let row = try Row.fetchOne(
                    db.cachedStatement(sql: "SELECT job_id FROM spool_file WHERE identity = ? AND content_digest = ?"),
                    arguments: [file.identity, file.contentDigest])
                {
                    results.append(.success(.alreadyTaken(jobID: row["job_id"])))
                    continue
                }
                let result: EnqueueResult
                do {
                    result = try Self.enqueue(db, file.job, now: now)
                } catch let error as LedgerError where error.code == .idempotencyConflict {
                    // Nothing was written for this file; the others go on.
                    results.append(.failure(error))
                    continue
                }
                let jobID: Int64
                switch result {
                case .created(let stored), .duplicate(let stored): jobID = stored.id
                }
                try db.cachedStatement(
                    sql:
                        "INSERT INTO spool_file (identity, content_digest, job_id, name, taken_at) VALUES (?, ?, ?, ?, ?)"
                )
                .execute(arguments: [file.identity, file.contentDigest, jobID, file.name, now.timeIntervalSince1970])
                results.append(.success(.enqueued(result)))
            }
            return results
        }
    }

    public func queuedCount() throws -> Int {
        try writer.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM job WHERE state = 'queued'") ?? 0 }
    }

    // MARK: History

    public func history(account: String, segmentID: String, now: Date) throws -> LedgerHistory {
        try writer.read { db in try Self.history(db, account: account, segmentID: segmentID, now: now) }
    }

    static func history(_ db: Database, account: String, segmentID: String, now: Date) throws -> LedgerHistory {
        // Cached statements: this runs for every decision. The windows: HistoryWindows.
        let segment = try Row.fetchAll(
            db.cachedStatement(
                sql:
                    "SELECT * FROM attempt WHERE account = ? AND segment_id = ? AND started_at >= ? ORDER BY started_at"
            ),
            arguments: [account, segmentID, HistoryWindows.segmentSince(now)]
        ).map(attempt)
        let accountRows = try Row.fetchAll(
            db.cachedStatement(sql: "SELECT * FROM attempt WHERE account = ? AND started_at >= ? ORDER BY started_at"),
            arguments: [account, HistoryWindows.accountSince(now)]
        ).map(attempt)
        let blocks = try Row.fetchAll(
            db.cachedStatement(
                sql:
                    "SELECT * FROM learned_block WHERE account = ? AND (segment_id IS NULL OR segment_id = ?) AND until >= ? ORDER BY id"
            ),
            arguments: [account, segmentID, HistoryWindows.blocksSince(now)]
        ).map(block)
        return LedgerHistory(segmentAttempts: segment, accountAttempts: accountRows, blocks: blocks)
    }

    public func accountView(account: String, now: Date) throws -> AccountView {
        let changes = changeCount
        return try writer.read { db in
            let attempts = try Row.fetchAll(
                db.cachedStatement(
                    sql: "SELECT * FROM attempt WHERE account = ? AND started_at >= ? ORDER BY started_at, id"),
                arguments: [account, HistoryWindows.segmentSince(now)]
            ).map(Self.attempt)
            let blocks = try Row.fetchAll(
                db.cachedStatement(sql: "SELECT * FROM learned_block WHERE account = ? AND until >= ? ORDER BY id"),
                arguments: [account, HistoryWindows.blocksSince(now)]
            ).map(Self.block)
            let holds = try Row.fetchAll(
                db.cachedStatement(sql: "SELECT * FROM hold WHERE released_at IS NULL AND account = ? ORDER BY id"),
                arguments: [account]
            ).map(Self.hold)
            var queuedZones: [String: [String]] = [:]
            let rows = try Row.fetchCursor(
                db.cachedStatement(
                    sql: "SELECT segment_id, time_zone FROM job WHERE state = 'queued' AND account = ? ORDER BY id"),
                arguments: [account])
            while let row = try rows.next() {
                queuedZones[row[0] as String, default: []].append(row[1] as String)
            }
            return AccountView(
                account: account, readAt: now, changeCount: changes, attempts: attempts, blocks: blocks, holds: holds,
                queuedZones: queuedZones)
        }
    }

    public func attempts(since: Date, account: String?, segmentID: String?, limit: Int) throws -> [StoredAttempt] {
        try writer.read { db in
            var conditions = ["started_at >= ?"]
            var arguments: StatementArguments = [since.timeIntervalSince1970]
            if let account {
                conditions.append("account = ?")
                _ = arguments.append(contentsOf: [account])
            }
            if let segmentID {
                conditions.append("segment_id = ?")
                _ = arguments.append(contentsOf: [segmentID])
            }
            _ = arguments.append(contentsOf: [limit])
            return try Row.fetchAll(
                db,
                sql:
                    "SELECT * FROM attempt WHERE \(conditions.joined(separator: " AND ")) ORDER BY started_at DESC, id DESC LIMIT ?",
                arguments: arguments
            ).map(Self.attempt)
        }
    }

    // MARK: Reservation protocol

    public func reserve(
        account: String, segmentID: String, timeZone: String, now: Date, admit: (StoredJob) -> Bool,
        check: (LedgerHistory) -> Decision
    ) throws -> ReservationResult {
        try write { db in
            let t = now.timeIntervalSince1970
            let due = try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM job WHERE account = ? AND segment_id = ? AND state = 'queued'
                        AND (not_before IS NULL OR not_before <= ?) AND (retry_at IS NULL OR retry_at <= ?)
                        AND (expires_at IS NULL OR expires_at > ?)
                    ORDER BY priority DESC, id
                    """,
                arguments: [account, segmentID, t, t, t]
            ).map(Self.job).filter(admit)
            guard !due.isEmpty else { return .nothingDue }
            if let row = try Row.fetchOne(
                db,
                sql:
                    "SELECT * FROM hold WHERE released_at IS NULL AND account = ? AND (segment_id IS NULL OR segment_id = ?) ORDER BY id LIMIT 1",
                arguments: [account, segmentID])
            {
                return .held(Self.hold(row))
            }
            let history = try Self.history(db, account: account, segmentID: segmentID, now: now)
            let decision = check(history)
            guard decision.verdict == .allowed else { return .denied(decision) }
            try db.execute(
                sql:
                    "INSERT INTO attempt (account, segment_id, time_zone, outcome, started_at) VALUES (?, ?, ?, 'reserved', ?)",
                arguments: [account, segmentID, timeZone, t])
            let attemptID = db.lastInsertedRowID
            for job in due {
                try db.execute(
                    sql: "UPDATE job SET state = 'sending', attempt_id = ?, updated_at = ? WHERE id = ?",
                    arguments: [attemptID, t, job.id])
            }
            let jobs = due.map { job -> StoredJob in
                var sending = job
                sending.state = .sending
                sending.attemptID = attemptID
                sending.updatedAt = now
                return sending
            }
            return .reserved(attemptID: attemptID, jobs: jobs)
        }
    }

    public func complete(
        attemptID: Int64, outcome: AttemptOutcome, httpStatus: Int?, sendGridJobID: String?, error: String?,
        finishedAt: Date,
        jobs disposition: JobDisposition
    ) throws {
        try write { db in
            guard
                let row = try Row.fetchOne(db, sql: "SELECT outcome FROM attempt WHERE id = ?", arguments: [attemptID])
            else {
                throw LedgerError(.notFound, "no attempt \(attemptID)")
            }
            let current = row["outcome"] as String
            // R4: a late answer. The attempt was made `uncertain` (by recovery, or `unrecorded` by
            // reconciliation) while its request was still out; SendGrid's real answer wins, and its
            // jobs, requeued meanwhile but still linked to it, follow the answer.
            let late = try LedgerSemantics.isLateAnswer(attemptID: attemptID, current: current)
            let t = finishedAt.timeIntervalSince1970
            let text = LedgerSemantics.answerText(error, lateAfter: late ? current : nil)
            try db.execute(
                sql:
                    "UPDATE attempt SET outcome = ?, http_status = ?, sendgrid_job_id = ?, error = ?, finished_at = ? WHERE id = ?",
                arguments: [outcome.rawValue, httpStatus, sendGridJobID, text, t, attemptID])
            let states = late ? "('sending', 'queued')" : "('sending')"
            let jobIDs = try Int64.fetchAll(
                db, sql: "SELECT id FROM job WHERE attempt_id = ? AND state IN \(states) ORDER BY priority DESC, id",
                arguments: [attemptID])
            switch disposition {
            case .sent:
                for (index, id) in jobIDs.enumerated() {
                    try db.execute(
                        sql: "UPDATE job SET state = ?, updated_at = ? WHERE id = ?",
                        arguments: [index == 0 ? "sent" : "coalesced", t, id])
                }
            case .failed(let reason):
                for id in jobIDs {
                    try db.execute(
                        sql:
                            "UPDATE job SET state = 'failed', reason = ?, updated_at = ?, tries = tries + ? WHERE id = ?",
                        arguments: [boundedErrorText(reason), t, outcome == .uncertain ? 1 : 0, id])
                }
            case .requeue(let retryAt, let countsTry):
                // R5: a job requeued after a request that may have reached SendGrid (`countsTry`)
                // stays linked to that attempt, so a later pre-flight showing SendGrid counted it
                // marks the job sent instead of sending it again.
                for id in jobIDs {
                    try db.execute(
                        sql: """
                            UPDATE job SET state = 'queued', attempt_id = CASE WHEN ? THEN attempt_id END, updated_at = ?,
                                retry_at = ?, tries = tries + ? WHERE id = ?
                            """,
                        arguments: [countsTry, t, retryAt?.timeIntervalSince1970, countsTry ? 1 : 0, id])
                }
            }
        }
    }

    // MARK: What SendGrid tells us

    public func recordExternal(account: String, segmentID: String, timeZone: String, at: Date) throws -> StoredAttempt {
        try write { db in
            try db.execute(
                sql: """
                    INSERT INTO attempt (account, segment_id, time_zone, outcome, started_at, finished_at, error)
                    VALUES (?, ?, ?, 'external', ?, ?, 'refreshed outside refreshd (seen in refreshes_used)')
                    """,
                arguments: [account, segmentID, timeZone, at.timeIntervalSince1970, at.timeIntervalSince1970])
            return Self.attempt(
                try Row.fetchOne(db, sql: "SELECT * FROM attempt WHERE id = ?", arguments: [db.lastInsertedRowID])!)
        }
    }

    public func addBlock(account: String, segmentID: String?, until: Date, reason: String, now: Date) throws {
        try write { db in
            try db.execute(
                sql:
                    "INSERT INTO learned_block (account, segment_id, until, reason, created_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [
                    account, segmentID, until.timeIntervalSince1970, boundedErrorText(reason),
                    now.timeIntervalSince1970,
                ])
        }
    }

    public func blocks(account: String, now: Date) throws -> [StoredBlock] {
        try writer.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM learned_block WHERE account = ? AND until >= ? ORDER BY id",
                arguments: [account, HistoryWindows.blocksSince(now)]
            ).map(Self.block)
        }
    }

    public func activeBlocks(account: String?, now: Date) throws -> [StoredBlock] {
        try writer.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM learned_block WHERE (? IS NULL OR account = ?) AND until > ? ORDER BY id",
                arguments: [account, account, now.timeIntervalSince1970]
            ).map(Self.block)
        }
    }

    public func liftBlock(id: Int64, now: Date) throws -> StoredBlock? {
        try write { db in
            guard
                let row = try Row.fetchOne(
                    db, sql: "SELECT * FROM learned_block WHERE id = ? AND until > ?",
                    arguments: [id, now.timeIntervalSince1970])
            else { return nil }
            let block = Self.block(row)
            let reason = LedgerSemantics.liftedReason(block, now: now)
            try db.execute(
                sql: "UPDATE learned_block SET until = ?, reason = ? WHERE id = ?",
                arguments: [now.timeIntervalSince1970, reason, id])
            return StoredBlock(
                id: block.id, account: block.account, segmentID: block.segmentID, until: now, reason: reason)
        }
    }

    public func confirmRecorded(attemptIDs: [Int64], now: Date) throws -> [StoredJob] {
        guard !attemptIDs.isEmpty else { return [] }
        return try write { db in
            var finished: [StoredJob] = []
            for id in attemptIDs {
                try db.execute(
                    sql: """
                        UPDATE attempt SET outcome = 'accepted',
                            error = substr(coalesce(error, '') || ' (recorded by SendGrid, seen by pre-flight)', 1, 600)
                        WHERE id = ? AND outcome = 'uncertain'
                        """, arguments: [id])
                guard db.changesCount > 0 else { continue }
                let rows = try Row.fetchAll(
                    db, sql: "SELECT * FROM job WHERE attempt_id = ? AND state = 'queued' ORDER BY priority DESC, id",
                    arguments: [id])
                for (index, row) in rows.enumerated() {
                    var job = Self.job(row)
                    job.state = index == 0 ? .sent : .coalesced
                    job.reason = LedgerSemantics.confirmedByPreflight
                    job.updatedAt = now
                    try db.execute(
                        sql: "UPDATE job SET state = ?, reason = ?, retry_at = NULL, updated_at = ? WHERE id = ?",
                        arguments: [job.state.rawValue, job.reason, now.timeIntervalSince1970, job.id])
                    finished.append(job)
                }
            }
            return finished
        }
    }

    public func markUnrecorded(attemptIDs: [Int64]) throws -> Int {
        guard !attemptIDs.isEmpty else { return 0 }
        return try write { db in
            var changed = 0
            for id in attemptIDs {
                try db.execute(
                    sql: """
                        UPDATE attempt SET outcome = 'unrecorded',
                            error = substr(coalesce(error, '') || ' (not recorded by SendGrid, seen by pre-flight)', 1, 600)
                        WHERE id = ? AND outcome = 'uncertain'
                        """, arguments: [id])
                changed += db.changesCount
            }
            return changed
        }
    }

    public func recordUsage(
        account: String, segmentID: String, refreshesUsed: Int, lastRefreshedAt: Date?, observedAt: Date
    ) throws {
        try write { db in
            try db.execute(
                sql: """
                    INSERT INTO segment_usage (account, segment_id, refreshes_used, last_refreshed_at, observed_at)
                    VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT (account, segment_id) DO UPDATE SET refreshes_used = excluded.refreshes_used,
                        last_refreshed_at = excluded.last_refreshed_at, observed_at = excluded.observed_at
                    """,
                arguments: [
                    account, segmentID, refreshesUsed, lastRefreshedAt?.timeIntervalSince1970,
                    observedAt.timeIntervalSince1970,
                ])
        }
    }

    // MARK: Retention

    // MARK: Holds (R10)

    static func hold(_ row: Row) -> StoredHold {
        StoredHold(
            id: row["id"], account: row["account"], segmentID: row["segment_id"], reason: row["reason"],
            who: row["who"],
            createdAt: Date(timeIntervalSince1970: row["created_at"]), releasedAt: date(row["released_at"]))
    }

    public func hold(account: String, segmentID: String?, reason: String, who: String, now: Date) throws -> StoredHold {
        try write { db in
            if let row = try Row.fetchOne(
                db, sql: "SELECT * FROM hold WHERE released_at IS NULL AND account = ? AND segment_id IS ?",
                arguments: [account, segmentID])
            {
                return Self.hold(row)
            }
            try db.execute(
                sql: "INSERT INTO hold (account, segment_id, reason, who, created_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [
                    account, segmentID, String(reason.prefix(1024)), String(who.prefix(256)), now.timeIntervalSince1970,
                ])
            return Self.hold(
                try Row.fetchOne(db, sql: "SELECT * FROM hold WHERE id = ?", arguments: [db.lastInsertedRowID])!)
        }
    }

    public func release(holdID: Int64, now: Date) throws -> StoredHold? {
        try write { db in
            guard
                try Row.fetchOne(
                    db, sql: "SELECT * FROM hold WHERE id = ? AND released_at IS NULL", arguments: [holdID]) != nil
            else { return nil }
            try db.execute(
                sql: "UPDATE hold SET released_at = ? WHERE id = ?", arguments: [now.timeIntervalSince1970, holdID])
            return Self.hold(try Row.fetchOne(db, sql: "SELECT * FROM hold WHERE id = ?", arguments: [holdID])!)
        }
    }

    public func activeHolds(account: String?) throws -> [StoredHold] {
        try writer.read { db in
            try Row.fetchAll(
                db, sql: "SELECT * FROM hold WHERE released_at IS NULL AND (? IS NULL OR account = ?) ORDER BY id",
                arguments: [account, account]
            ).map(Self.hold)
        }
    }

    // MARK: Job events (R9)

    public func jobEvents(after id: Int64, limit: Int) throws -> [JobEvent] {
        try writer.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT job_event.id AS event_id, job_event.state AS event_state, job_event.at AS event_at, job.*,
                        attempt.http_status AS attempt_status
                    FROM job_event JOIN job ON job.id = job_event.job_id LEFT JOIN attempt ON attempt.id = job.attempt_id
                    WHERE job_event.id > ? ORDER BY job_event.id LIMIT ?
                    """, arguments: [id, limit]
            ).map { row in
                JobEvent(
                    id: row["event_id"], state: JobState(rawValue: row["event_state"]) ?? .failed,
                    at: Date(timeIntervalSince1970: row["event_at"]),
                    job: Self.job(row), httpStatus: row["attempt_status"])
            }
        }
    }

    public func latestJobEventID() throws -> Int64 {
        try writer.read { db in try Int64.fetchOne(db, sql: "SELECT max(id) FROM job_event") ?? 0 }
    }

    public func hookCursor() throws -> Int64? {
        try writer.read { db in try Int64.fetchOne(db, sql: "SELECT event_id FROM hook_cursor WHERE name = 'hooks'") }
    }

    public func setHookCursor(_ id: Int64) throws {
        try write { db in
            try db.execute(
                sql:
                    "INSERT INTO hook_cursor (name, event_id) VALUES ('hooks', ?) ON CONFLICT(name) DO UPDATE SET event_id = excluded.event_id",
                arguments: [id])
        }
    }

    public func prune(retentionDays: Int, now: Date) throws -> Int {
        let cutoff = now.timeIntervalSince1970 - Double(max(retentionDays, 3)) * 86400
        return try write { db in
            try db.execute(
                sql:
                    "DELETE FROM job WHERE state IN ('sent', 'coalesced', 'failed', 'cancelled', 'expired') AND updated_at < ?",
                arguments: [cutoff])
            var removed = db.changesCount
            try db.execute(
                sql: """
                    DELETE FROM attempt WHERE started_at < ? AND outcome != 'reserved'
                        AND NOT EXISTS (SELECT 1 FROM job WHERE job.attempt_id = attempt.id)
                    """,
                arguments: [cutoff])
            removed += db.changesCount
            try db.execute(
                sql: "DELETE FROM learned_block WHERE until < ?", arguments: [now.timeIntervalSince1970 - 86400])
            removed += db.changesCount
            // Job events are kept 7 days (hooks run within seconds); bookkeeping, not counted.
            try db.execute(
                sql: "DELETE FROM job_event WHERE at < ?", arguments: [now.timeIntervalSince1970 - 7 * 86400])
            return removed
        }
    }

    // MARK: Rows

    static func job(_ row: Row) -> StoredJob {
        StoredJob(
            id: row["id"],
            job: NewJob(
                source: row["source"], idempotencyKey: row["idempotency_key"], account: row["account"],
                segmentID: row["segment_id"],
                timeZone: row["time_zone"], priority: row["priority"], notBefore: date(row["not_before"]),
                expiresAt: date(row["expires_at"]), note: row["note"]),
            state: JobState(rawValue: row["state"]) ?? .failed, attemptID: row["attempt_id"], reason: row["reason"],
            tries: row["tries"], retryAt: date(row["retry_at"]),
            createdAt: Date(timeIntervalSince1970: row["created_at"]),
            updatedAt: Date(timeIntervalSince1970: row["updated_at"]))
    }

    static func attempt(_ row: Row) -> StoredAttempt {
        StoredAttempt(
            id: row["id"], account: row["account"], segmentID: row["segment_id"], timeZone: row["time_zone"],
            outcome: AttemptOutcome(rawValue: row["outcome"]) ?? .uncertain, httpStatus: row["http_status"],
            sendGridJobID: row["sendgrid_job_id"], startedAt: Date(timeIntervalSince1970: row["started_at"]),
            finishedAt: date(row["finished_at"]), error: row["error"])
    }

    static func block(_ row: Row) -> StoredBlock {
        StoredBlock(
            id: row["id"], account: row["account"], segmentID: row["segment_id"],
            until: Date(timeIntervalSince1970: row["until"]),
            reason: row["reason"])
    }

    private static func date(_ value: Double?) -> Date? { value.map(Date.init(timeIntervalSince1970:)) }
}

extension SQLiteLedger {
    /// `reserve` for every due job of the segment (the synchronous form, on the SQLite file).
    public func reserve(
        account: String, segmentID: String, timeZone: String, now: Date, check: (LedgerHistory) -> Decision
    ) throws -> ReservationResult {
        try reserve(
            account: account, segmentID: segmentID, timeZone: timeZone, now: now, admit: { _ in true }, check: check)
    }

    /// One spool file (see `ingestSpoolFiles`; the synchronous form).
    public func ingestSpoolFile(identity: String, contentDigest: String, name: String, job: NewJob, now: Date) throws
        -> SpoolIngestResult
    {
        let file = SpoolFileJob(identity: identity, contentDigest: contentDigest, name: name, job: job)
        return try ingestSpoolFiles([file], now: now)[0].get()
    }
}
