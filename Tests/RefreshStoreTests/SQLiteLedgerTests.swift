import Foundation
import GRDB
import RefreshCore
import Testing

@testable import RefreshStore

func tempDirectory() -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("refreshd-store-\(UUID().uuidString)").path
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

let t0 = Date(timeIntervalSince1970: 1_764_072_000)  // 2025-11-25T12:00:00Z
let segmentA = "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01"
let segmentB = "0f8c5e8e-2222-4f4a-9a53-3c3f0d7e1a02"

func newJob(
    _ segment: String = segmentA, key: String? = nil, priority: Int = 0, notBefore: Date? = nil, expiresAt: Date? = nil,
    account: String = "default"
) -> NewJob {
    NewJob(
        source: "test", idempotencyKey: key, account: account, segmentID: segment, timeZone: "America/Chicago",
        priority: priority, notBefore: notBefore, expiresAt: expiresAt)
}

/// Allows everything (the rules are tested elsewhere; here the protocol is).
let allow: @Sendable (LedgerHistory) -> Decision = { _ in Decision(verdict: .allowed, binding: [], budgets: []) }

/// What only the SQLite backend has (the file, pragmas, query plans, its migrations); what every
/// backend must do is in `LedgerConformanceTests`.
@Suite("SQLite ledger")
struct SQLiteLedgerTests {
    /// A new file gets every migration, WAL, synchronous=FULL, foreign keys and a busy timeout.
    @Test func opensWithPragmas() throws {
        let directory = tempDirectory()
        let ledger = try SQLiteLedger(path: directory + "/ledger.sqlite", now: t0)
        #expect(try ledger.appliedMigrations() == ["v1", "v2", "v3", "v4", "v5"])
        let pragmas = try ledger.writer.read { db -> [String] in
            try ["journal_mode", "synchronous", "foreign_keys", "busy_timeout"].map {
                try String.fetchOne(db, sql: "PRAGMA \($0)") ?? ""
            }
        }
        #expect(pragmas == ["wal", "2", "1", "10000"])  // synchronous 2 = FULL
    }

    /// Reopening an existing ledger applies no migration twice.
    @Test func reopenAppliesNoMigrationTwice() throws {
        let path = tempDirectory() + "/ledger.sqlite"
        _ = try SQLiteLedger(path: path, now: t0)
        let again = try SQLiteLedger(path: path, now: t0)
        #expect(try again.appliedMigrations() == ["v1", "v2", "v3", "v4", "v5"])
    }

    /// An idempotency conflict in a spool batch writes nothing for that file, not even its identity.
    @Test func refusedSpoolFileLeavesNoRow() throws {
        let ledger = try SQLiteLedger(inMemoryAt: t0)
        _ = try ledger.enqueue(newJob(key: "k1"), now: t0)
        #expect {
            try ledger.ingestSpoolFile(
                identity: "2049:79:1:1", contentDigest: "d", name: "c.json", job: newJob(key: "k1", priority: 3),
                now: t0)
        } throws: { ($0 as? LedgerError)?.code == .idempotencyConflict }
        let count = try ledger.writer.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM spool_file") }
        #expect(count == 0)
    }

    /// The decision queries use their indexes (EXPLAIN QUERY PLAN), not table scans.
    @Test func historyQueriesUseIndexes() throws {
        let ledger = try SQLiteLedger(inMemoryAt: t0)
        try ledger.writer.read { db in
            func plan(_ sql: String, _ arguments: StatementArguments) throws -> String {
                try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + sql, arguments: arguments).map {
                    $0["detail"] as String
                }.joined(separator: "; ")
            }
            let segment = try plan(
                "SELECT * FROM attempt WHERE account = ? AND segment_id = ? AND started_at >= ? ORDER BY started_at",
                ["a", "s", 0])
            #expect(segment.contains("USING INDEX attempt_by_segment"), "\(segment)")
            let account = try plan(
                "SELECT * FROM attempt WHERE account = ? AND started_at >= ? ORDER BY started_at", ["a", 0])
            #expect(account.contains("USING INDEX attempt_by_account"), "\(account)")
            let due = try plan(
                "SELECT * FROM job WHERE account = ? AND segment_id = ? AND state = 'queued' AND (not_before IS NULL OR not_before <= ?) AND (expires_at IS NULL OR expires_at > ?) ORDER BY priority DESC, id",
                ["a", "s", 0, 0])
            #expect(due.contains("USING INDEX job_by_segment"), "\(due)")
            let queued = try plan("SELECT * FROM job WHERE state = 'queued' ORDER BY id", [])
            #expect(queued.contains("USING INDEX job_by_state"), "\(queued)")
        }
        let changed = try ledger.writer.read { db in try SQLiteLedger.migrator.hasSchemaChanges(db) }
        #expect(!changed)
    }

    /// A corrupt file is refused with its name and a reason, and left byte for byte as it was.
    @Test func refusesCorruptFile() throws {
        let path = tempDirectory() + "/ledger.sqlite"
        let garbage = Data((0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
        try garbage.write(to: URL(fileURLWithPath: path))
        #expect {
            try SQLiteLedger(path: path, now: t0)
        } throws: { error in
            guard let error = error as? LedgerError else { return false }
            return error.code == .unusableDatabase && error.message.contains(path)
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == garbage)
    }

    /// A file the process cannot read is refused, naming it.
    @Test func refusesUnreadableFile() throws {
        guard getuid() != 0 else {
            // root reads everything; a directory in place of the file is unreadable as a database for anyone.
            let path = tempDirectory() + "/ledger.sqlite"
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            #expect { try SQLiteLedger(path: path, now: t0) } throws: { "\($0)".contains(path) }
            return
        }
        let path = tempDirectory() + "/ledger.sqlite"
        _ = try SQLiteLedger(path: path, now: t0)
        try FileManager.default.setAttributes([.posixPermissions: 0o000], ofItemAtPath: path)
        #expect { try SQLiteLedger(path: path, now: t0) } throws: { "\($0)".contains(path) }
    }
}

@Suite("Ledger migrations")
struct LedgerMigrationTests {
    /// An empty (0-byte) file is a new database: every migration applies.
    @Test func fromEmptyFile() throws {
        let path = tempDirectory() + "/ledger.sqlite"
        _ = FileManager.default.createFile(atPath: path, contents: Data())
        let ledger = try SQLiteLedger(path: path, now: t0)
        #expect(try ledger.appliedMigrations() == ["v1", "v2", "v3", "v4", "v5"])
    }

    /// From every earlier version: a database migrated only up to each shipped migration, with
    /// rows in it, reaches the latest schema with its rows intact.
    @Test func fromEveryEarlierVersion() throws {
        let identifiers = ["v1", "v2", "v3", "v4", "v5"]
        for (index, identifier) in identifiers.enumerated() {
            let path = tempDirectory() + "/ledger.sqlite"
            do {
                let pool = try DatabasePool(path: path)
                try SQLiteLedger.migrator.migrate(pool, upTo: identifier)
                try pool.write { db in
                    try db.execute(
                        sql:
                            "INSERT INTO attempt (account, segment_id, time_zone, outcome, started_at, finished_at) VALUES ('default', ?, 'UTC', 'accepted', ?, ?)",
                        arguments: [segmentA, t0.timeIntervalSince1970, t0.timeIntervalSince1970])
                    try db.execute(
                        sql: """
                            INSERT INTO job (source, content_digest, account, segment_id, time_zone, state, attempt_id, created_at, updated_at)
                            VALUES ('cli', 'x', 'default', ?, 'UTC', 'sent', 1, ?, ?)
                            """,
                        arguments: [segmentA, t0.timeIntervalSince1970, t0.timeIntervalSince1970])
                }
            }
            let ledger = try SQLiteLedger(path: path, now: t0)
            #expect(try ledger.appliedMigrations() == identifiers, "from \(identifier) (#\(index))")
            let attempts = try ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 10)
            #expect(attempts.count == 1 && attempts.first?.outcome == .accepted)
            let jobs = try ledger.jobs(state: .sent, segmentID: nil, after: nil, limit: 10)
            #expect(jobs.count == 1 && jobs.first?.attemptID == attempts.first?.id && jobs.first?.tries == 0)
            // The rebuilt attempt table takes the new outcome.
            let external = try ledger.recordExternal(account: "default", segmentID: segmentA, timeZone: "UTC", at: t0)
            #expect(external.outcome == .external)
        }
    }
}
