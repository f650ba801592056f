import Foundation
import Logging
import RefreshCore
import RefreshStore
import TZData

// The lane's ledger sync: what it reads from the ledger into its queue (jobs, attempts, blocks,
// holds) and when; the one path from stored rows to the engine's inputs is `StoredJob.pendingJob`,
// `StoredAttempt.engineAttempt` and `StoredBlock.engineBlock` (RefreshStore). Design notes and
// invariants D1-D6: Dispatcher.swift.

extension AccountLane {
    // MARK: Reading the ledger

    /// A zone's rules, or nil when the host cannot load it (never another zone in its place).
    func rules(_ name: String) -> ZoneRules? { try? zones.rules(for: name) }

    /// The queue's view of a job; nil when its zone cannot be loaded: the job is held (counted in
    /// `held`, shown by the API) and never sent with another zone.
    func pending(_ job: StoredJob) -> PendingJob? {
        // An operator's hold keeps the job out of the queue until it is released (R10).
        if holds.contains(where: { $0.covers(account: account.name, segmentID: job.job.segmentID) }) { return nil }
        guard let pending = job.pendingJob(resolve: rules) else {
            held[job.id] = (job.job.segmentID, job.job.timeZone, job.job.expiresAt)
            if warnedHeld.insert(job.id).inserted {
                logger.warning(
                    "job held: its time zone cannot be loaded from the host's tz data; it is never sent with another zone",
                    metadata: [
                        "job": "\(job.id)", "segment": "\(job.job.segmentID)", "time_zone": "\(job.job.timeZone)",
                    ])
            }
            return nil
        }
        held[job.id] = nil
        return pending
    }

    func attempt(_ stored: StoredAttempt) -> Attempt { stored.engineAttempt(resolve: rules) }

    func learned(_ block: StoredBlock) -> LearnedBlock { block.engineBlock }

    /// Reads every queued job of the account, its recent attempts and blocks.
    func load(now t: Date) async throws {
        holds = try await ledger.activeHolds(account: account.name)
        // A fresh queue (a reload may have changed zones or limits); a pause survives.
        let pause = queue.pauseReason
        queue = SendQueue(account: account.name, limits: queue.limits)
        held = [:]
        if let pause { queue.pause(reason: pause) }
        let all = try await ledger.queuedJobs()
        lastSeenJobID = all.map(\.id).max() ?? 0
        let mine = all.filter { $0.job.account == account.name }
        let attempts = try await ledger.attempts(
            since: Date(timeIntervalSince1970: HistoryWindows.segmentSince(t)), account: account.name, segmentID: nil,
            limit: Int.max
        )
        .map(attempt)
        let blocks = try await ledger.blocks(account: account.name, now: t).map(learned)
        queue.setAccountHistory(attempts)
        queue.setBlocks(blocks, now: t)
        let bySegment = Dictionary(grouping: attempts, by: \.segment)
        for (segment, jobs) in Dictionary(grouping: mine, by: \.job.segmentID) {
            queue.setJobs(
                segment: segment, jobs.compactMap(pending), history: bySegment[segment] ?? [], blocks: blocks, now: t)
        }
        loaded = true
        if !mine.isEmpty { logger.info("dispatcher loaded the queue", metadata: ["queued": "\(mine.count)"]) }
    }

    /// Jobs added since the last look (spool, API, CLI).
    func pullNewJobs(now t: Date) async throws {
        while true {
            let batch = try await ledger.jobs(state: .queued, segmentID: nil, after: lastSeenJobID, limit: 5000)
            guard let last = batch.last else { return }
            lastSeenJobID = last.id
            for (segment, jobs) in Dictionary(
                grouping: batch.filter { $0.job.account == account.name }, by: \.job.segmentID)
            {
                if queue.knows(segment: segment) {
                    for job in jobs { if let job = pending(job) { queue.add(job, now: t) } }
                } else {
                    try await reload(segment: segment, now: t)
                }
            }
            if batch.count < 5000 { return }
        }
    }

    /// The segment's queued jobs, attempts and blocks, as the ledger has them.
    func reload(segment: String, now t: Date) async throws {
        let jobs = try await ledger.queuedJobs(account: account.name, segmentID: segment)
        let history = try await ledger.history(account: account.name, segmentID: segment, now: t)
        // Held jobs of this segment that are no longer queued (cancelled, expired) stop being held.
        for (id, entry) in held where entry.segment == segment && !jobs.contains(where: { $0.id == id }) {
            held[id] = nil
        }
        queue.setJobs(
            segment: segment, jobs.compactMap(pending), history: history.segmentAttempts.map(attempt),
            blocks: history.blocks.map(learned),
            now: t)
    }

    func reloadBlocks(now t: Date) async throws {
        queue.setBlocks(try await ledger.blocks(account: account.name, now: t).map(learned), now: t)
    }

    // MARK: Expiry

    func expire(_ jobs: [PendingJob], now t: Date) async {
        do {
            let expired = try await ledger.expireJobs(now: t)
            for job in expired {
                held[job.id] = nil
                logger.notice(
                    "job expired before the rules allowed a refresh",
                    metadata: [
                        "job": "\(job.id)", "segment": "\(job.job.segmentID)",
                        "expires_at": "\(Timestamp.rfc3339(job.job.expiresAt!))",
                    ])
            }
        } catch {
            note(error: "ledger: \(error)")
            logger.error("cannot mark expired jobs", metadata: ["error": "\(error)"])
        }
    }
}
