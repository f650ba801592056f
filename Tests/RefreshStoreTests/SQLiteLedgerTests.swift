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

    /// Reopening an existing ledger keeps its rows and applies no migration twice.
    /// R9: every job reaching a final state gets one event in the same write, whatever the path
    /// (cancel, bulk cancel, expiry, an answer), none for a retry back to queued; events come in
    /// order after a cursor, which is kept in the ledger.
    @Test func jobEventsForEveryFinalState() throws {
        let ledger = try SQLiteLedger(path: tempDirectory() + "/ledger.sqlite", now: t0)
        var ids: [Int64] = []
        for index in 0..<4 {
            guard
                case .created(let job) = try ledger.enqueue(
                    NewJob(
                        source: "test", idempotencyKey: "e\(index)", account: "default", segmentID: segmentA,
                        timeZone: "UTC",
                        expiresAt: index == 1 ? t0.addingTimeInterval(60) : nil), now: t0)
            else { Issue.record("not created"); return }
            ids.append(job.id)
        }
        #expect(
            try ledger.jobEvents(after: 0, limit: 10).isEmpty && ledger.latestJobEventID() == 0
                && ledger.hookCursor() == nil)
        _ = try ledger.cancel(jobID: ids[0], now: t0.addingTimeInterval(1))
        _ = try ledger.expireJobs(now: t0.addingTimeInterval(120))
        _ = try ledger.retry(jobID: ids[1], now: t0.addingTimeInterval(130))
        _ = try ledger.cancelJobs(
            matching: JobFilter(states: [.queued], segmentID: segmentA), now: t0.addingTimeInterval(140))
        let events = try ledger.jobEvents(after: 0, limit: 10)
        #expect(events.map(\.state) == [.cancelled, .expired, .cancelled, .cancelled, .cancelled])
        #expect(events.map(\.job.id) == [ids[0], ids[1], ids[1], ids[2], ids[3]])
        #expect(events.first?.job.job.idempotencyKey == "e0" && events.first?.at == t0.addingTimeInterval(1))
        try ledger.setHookCursor(events[1].id)
        #expect(try ledger.hookCursor() == events[1].id)
        #expect(try ledger.jobEvents(after: events[1].id, limit: 2).map(\.id) == [events[2].id, events[3].id])
        #expect(try ledger.latestJobEventID() == events.last?.id)
    }

    @Test func reopenKeepsRows() throws {
        let path = tempDirectory() + "/ledger.sqlite"
        do {
            let ledger = try SQLiteLedger(path: path, now: t0)
            _ = try ledger.enqueue(newJob(key: "a"), now: t0)
        }
        let again = try SQLiteLedger(path: path, now: t0)
        #expect(try again.queuedJobs().count == 1)
        #expect(try again.appliedMigrations() == ["v1", "v2", "v3", "v4", "v5"])
    }

    /// Same idempotency key and content: a no-op; different content: refused, naming the key.
    @Test func idempotency() throws {
        let ledger = try SQLiteLedger(inMemoryAt: t0)
        guard case .created(let first) = try ledger.enqueue(newJob(key: "crm-1"), now: t0) else {
            Issue.record("not created"); return
        }
        #expect(try ledger.enqueue(newJob(key: "crm-1"), now: t0) == .duplicate(first))
        #expect {
            try ledger.enqueue(newJob(key: "crm-1", priority: 5), now: t0)
        } throws: { ($0 as? LedgerError)?.code == .idempotencyConflict && "\($0)".contains("crm-1") }
        #expect(try ledger.queuedJobs().count == 1)
    }

    /// Reservation: every due queued job of the segment is served, leader first; a denial writes nothing.
    @Test func reserveAndComplete() throws {
        let ledger = try SQLiteLedger(inMemoryAt: t0)
        _ = try ledger.enqueue(newJob(priority: 0), now: t0)
        _ = try ledger.enqueue(newJob(priority: 5), now: t0)
        _ = try ledger.enqueue(newJob(notBefore: t0.addingTimeInterval(3600)), now: t0)  // not due yet
        _ = try ledger.enqueue(newJob(segmentB), now: t0)
        let denied = Decision(verdict: .notBefore(t0.addingTimeInterval(60)), binding: [.segmentInterval], budgets: [])
        let refused = try ledger.reserve(account: "default", segmentID: segmentA, timeZone: "America/Chicago", now: t0)
        { _ in denied }
        #expect(refused == .denied(denied))
        #expect(try ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 10).isEmpty)
        guard
            case .reserved(let attemptID, let jobs) = try ledger.reserve(
                account: "default", segmentID: segmentA, timeZone: "America/Chicago", now: t0, check: allow)
        else { Issue.record("not reserved"); return }
        #expect(jobs.map(\.job.priority) == [5, 0])
        #expect(jobs.allSatisfy { $0.state == .sending && $0.attemptID == attemptID })
        #expect(
            try ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 10).first?.outcome
                == .reserved)
        try ledger.complete(
            attemptID: attemptID, outcome: .accepted, httpStatus: 202, sendGridJobID: "sg-1", error: nil,
            finishedAt: t0.addingTimeInterval(1),
            jobs: .sent)
        let states = try ledger.jobs(state: nil, segmentID: segmentA, after: nil, limit: 10).map(\.state)
        #expect(states == [.coalesced, .sent, .queued])
        #expect {
            try ledger.complete(
                attemptID: attemptID, outcome: .accepted, httpStatus: 202, sendGridJobID: nil, error: nil,
                finishedAt: t0, jobs: .sent)
        } throws: { ($0 as? LedgerError)?.code == .invalidState }
    }

    /// R4: a second opening of the ledger (a second daemon before the lock existed) turns the live
    /// reservation uncertain; the real answer arriving later is still recorded and its job sent,
    /// never an error that holds the account up.
    @Test func lateAnswerAfterRecovery() throws {
        let path = tempDirectory() + "/ledger.sqlite"
        let ledger = try SQLiteLedger(path: path, now: t0)
        _ = try ledger.enqueue(newJob(), now: t0)
        guard
            case .reserved(let id, _) = try ledger.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
        else {
            Issue.record("no reservation")
            return
        }
        _ = try SQLiteLedger(path: path, now: t0.addingTimeInterval(1))
        #expect(
            try ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 5).first?.outcome
                == .uncertain)
        #expect(try ledger.queuedJobs().first?.attemptID == id, "requeued, still linked (R2)")
        try ledger.complete(
            attemptID: id, outcome: .accepted, httpStatus: 202, sendGridJobID: "sg-1", error: nil,
            finishedAt: t0.addingTimeInterval(2), jobs: .sent)
        let attempt = try #require(
            try ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 5).first)
        #expect(attempt.outcome == .accepted && attempt.sendGridJobID == "sg-1")
        #expect(attempt.error?.contains("answered after refreshd had marked it uncertain") == true)
        #expect(try ledger.queuedJobs().isEmpty && ledger.jobCounts()[.sent] == 1)
        #expect {
            try ledger.complete(
                attemptID: id, outcome: .accepted, httpStatus: 202, sendGridJobID: nil, error: nil, finishedAt: t0,
                jobs: .sent)
        } throws: { ($0 as? LedgerError)?.code == .invalidState }
    }

    /// R5: after a pre-flight shows SendGrid counted an unanswered request, the attempt is accepted
    /// and the jobs still linked to it are sent (leader) and coalesced, not sent again.
    @Test func confirmRecorded() throws {
        let ledger = try SQLiteLedger(inMemoryAt: t0)
        _ = try ledger.enqueue(newJob(), now: t0)
        _ = try ledger.enqueue(newJob(priority: 5), now: t0)
        guard
            case .reserved(let id, _) = try ledger.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
        else {
            Issue.record("no reservation")
            return
        }
        try ledger.complete(
            attemptID: id, outcome: .uncertain, httpStatus: nil, sendGridJobID: nil, error: "timeout", finishedAt: t0,
            jobs: .requeue(retryAt: t0.addingTimeInterval(600), countsTry: true))
        let jobs = try ledger.confirmRecorded(attemptIDs: [id], now: t0.addingTimeInterval(700))
        #expect(jobs.map(\.state) == [.sent, .coalesced])
        #expect(jobs.first?.job.priority == 5, "the leader is the best job")
        #expect(try ledger.queuedJobs().isEmpty)
        #expect(
            try ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 5).first?.outcome == .accepted
        )
        #expect(try ledger.confirmRecorded(attemptIDs: [id], now: t0).isEmpty, "only uncertain attempts are confirmed")
    }

    /// A requeue keeps jobs and holds them back, linked to the attempt that may have reached
    /// SendGrid (R5); a failure keeps the (bounded) reason.
    @Test func requeueAndFail() throws {
        let ledger = try SQLiteLedger(inMemoryAt: t0)
        _ = try ledger.enqueue(newJob(), now: t0)
        guard
            case .reserved(let first, _) = try ledger.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
        else { return }
        try ledger.complete(
            attemptID: first, outcome: .uncertain, httpStatus: 503, sendGridJobID: nil, error: "503", finishedAt: t0,
            jobs: .requeue(retryAt: t0.addingTimeInterval(600), countsTry: true))
        let requeued = try ledger.queuedJobs()
        #expect(
            requeued.count == 1 && requeued[0].retryAt == t0.addingTimeInterval(600) && requeued[0].attemptID == first)
        #expect(
            requeued[0].job.notBefore == nil && requeued[0].tries == 1
                && requeued[0].dueAt == t0.addingTimeInterval(600))
        let early = try ledger.reserve(account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
        #expect(early == .nothingDue)
        let later = t0.addingTimeInterval(700)
        guard
            case .reserved(let second, _) = try ledger.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: later, check: allow)
        else { return }
        try ledger.complete(
            attemptID: second, outcome: .rejected, httpStatus: 404, sendGridJobID: nil,
            error: String(repeating: "x", count: 5000), finishedAt: later,
            jobs: .failed(reason: "404 Segment does not exist."))
        let failed = try ledger.jobs(state: .failed, segmentID: nil, after: nil, limit: 10)
        #expect(failed.first?.reason == "404 Segment does not exist.")
        #expect(
            (try ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 1).first?.error?.count ?? 0)
                <= 503)
    }

    /// After a crash, `reserved` attempts become `uncertain` (they count) and their jobs are queued again.
    @Test func recoveryAfterCrash() throws {
        let path = tempDirectory() + "/ledger.sqlite"
        do {
            let ledger = try SQLiteLedger(path: path, now: t0)
            _ = try ledger.enqueue(newJob(), now: t0)
            guard
                case .reserved = try ledger.reserve(
                    account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
            else {
                Issue.record("not reserved")
                return
            }
            // The process dies here: no complete().
        }
        let reopened = try SQLiteLedger(path: path, now: t0.addingTimeInterval(86400), maxRequestSeconds: 90)
        let attempt = try #require(
            try reopened.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 1).first)
        #expect(attempt.outcome == .uncertain)
        #expect(attempt.finishedAt == t0.addingTimeInterval(90))
        #expect(attempt.outcome.countsAsRefresh && attempt.outcome.countsTowardAccount)
        let requeued = try reopened.queuedJobs()
        #expect(requeued.count == 1 && requeued.first?.tries == 1)
    }

    /// A pre-flight read can show an uncertain attempt was not recorded: it stops counting for the
    /// segment, keeps counting for the account. Other outcomes are never changed.
    @Test func markUnrecorded() throws {
        let ledger = try SQLiteLedger(inMemoryAt: t0)
        _ = try ledger.enqueue(newJob(), now: t0)
        guard
            case .reserved(let id, _) = try ledger.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
        else {
            Issue.record("not reserved")
            return
        }
        try ledger.complete(
            attemptID: id, outcome: .uncertain, httpStatus: 502, sendGridJobID: nil, error: "502", finishedAt: t0,
            jobs: .requeue(retryAt: nil, countsTry: true))
        let external = try ledger.recordExternal(account: "default", segmentID: segmentA, timeZone: "UTC", at: t0)
        #expect(try ledger.markUnrecorded(attemptIDs: [id, external.id]) == 1)
        let outcomes = try ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 10).map(\.outcome)
        #expect(Set(outcomes) == [.unrecorded, .external])
        #expect(!AttemptOutcome.unrecorded.countsAsRefresh && AttemptOutcome.unrecorded.countsTowardAccount)
    }

    /// Cancel works on queued jobs only; expiry marks queued jobs past expires_at.
    @Test func cancelAndExpire() throws {
        let ledger = try SQLiteLedger(inMemoryAt: t0)
        guard case .created(let job) = try ledger.enqueue(newJob(), now: t0),
            case .created(let expiring) = try ledger.enqueue(
                newJob(segmentB, expiresAt: t0.addingTimeInterval(60)), now: t0)
        else { return }
        #expect(try ledger.cancel(jobID: job.id, now: t0).state == .cancelled)
        #expect { try ledger.cancel(jobID: job.id, now: t0) } throws: { ($0 as? LedgerError)?.code == .invalidState }
        #expect { try ledger.cancel(jobID: 999, now: t0) } throws: { ($0 as? LedgerError)?.code == .notFound }
        #expect(try ledger.expireJobs(now: t0.addingTimeInterval(30)).isEmpty)
        #expect(try ledger.expireJobs(now: t0.addingTimeInterval(60)).map(\.id) == [expiring.id])
        #expect(try ledger.jobCounts() == [.cancelled: 1, .expired: 1])
    }

    /// Retention removes old finished rows, never queued jobs or anything inside a rule window.
    @Test func retention() throws {
        let ledger = try SQLiteLedger(inMemoryAt: t0)
        let old = t0.addingTimeInterval(-100 * 86400)
        _ = try ledger.enqueue(newJob(key: "old-queued"), now: old)
        _ = try ledger.enqueue(newJob(segmentB, key: "old-sent"), now: old)
        guard
            case .reserved(let attemptID, _) = try ledger.reserve(
                account: "default", segmentID: segmentB, timeZone: "UTC", now: old, check: allow)
        else { return }
        try ledger.complete(
            attemptID: attemptID, outcome: .accepted, httpStatus: 202, sendGridJobID: nil, error: nil, finishedAt: old,
            jobs: .sent)
        _ = try ledger.recordExternal(
            account: "default", segmentID: segmentA, timeZone: "UTC", at: t0.addingTimeInterval(-3600))
        let removed = try ledger.prune(retentionDays: 90, now: t0)
        #expect(removed == 2)  // the old sent job and its attempt
        #expect(try ledger.queuedJobs().count == 1)
        #expect(
            try ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 10).map(\.outcome) == [
                .external
            ])
        // retention_days = 1 still keeps three days.
        #expect(try ledger.prune(retentionDays: 1, now: t0.addingTimeInterval(2 * 86400)) == 0)
    }

    /// A spool file's job and its identity are recorded together; the same file again is recognised.
    @Test func spoolIngest() throws {
        let ledger = try SQLiteLedger(inMemoryAt: t0)
        let first = try ledger.ingestSpoolFile(
            identity: "2049:77:120:1", contentDigest: "abc", name: "a.json", job: newJob(), now: t0)
        guard case .enqueued(.created(let job)) = first else { Issue.record("\(first)"); return }
        #expect(
            try ledger.ingestSpoolFile(
                identity: "2049:77:120:1", contentDigest: "abc", name: "a.json", job: newJob(), now: t0)
                == .alreadyTaken(jobID: job.id))
        // Another file (other inode) with the same content and no id is another job.
        guard
            case .enqueued(.created) = try ledger.ingestSpoolFile(
                identity: "2049:78:120:1", contentDigest: "abc", name: "b.json", job: newJob(), now: t0)
        else {
            Issue.record("not created")
            return
        }
        #expect(try ledger.queuedJobs().count == 2)
        // An idempotency conflict writes nothing, not even the file's identity.
        _ = try ledger.enqueue(newJob(key: "k1"), now: t0)
        #expect {
            try ledger.ingestSpoolFile(
                identity: "2049:79:1:1", contentDigest: "d", name: "c.json", job: newJob(key: "k1", priority: 3),
                now: t0)
        } throws: {
            ($0 as? LedgerError)?.code == .idempotencyConflict
        }
        let count = try ledger.writer.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM spool_file") }
        #expect(count == 2)
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
