import Foundation
import RefreshCore
import RefreshPostgres
import RefreshStore
import TestSupport
import Testing

/// What every `Ledger` must do, run against each backend (SQLite and PostgreSQL): the reservation
/// protocol and the invariants R1-R10 of `SQLiteLedger`'s design notes. Backend-specific checks
/// (pragmas, files, query plans; hosts, locks, notifications) live beside it.
@Suite("Ledger conformance", .serialized)
struct LedgerConformanceTests {
    /// Reopening an existing ledger keeps its rows.
    @Test(arguments: Backend.allCases) func reopenKeepsRows(_ backend: Backend) async throws {
        let place = try await LedgerPlace.make(backend)
        let ledger = try await place.open(now: t0)
        _ = try await ledger.enqueue(newJob(key: "a"), now: t0)
        await close(ledger)
        let again = try await place.open(now: t0)
        #expect(try await again.queuedJobs().count == 1)
        await close(again)
    }

    /// R9: every job reaching a final state gets one event in the same write, whatever the path
    /// (cancel, bulk cancel, expiry), none for a retry back to queued; events come in order after
    /// a cursor, which is kept in the ledger.
    @Test(arguments: Backend.allCases) func jobEventsForEveryFinalState(_ backend: Backend) async throws {
        let ledger = try await LedgerPlace.make(backend).open(now: t0)
        var ids: [Int64] = []
        for index in 0..<4 {
            guard
                case .created(let job) = try await ledger.enqueue(
                    NewJob(
                        source: "test", idempotencyKey: "e\(index)", account: "default", segmentID: segmentA,
                        timeZone: "UTC", expiresAt: index == 1 ? t0.addingTimeInterval(60) : nil), now: t0)
            else { Issue.record("not created"); return }
            ids.append(job.id)
        }
        #expect(try await ledger.jobEvents(after: 0, limit: 10).isEmpty)
        #expect(try await ledger.latestJobEventID() == 0)
        #expect(try await ledger.hookCursor() == nil)
        _ = try await ledger.cancel(jobID: ids[0], now: t0.addingTimeInterval(1))
        _ = try await ledger.expireJobs(now: t0.addingTimeInterval(120))
        _ = try await ledger.retry(jobID: ids[1], now: t0.addingTimeInterval(130))
        _ = try await ledger.cancelJobs(
            matching: JobFilter(states: [.queued], segmentID: segmentA), now: t0.addingTimeInterval(140))
        let events = try await ledger.jobEvents(after: 0, limit: 10)
        #expect(events.map(\.state) == [.cancelled, .expired, .cancelled, .cancelled, .cancelled])
        #expect(events.map(\.job.id) == [ids[0], ids[1], ids[1], ids[2], ids[3]])
        #expect(events.first?.job.job.idempotencyKey == "e0" && events.first?.at == t0.addingTimeInterval(1))
        try await ledger.setHookCursor(events[1].id)
        #expect(try await ledger.hookCursor() == events[1].id)
        #expect(try await ledger.jobEvents(after: events[1].id, limit: 2).map(\.id) == [events[2].id, events[3].id])
        #expect(try await ledger.latestJobEventID() == events.last?.id)
        await close(ledger)
    }

    /// Same idempotency key and content: a no-op; different content: refused, naming the key.
    @Test(arguments: Backend.allCases) func idempotency(_ backend: Backend) async throws {
        let ledger = try await LedgerPlace.make(backend).open(now: t0)
        guard case .created(let first) = try await ledger.enqueue(newJob(key: "crm-1"), now: t0) else {
            Issue.record("not created"); return
        }
        #expect(try await ledger.enqueue(newJob(key: "crm-1"), now: t0) == .duplicate(first))
        await #expect {
            try await ledger.enqueue(newJob(key: "crm-1", priority: 5), now: t0)
        } throws: { ($0 as? LedgerError)?.code == .idempotencyConflict && "\($0)".contains("crm-1") }
        #expect(try await ledger.queuedJobs().count == 1)
        await close(ledger)
    }

    /// R1: every due queued job of the segment is served, leader first; a denial writes nothing.
    @Test(arguments: Backend.allCases) func reserveAndComplete(_ backend: Backend) async throws {
        let ledger = try await LedgerPlace.make(backend).open(now: t0)
        _ = try await ledger.enqueue(newJob(priority: 0), now: t0)
        _ = try await ledger.enqueue(newJob(priority: 5), now: t0)
        _ = try await ledger.enqueue(newJob(notBefore: t0.addingTimeInterval(3600)), now: t0)  // not due yet
        _ = try await ledger.enqueue(newJob(segmentB), now: t0)
        let denied = Decision(verdict: .notBefore(t0.addingTimeInterval(60)), binding: [.segmentInterval], budgets: [])
        let refused = try await ledger.reserve(
            account: "default", segmentID: segmentA, timeZone: "America/Chicago", now: t0
        ) { _ in denied }
        #expect(refused == .denied(denied))
        #expect(try await ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 10).isEmpty)
        guard
            case .reserved(let attemptID, let jobs) = try await ledger.reserve(
                account: "default", segmentID: segmentA, timeZone: "America/Chicago", now: t0, check: allow)
        else { Issue.record("not reserved"); return }
        #expect(jobs.map(\.job.priority) == [5, 0])
        #expect(jobs.allSatisfy { $0.state == .sending && $0.attemptID == attemptID })
        #expect(
            try await ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 10).first?.outcome
                == .reserved)
        try await ledger.complete(
            attemptID: attemptID, outcome: .accepted, httpStatus: 202, sendGridJobID: "sg-1", error: nil,
            finishedAt: t0.addingTimeInterval(1), jobs: .sent)
        let states = try await ledger.jobs(state: nil, segmentID: segmentA, after: nil, limit: 10).map(\.state)
        #expect(states == [.coalesced, .sent, .queued])
        await #expect {
            try await ledger.complete(
                attemptID: attemptID, outcome: .accepted, httpStatus: 202, sendGridJobID: nil, error: nil,
                finishedAt: t0, jobs: .sent)
        } throws: { ($0 as? LedgerError)?.code == .invalidState }
        await close(ledger)
    }

    /// R4: the live reservation is turned uncertain behind the lane's back (SQLite: a second
    /// opening of the file; PostgreSQL: another host recovering after this one went silent); the
    /// real answer arriving later is still recorded and its job sent, never an error that holds
    /// the account up.
    @Test(arguments: Backend.allCases) func lateAnswerAfterRecovery(_ backend: Backend) async throws {
        let place = try await LedgerPlace.make(backend)
        let ledger = try await place.open(now: t0)
        _ = try await ledger.enqueue(newJob(), now: t0)
        guard
            case .reserved(let id, _) = try await ledger.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
        else { Issue.record("no reservation"); return }
        switch backend {
        case .sqlite:
            _ = try await place.open(now: t0.addingTimeInterval(1))
        case .postgresql:
            let later = t0.addingTimeInterval(
                PostgresLedger.leaseSeconds + 300 + PostgresLedger.recoveryMarginSeconds + 1)
            let other = try #require(try await place.open(now: later, host: "host-b") as? PostgresLedger)
            #expect(try await other.heartbeat(now: later) == 1)
            await other.shutdown()
        }
        #expect(
            try await ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 5).first?.outcome
                == .uncertain)
        #expect(try await ledger.queuedJobs().first?.attemptID == id, "requeued, still linked (R2)")
        try await ledger.complete(
            attemptID: id, outcome: .accepted, httpStatus: 202, sendGridJobID: "sg-1", error: nil,
            finishedAt: t0.addingTimeInterval(2), jobs: .sent)
        let attempt = try #require(
            try await ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 5).first)
        #expect(attempt.outcome == .accepted && attempt.sendGridJobID == "sg-1")
        #expect(attempt.error?.contains("answered after refreshd had marked it uncertain") == true)
        #expect(try await ledger.queuedJobs().isEmpty)
        #expect(try await ledger.jobCounts()[.sent] == 1)
        await #expect {
            try await ledger.complete(
                attemptID: id, outcome: .accepted, httpStatus: 202, sendGridJobID: nil, error: nil, finishedAt: t0,
                jobs: .sent)
        } throws: { ($0 as? LedgerError)?.code == .invalidState }
        await close(ledger)
    }

    /// R5: after a pre-flight shows SendGrid counted an unanswered request, the attempt is accepted
    /// and the jobs still linked to it are sent (leader) and coalesced, not sent again.
    @Test(arguments: Backend.allCases) func confirmRecorded(_ backend: Backend) async throws {
        let ledger = try await LedgerPlace.make(backend).open(now: t0)
        _ = try await ledger.enqueue(newJob(), now: t0)
        _ = try await ledger.enqueue(newJob(priority: 5), now: t0)
        guard
            case .reserved(let id, _) = try await ledger.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
        else { Issue.record("no reservation"); return }
        try await ledger.complete(
            attemptID: id, outcome: .uncertain, httpStatus: nil, sendGridJobID: nil, error: "timeout", finishedAt: t0,
            jobs: .requeue(retryAt: t0.addingTimeInterval(600), countsTry: true))
        let jobs = try await ledger.confirmRecorded(attemptIDs: [id], now: t0.addingTimeInterval(700))
        #expect(jobs.map(\.state) == [.sent, .coalesced])
        #expect(jobs.first?.job.priority == 5, "the leader is the best job")
        #expect(try await ledger.queuedJobs().isEmpty)
        #expect(
            try await ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 5).first?.outcome
                == .accepted)
        #expect(
            try await ledger.confirmRecorded(attemptIDs: [id], now: t0).isEmpty,
            "only uncertain attempts are confirmed")
        await close(ledger)
    }

    /// A requeue keeps jobs and holds them back, linked to the attempt that may have reached
    /// SendGrid (R5); a failure keeps the (bounded) reason.
    @Test(arguments: Backend.allCases) func requeueAndFail(_ backend: Backend) async throws {
        let ledger = try await LedgerPlace.make(backend).open(now: t0)
        _ = try await ledger.enqueue(newJob(), now: t0)
        guard
            case .reserved(let first, _) = try await ledger.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
        else { Issue.record("no reservation"); return }
        try await ledger.complete(
            attemptID: first, outcome: .uncertain, httpStatus: 503, sendGridJobID: nil, error: "503", finishedAt: t0,
            jobs: .requeue(retryAt: t0.addingTimeInterval(600), countsTry: true))
        let requeued = try await ledger.queuedJobs()
        #expect(
            requeued.count == 1 && requeued[0].retryAt == t0.addingTimeInterval(600) && requeued[0].attemptID == first)
        #expect(
            requeued[0].job.notBefore == nil && requeued[0].tries == 1
                && requeued[0].dueAt == t0.addingTimeInterval(600))
        let early = try await ledger.reserve(
            account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
        #expect(early == .nothingDue)
        let later = t0.addingTimeInterval(700)
        guard
            case .reserved(let second, _) = try await ledger.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: later, check: allow)
        else { Issue.record("no second reservation"); return }
        try await ledger.complete(
            attemptID: second, outcome: .rejected, httpStatus: 404, sendGridJobID: nil,
            error: String(repeating: "x", count: 5000), finishedAt: later,
            jobs: .failed(reason: "404 Segment does not exist."))
        let failed = try await ledger.jobs(state: .failed, segmentID: nil, after: nil, limit: 10)
        #expect(failed.first?.reason == "404 Segment does not exist.")
        let error = try await ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 1).first?.error
        #expect((error?.count ?? 0) <= 503)
        await close(ledger)
    }

    /// R2: after a crash, `reserved` attempts become `uncertain` (they count), finished no later
    /// than the request timeout after they started, and their jobs are queued again.
    @Test(arguments: Backend.allCases) func recoveryAfterCrash(_ backend: Backend) async throws {
        let place = try await LedgerPlace.make(backend)
        let ledger = try await place.open(now: t0)
        _ = try await ledger.enqueue(newJob(), now: t0)
        guard
            case .reserved = try await ledger.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
        else { Issue.record("not reserved"); return }
        // The process dies here: no complete(); its connections go.
        await close(ledger)
        let reopened = try await place.open(now: t0.addingTimeInterval(86400), maxRequestSeconds: 90)
        let attempt = try #require(
            try await reopened.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 1).first)
        #expect(attempt.outcome == .uncertain)
        #expect(attempt.finishedAt == t0.addingTimeInterval(90))
        #expect(attempt.outcome.countsAsRefresh && attempt.outcome.countsTowardAccount)
        let requeued = try await reopened.queuedJobs()
        #expect(requeued.count == 1 && requeued.first?.tries == 1)
        await close(reopened)
    }

    /// A pre-flight read can show an uncertain attempt was not recorded: it stops counting for the
    /// segment, keeps counting for the account. Other outcomes are never changed.
    @Test(arguments: Backend.allCases) func markUnrecorded(_ backend: Backend) async throws {
        let ledger = try await LedgerPlace.make(backend).open(now: t0)
        _ = try await ledger.enqueue(newJob(), now: t0)
        guard
            case .reserved(let id, _) = try await ledger.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
        else { Issue.record("not reserved"); return }
        try await ledger.complete(
            attemptID: id, outcome: .uncertain, httpStatus: 502, sendGridJobID: nil, error: "502", finishedAt: t0,
            jobs: .requeue(retryAt: nil, countsTry: true))
        let external = try await ledger.recordExternal(
            account: "default", segmentID: segmentA, timeZone: "UTC", at: t0)
        #expect(try await ledger.markUnrecorded(attemptIDs: [id, external.id]) == 1)
        let outcomes = try await ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 10)
            .map(\.outcome)
        #expect(Set(outcomes) == [.unrecorded, .external])
        #expect(!AttemptOutcome.unrecorded.countsAsRefresh && AttemptOutcome.unrecorded.countsTowardAccount)
        await close(ledger)
    }

    /// Cancel works on queued jobs only; expiry marks queued jobs past expires_at.
    @Test(arguments: Backend.allCases) func cancelAndExpire(_ backend: Backend) async throws {
        let ledger = try await LedgerPlace.make(backend).open(now: t0)
        guard case .created(let job) = try await ledger.enqueue(newJob(), now: t0),
            case .created(let expiring) = try await ledger.enqueue(
                newJob(segmentB, expiresAt: t0.addingTimeInterval(60)), now: t0)
        else { Issue.record("not created"); return }
        #expect(try await ledger.cancel(jobID: job.id, now: t0).state == .cancelled)
        await #expect { try await ledger.cancel(jobID: job.id, now: t0) } throws: {
            ($0 as? LedgerError)?.code == .invalidState
        }
        await #expect { try await ledger.cancel(jobID: 999, now: t0) } throws: {
            ($0 as? LedgerError)?.code == .notFound
        }
        #expect(try await ledger.expireJobs(now: t0.addingTimeInterval(30)).isEmpty)
        #expect(try await ledger.expireJobs(now: t0.addingTimeInterval(60)).map(\.id) == [expiring.id])
        #expect(try await ledger.jobCounts() == [.cancelled: 1, .expired: 1])
        await close(ledger)
    }

    /// R3: retention removes old finished rows, never queued jobs or anything inside a rule window.
    @Test(arguments: Backend.allCases) func retention(_ backend: Backend) async throws {
        let ledger = try await LedgerPlace.make(backend).open(now: t0)
        let old = t0.addingTimeInterval(-100 * 86400)
        _ = try await ledger.enqueue(newJob(key: "old-queued"), now: old)
        _ = try await ledger.enqueue(newJob(segmentB, key: "old-sent"), now: old)
        guard
            case .reserved(let attemptID, _) = try await ledger.reserve(
                account: "default", segmentID: segmentB, timeZone: "UTC", now: old, check: allow)
        else { Issue.record("not reserved"); return }
        try await ledger.complete(
            attemptID: attemptID, outcome: .accepted, httpStatus: 202, sendGridJobID: nil, error: nil, finishedAt: old,
            jobs: .sent)
        _ = try await ledger.recordExternal(
            account: "default", segmentID: segmentA, timeZone: "UTC", at: t0.addingTimeInterval(-3600))
        let removed = try await ledger.prune(retentionDays: 90, now: t0)
        #expect(removed == 2)  // the old sent job and its attempt
        #expect(try await ledger.queuedJobs().count == 1)
        #expect(
            try await ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 10).map(\.outcome) == [
                .external
            ])
        // retention_days = 1 still keeps three days.
        #expect(try await ledger.prune(retentionDays: 1, now: t0.addingTimeInterval(2 * 86400)) == 0)
        await close(ledger)
    }

    /// R6: a spool file's job and its identity are recorded together; the same file again is
    /// recognised; an idempotency conflict writes nothing for that file, not even its identity.
    @Test(arguments: Backend.allCases) func spoolIngest(_ backend: Backend) async throws {
        let ledger = try await LedgerPlace.make(backend).open(now: t0)
        let first = try await ledger.ingestSpoolFile(
            identity: "2049:77:120:1", contentDigest: "abc", name: "a.json", job: newJob(), now: t0)
        guard case .enqueued(.created(let job)) = first else { Issue.record("\(first)"); return }
        #expect(
            try await ledger.ingestSpoolFile(
                identity: "2049:77:120:1", contentDigest: "abc", name: "a.json", job: newJob(), now: t0)
                == .alreadyTaken(jobID: job.id))
        // Another file (other inode) with the same content and no id is another job.
        guard
            case .enqueued(.created) = try await ledger.ingestSpoolFile(
                identity: "2049:78:120:1", contentDigest: "abc", name: "b.json", job: newJob(), now: t0)
        else { Issue.record("not created"); return }
        #expect(try await ledger.queuedJobs().count == 2)
        _ = try await ledger.enqueue(newJob(key: "k1"), now: t0)
        await #expect {
            try await ledger.ingestSpoolFile(
                identity: "2049:79:1:1", contentDigest: "d", name: "c.json", job: newJob(key: "k1", priority: 3),
                now: t0)
        } throws: { ($0 as? LedgerError)?.code == .idempotencyConflict }
        // Nothing was kept of the refused file: the same identity and digest is new again.
        let again = try await ledger.ingestSpoolFile(
            identity: "2049:79:1:1", contentDigest: "d", name: "c.json", job: newJob(key: "k2"), now: t0)
        guard case .enqueued(.created) = again else { Issue.record("\(again)"); return }
        await close(ledger)
    }

    /// R10: nothing is reserved under a hold of the account or the segment; the same scope held
    /// twice is one hold; released, the segment goes again.
    @Test(arguments: Backend.allCases) func holds(_ backend: Backend) async throws {
        let ledger = try await LedgerPlace.make(backend).open(now: t0)
        _ = try await ledger.enqueue(newJob(), now: t0)
        let hold = try await ledger.hold(account: "default", segmentID: nil, reason: "audit", who: "ops", now: t0)
        #expect(
            try await ledger.hold(account: "default", segmentID: nil, reason: "again", who: "ops", now: t0) == hold)
        #expect(
            try await ledger.reserve(account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
                == .held(hold))
        #expect(try await ledger.activeHolds(account: "default").map(\.id) == [hold.id])
        #expect(try await ledger.activeHolds(account: "other").isEmpty)
        let released = try #require(try await ledger.release(holdID: hold.id, now: t0.addingTimeInterval(5)))
        #expect(released.releasedAt == t0.addingTimeInterval(5))
        #expect(try await ledger.release(holdID: hold.id, now: t0) == nil)
        guard
            case .reserved = try await ledger.reserve(
                account: "default", segmentID: segmentA, timeZone: "UTC", now: t0, check: allow)
        else { Issue.record("not reserved after release"); return }
        await close(ledger)
    }

    /// Blocks: added, read for the account and its segments, lifted by hand (the row stays, ended
    /// now, its reason saying so); a lifted or unknown block is nil.
    @Test(arguments: Backend.allCases) func blocks(_ backend: Backend) async throws {
        let ledger = try await LedgerPlace.make(backend).open(now: t0)
        try await ledger.addBlock(
            account: "default", segmentID: segmentA, until: t0.addingTimeInterval(3600), reason: "429 seen", now: t0)
        try await ledger.addBlock(
            account: "default", segmentID: nil, until: t0.addingTimeInterval(60), reason: "account 429", now: t0)
        let active = try await ledger.activeBlocks(account: "default", now: t0)
        #expect(active.map(\.segmentID) == [segmentA, nil])
        let history = try await ledger.history(account: "default", segmentID: segmentB, now: t0)
        #expect(history.blocks.map(\.segmentID) == [nil], "another segment sees only the account's block")
        let lifted = try #require(try await ledger.liftBlock(id: active[0].id, now: t0.addingTimeInterval(10)))
        #expect(lifted.until == t0.addingTimeInterval(10) && lifted.reason.hasPrefix("lifted by hand"))
        #expect(try await ledger.liftBlock(id: active[0].id, now: t0.addingTimeInterval(20)) == nil)
        #expect(try await ledger.activeBlocks(account: nil, now: t0.addingTimeInterval(20)).map(\.id) == [active[1].id])
        #expect(try await ledger.blocks(account: "default", now: t0.addingTimeInterval(20)).count == 2)
        await close(ledger)
    }

    /// Editing, retrying and paging: what the operator verbs use.
    @Test(arguments: Backend.allCases) func editRetryAndPaging(_ backend: Backend) async throws {
        let ledger = try await LedgerPlace.make(backend).open(now: t0)
        var ids: [Int64] = []
        for index in 0..<5 {
            guard case .created(let job) = try await ledger.enqueue(newJob(key: "p\(index)"), now: t0) else {
                Issue.record("not created"); return
            }
            ids.append(job.id)
        }
        #expect(
            try await ledger.jobs(state: .queued, segmentID: nil, after: ids[1], limit: 2).map(\.id) == [
                ids[2], ids[3],
            ])
        let edited = try await ledger.edit(
            jobID: ids[0], change: JobChange(priority: 7, notBefore: t0.addingTimeInterval(60)), now: t0)
        #expect(edited.job.priority == 7 && edited.job.notBefore == t0.addingTimeInterval(60))
        await #expect {
            try await ledger.edit(
                jobID: ids[0], change: JobChange(expiresAt: t0.addingTimeInterval(30)), now: t0)
        } throws: { ($0 as? LedgerError)?.code == .invalidInput }
        let cancelled = try await ledger.cancelJobs(matching: JobFilter(states: [.queued]), now: t0)
        #expect(cancelled.map(\.id) == ids)
        await #expect { try await ledger.retry(jobID: ids[0], now: t0) } throws: {
            ($0 as? LedgerError)?.code == .invalidState
        }
        #expect(try await ledger.jobs(matching: JobFilter(states: [.cancelled])).count == 5)
        #expect(try await ledger.queuedCount() == 0)
        #expect(try await ledger.oldestQueuedAt() == nil)
        await close(ledger)
    }

    /// The account view equals the history read for any segment (the control API's cache).
    @Test(arguments: Backend.allCases) func accountViewMatchesHistory(_ backend: Backend) async throws {
        let ledger = try await LedgerPlace.make(backend).open(now: t0)
        for (index, segment) in [segmentA, segmentB, segmentA].enumerated() {
            _ = try await ledger.recordExternal(
                account: "default", segmentID: segment, timeZone: "UTC",
                at: t0.addingTimeInterval(Double(-3600 * index)))
        }
        _ = try await ledger.enqueue(newJob(segmentB), now: t0)
        try await ledger.addBlock(
            account: "default", segmentID: nil, until: t0.addingTimeInterval(60), reason: "r", now: t0)
        let view = try await ledger.accountView(account: "default", now: t0)
        for segment in [segmentA, segmentB] {
            let history = try await ledger.history(account: "default", segmentID: segment, now: t0)
            #expect(view.history(segmentID: segment, now: t0) == history)
        }
        #expect(view.queuedZones == [segmentB: ["America/Chicago"]])
        await close(ledger)
    }
}
