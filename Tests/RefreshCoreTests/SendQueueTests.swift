import Foundation
import PropertyBased
import RefreshCore
import TZData
import TestSupport
import Testing

/// Drives a SendQueue the way the dispatcher does when every send is accepted: returns each
/// job's fate, as the planner describes fates.
func driveSendQueue(
    account: String, jobs: [QueuedJob], history: [Attempt], blocks: [LearnedBlock], limits: Limits, now: Date,
    through end: Date
) -> [String: JobFate] {
    var queue = SendQueue(account: account, limits: limits)
    // As the dispatcher loads them: attempts in flight have finished by now.
    let settled = history.map { attempt -> Attempt in
        var fixed = attempt
        if fixed.finishedAt == nil { fixed.finishedAt = max(now, attempt.startedAt) }
        return fixed
    }.filter { $0.account == account }
    queue.setAccountHistory(settled)
    queue.setBlocks(blocks, now: now)
    let byID = Dictionary(uniqueKeysWithValues: jobs.map { ($0.sequence, $0) })
    for (segment, group) in Dictionary(grouping: jobs, by: \.segment) {
        let pending = group.map {
            PendingJob(
                id: $0.sequence, segment: segment, zone: $0.zone, priority: $0.priority, dueAt: $0.notBefore,
                expiresAt: $0.expiresAt)
        }
        queue.setJobs(
            segment: segment, pending, history: settled.filter { $0.segment == segment }, blocks: blocks, now: now)
    }
    var fates: [String: JobFate] = [:]
    var t = now
    for _ in 0..<100_000 {
        switch queue.next(now: t) {
        case .send(let segment, let zone, let ids):
            for id in ids { fates[byID[id]!.id] = .send(at: t, leader: byID[ids[0]]!.id) }
            queue.record(
                Attempt(
                    account: account, segment: segment, zone: zone, outcome: .accepted, startedAt: t, finishedAt: t),
                now: t)
            queue.remove(ids, segment: segment, now: t)
        case .expire(let expired):
            for job in expired { fates[byID[job.id]!.id] = .expire(at: job.expiresAt!) }
        case .wait(let until):
            guard let until, until <= end else { return fates }
            t = until
        }
    }
    Issue.record("the queue did not settle")
    return fates
}

@Suite("SendQueue")
struct SendQueueTests {
    let utc = rules("UTC")
    let t0 = Date(timeIntervalSince1970: 1_795_586_400)

    /// The dispatcher's incremental queue sends exactly what the planner plans, for random worlds
    /// (zones with DST edges, histories, blocks, priorities, not_before, expires_at, two accounts).
    @Test func agreesWithThePlanner() async {
        await offPool {
            await propertyCheck(
                count: Int(ProcessInfo.processInfo.environment["REFRESHD_PROPERTY_COUNT"] ?? "") ?? 150,
                input: Gen.int(in: 0...Int.max)
            ) { seed in
                let world = Scenario(seed: UInt64(seed))
                let now = Date(timeIntervalSince1970: Double(world.now))
                let end = now.addingTimeInterval(16 * 86400)
                let plan = Planner.plan(
                    queue: world.queue, history: world.history, blocks: world.blocks, limits: world.limits, now: now)
                for account in Set(world.queue.map(\.account)) {
                    let fates = driveSendQueue(
                        account: account, jobs: world.queue.filter { $0.account == account }, history: world.history,
                        blocks: world.blocks,
                        limits: world.limits, now: now, through: end)
                    for job in world.queue where job.account == account {
                        let planned = plan.fates[job.id]
                        let actual = fates[job.id] ?? .never
                        // The planner looks without horizon; beyond 16 days the queue was not driven.
                        if case .send(let at, _)? = planned, at > end { continue }
                        if case .expire(let at)? = planned, at > end { continue }
                        #expect(actual == planned, "\(world) job \(job.id)")
                    }
                }
            }
        }
    }

    /// Priority, then FIFO, when the account has one slot left; the other job waits for 00:00 UTC + margin.
    @Test func priorityThenFIFO() {
        var queue = SendQueue(account: "a", limits: Limits(accountDaily: 1))
        queue.setJobs(segment: "s1", [PendingJob(id: 1, segment: "s1", zone: utc)], history: [], now: t0)
        queue.setJobs(segment: "s2", [PendingJob(id: 2, segment: "s2", zone: utc, priority: 5)], history: [], now: t0)
        guard case .send(let segment, _, let jobs) = queue.next(now: t0) else {
            Issue.record("expected a send")
            return
        }
        #expect(segment == "s2" && jobs == [2])
        queue.record(
            Attempt(account: "a", segment: "s2", zone: utc, outcome: .accepted, startedAt: t0, finishedAt: t0), now: t0)
        queue.remove([2], segment: "s2", now: t0)
        // 2026-11-26T00:00Z + 60 s.
        #expect(queue.next(now: t0) == .wait(until: Date(timeIntervalSince1970: 1_795_651_260)))
        #expect(queue.count == 1)
    }

    /// Every due job of a segment goes in one refresh, leader first; a job not yet due stays.
    @Test func coalescesDueJobs() {
        var queue = SendQueue(account: "a", limits: .sendGrid)
        queue.setJobs(
            segment: "s",
            [
                PendingJob(id: 1, segment: "s", zone: utc), PendingJob(id: 2, segment: "s", zone: utc, priority: 3),
                PendingJob(id: 3, segment: "s", zone: utc, dueAt: t0.addingTimeInterval(60)),
            ], history: [], now: t0)
        #expect(queue.next(now: t0) == .send(segment: "s", zone: utc, jobs: [2, 1]))
    }

    /// A pause stops everything until resume; a hold stops one segment until its instant.
    /// A segment handed out and not sent (this host stands by, D7) is offered again at once;
    /// without `putBack` it would stay out of the queue until the next reload.
    @Test func putBackOffersTheSegmentAgain() {
        var queue = SendQueue(account: "a", limits: .sendGrid)
        queue.setJobs(segment: "s1", [PendingJob(id: 1, segment: "s1", zone: utc)], history: [], now: t0)
        guard case .send(let segment, _, _) = queue.next(now: t0) else {
            Issue.record("not offered")
            return
        }
        #expect(queue.next(now: t0) == .wait(until: nil), "taken out until reported")
        queue.putBack(segment: segment, now: t0)
        guard case .send(let again, _, let ids) = queue.next(now: t0.addingTimeInterval(1)) else {
            Issue.record("not offered again")
            return
        }
        #expect(again == "s1" && ids == [1])
    }

    @Test func pauseAndHold() {
        var queue = SendQueue(account: "a", limits: .sendGrid)
        queue.setJobs(segment: "s", [PendingJob(id: 1, segment: "s", zone: utc)], history: [], now: t0)
        queue.pause(reason: "401")
        #expect(queue.next(now: t0) == .wait(until: nil))
        queue.resume()
        queue.hold(segment: "s", until: t0.addingTimeInterval(30), now: t0)
        #expect(queue.next(now: t0) == .wait(until: t0.addingTimeInterval(30)))
        #expect(queue.next(now: t0.addingTimeInterval(30)) == .send(segment: "s", zone: utc, jobs: [1]))
    }

    /// A job past its expiry leaves the queue as expired, never sent.
    @Test func expiry() {
        var queue = SendQueue(account: "a", limits: .sendGrid)
        let history = [
            Attempt(account: "a", segment: "s", zone: utc, outcome: .accepted, startedAt: t0, finishedAt: t0)
        ]
        queue.setJobs(
            segment: "s", [PendingJob(id: 1, segment: "s", zone: utc, expiresAt: t0.addingTimeInterval(600))],
            history: history, now: t0)
        #expect(queue.next(now: t0) == .wait(until: t0.addingTimeInterval(600)))
        guard case .expire(let jobs) = queue.next(now: t0.addingTimeInterval(600)) else {
            Issue.record("expected an expiry")
            return
        }
        #expect(jobs.map(\.id) == [1] && queue.count == 0)
        #expect(queue.next(now: t0.addingTimeInterval(600)) == .wait(until: nil))
    }
}
