import Foundation
import Logging
import RefreshCore
import RefreshStore
import RefreshWire
import TZData

// The lane's sending and answer handling: pre-flight, reservation, the request, and what the
// answer means (RefreshCore's `AnswerMeaning`, `RateLimitLesson`, `QuotaReport`,
// `Reconciliation`) carried out and recorded. Design notes and invariants D1-D6: Dispatcher.swift.

extension AccountLane {
    // MARK: Sending

    func send(segment: String, zone: ZoneRules, at t: Date) async {
        var segmentLogger = logger
        segmentLogger[metadataKey: "segment"] = "\(segment)"
        let key = account.apiKey
        // 1. Pre-flight: learn refreshes made elsewhere before spending a slot.
        if let client, let key, preflight {
            switch await client.readSegment(segment: segment, key: key, onBehalfOf: account.onBehalfOf) {
            case .success(let reading):
                do {
                    if try await reconcile(segment: segment, zone: zone, reading: reading, at: t, logger: segmentLogger)
                    {
                        return
                    }
                } catch {
                    segmentLogger.error(
                        "cannot record what the pre-flight read showed", metadata: ["error": "\(error)"])
                }
            case .failure(let failure):
                segmentLogger.notice(
                    "pre-flight read failed; the ledger decides alone", metadata: ["reason": "\(failure)"])
            }
        }
        // 2. Reserve: the rules are checked again on the ledger's own history, in the transaction.
        let alsoZones = queue.jobs(of: segment).map(\.zone)
        let limits = queue.limits
        let accountName = account.name
        let zones = self.zones
        let reservation: ReservationResult
        do {
            // Only jobs whose zone loads ride along (a held job is never sent under another zone).
            reservation = try await ledger.reserve(
                account: accountName, segmentID: segment, timeZone: zone.name, now: t,
                admit: { (try? zones.rules(for: $0.job.timeZone)) != nil }
            ) { history in
                let inputs = history.engineInputs(resolve: { try? zones.rules(for: $0) })
                return RuleEngine.decide(
                    account: accountName, segment: segment, zone: zone, alsoZones: alsoZones, history: inputs.attempts,
                    blocks: inputs.blocks, limits: limits, now: t)
            }
        } catch {
            note(error: "ledger: \(error)")
            segmentLogger.error(
                "cannot reserve a refresh in the ledger; retrying in 30 s", metadata: ["error": "\(error)"])
            queue.hold(segment: segment, until: t.addingTimeInterval(30), now: t)
            return
        }
        let attemptID: Int64
        let jobs: [StoredJob]
        switch reservation {
        case .nothingDue:
            try? await reload(segment: segment, now: t)
            return
        case .denied(let decision):
            segmentLogger.debug(
                "the ledger's rules hold the refresh back", metadata: ["binding": "\(decision.binding.map(\.rawValue))"]
            )
            try? await reload(segment: segment, now: t)
            if let earliest = decision.earliest(now: t) { queue.hold(segment: segment, until: earliest, now: t) }
            return
        case .held(let hold):
            // A hold placed since the queue was read: read everything again (the hold with it).
            segmentLogger.info(
                "held by an operator; not sent", metadata: ["hold": "\(hold.id)", "reason": "\(hold.reason)"])
            loaded = false
            return
        case .reserved(let id, let reserved):
            attemptID = id
            jobs = reserved
        }
        // 3. Send (or, in dry-run, don't); what the answer means is RefreshCore's AnswerMeaning.
        let meaning: AnswerMeaning
        var latency: Duration?
        if let reason = ledger.dispatch(account: name).standbyReason {
            // Leadership lost since the step began (R16): the leader sends these, not this host.
            meaning = .standDown(reason, at: t)
            await carryOut(meaning, segment: segment, zone: zone, jobs: jobs, logger: segmentLogger)
        } else if let client, let key {
            let began = ContinuousClock.now
            let result = await client.refresh(
                segment: segment, zone: zone.name, key: key, onBehalfOf: account.onBehalfOf)
            latency = ContinuousClock.now - began
            meaning = AnswerMeaning(
                result, segment: segment, tries: (jobs.map(\.tries).max() ?? 0) + 1, maxAttempts: maxAttempts,
                connectFailures: connectFailures, finished: max(now(), t))
            await carryOut(meaning, segment: segment, zone: zone, jobs: jobs, logger: segmentLogger)
        } else {
            meaning = .dryRun(at: t)
            segmentLogger.info(
                "dry-run: refresh recorded, not sent",
                metadata: ["jobs": "\(jobs.map(\.id))", "time_zone": "\(zone.name)"])
        }
        var answer = Unwritten(
            attemptID: attemptID, segment: segment, zone: zone, startedAt: t, meaning: meaning, latency: latency)
        do {
            try await write(answer)
        } catch let error as LedgerError where error.code == .notFound || error.code == .invalidState {
            // Writing again cannot help (the attempt is gone or already has an answer): say so and
            // go on; the ledger's row stands (R4 records late answers, so this is not expected).
            note(error: "ledger: \(error)")
            segmentLogger.error(
                "SendGrid's answer cannot be recorded: the attempt is no longer open in the ledger",
                metadata: ["error": "\(error)", "outcome": "\(meaning.outcome.rawValue)"])
            loaded = false
            return
        } catch {
            // The attempt stays reserved (it counts; a restart makes it uncertain). The loop writes
            // the answer again, from 5 s doubling to 60 s, before it does anything else.
            note(error: "ledger: \(error)")
            segmentLogger.critical(
                "cannot record SendGrid's answer in the ledger; nothing more is sent for the account until it is recorded",
                metadata: ["error": "\(error)", "outcome": "\(meaning.outcome.rawValue)"])
            answer.failures = 1
            unwritten = answer
            statusLock.withLock { published.waitingForLedger = true }
            observer?.ledgerUnwritable(account: account.name, error: "\(error)")
            return
        }
        await recorded(answer, now: t, logger: segmentLogger)
    }

    /// SendGrid's answer to one request, on its way to the ledger.
    struct Unwritten {
        var attemptID: Int64
        var segment: String
        var zone: ZoneRules
        var startedAt: Date
        var meaning: AnswerMeaning
        var latency: Duration?
        var failures = 0
    }

    func write(_ answer: Unwritten) async throws {
        let meaning = answer.meaning
        try await ledger.complete(
            attemptID: answer.attemptID, outcome: meaning.outcome, httpStatus: meaning.status,
            sendGridJobID: meaning.sendGridJobID,
            error: meaning.error, finishedAt: meaning.finished, jobs: meaning.jobs)
    }

    /// Another try at writing an answer the ledger refused. Returns whether it is written now.
    func writeAgain(_ answer: Unwritten, now t: Date) async -> Bool {
        var segmentLogger = logger
        segmentLogger[metadataKey: "segment"] = "\(answer.segment)"
        do {
            try await write(answer)
        } catch let error as LedgerError where error.code == .notFound || error.code == .invalidState {
            segmentLogger.error(
                "SendGrid's answer cannot be recorded: the attempt is no longer open in the ledger",
                metadata: ["error": "\(error)"])
            unwritten = nil
            statusLock.withLock { published.waitingForLedger = false }
            loaded = false
            return true
        } catch {
            unwritten!.failures += 1
            if unwritten!.failures % 10 == 0 {
                segmentLogger.error(
                    "still cannot record SendGrid's answer in the ledger",
                    metadata: ["error": "\(error)", "tries": "\(unwritten!.failures)"])
            }
            return false
        }
        unwritten = nil
        statusLock.withLock { published.waitingForLedger = false }
        segmentLogger.notice(
            "SendGrid's answer is recorded in the ledger after all; sending resumes",
            metadata: ["outcome": "\(answer.meaning.outcome.rawValue)"])
        await recorded(answer, now: t, logger: segmentLogger)
        // Jobs may have come and gone meanwhile: read the queue again.
        loaded = false
        return true
    }

    /// What follows a recorded answer: the queue learns the attempt, the segment is read again,
    /// then the answer's effects that need it recorded (blocks re-read, a pause, the quota).
    func recorded(_ answer: Unwritten, now t: Date, logger segmentLogger: Logger) async {
        let meaning = answer.meaning
        observer?.attemptFinished(account: account.name, outcome: meaning.outcome, latency: answer.latency)
        queue.record(
            Attempt(
                account: account.name, segment: answer.segment, zone: answer.zone, outcome: meaning.outcome,
                startedAt: answer.startedAt,
                finishedAt: meaning.finished),
            now: t)
        do {
            try await reload(segment: answer.segment, now: t)
            if meaning.readsBlocksAgain { try await reloadBlocks(now: t) }
        } catch {
            segmentLogger.error("cannot re-read the segment from the ledger", metadata: ["error": "\(error)"])
            queue.hold(segment: answer.segment, until: t.addingTimeInterval(30), now: t)
        }
        for effect in meaning.effects {
            switch effect {
            case .pause(let reason):
                queue.pause(reason: reason)
                observer?.accountPaused(account: account.name, reason: reason)
            case .compareQuota(let quota):
                await learnFromQuota(quota, now: t, logger: segmentLogger)
            case .noteError, .learnFromRateLimit:
                break  // carried out when the answer came
            }
        }
    }

    /// The segment under which requests SendGrid counts for the account but refreshd did not make
    /// are recorded (the headers do not say which segment they were for): the nil UUID.
    static let elsewhereSegment = RefreshBody.elsewhereSegment

    /// X-RateLimit headers on an accepted refresh, used like a pre-flight (I5): requests SendGrid
    /// counts today beyond the ledger's are recorded as external (they count for the account's
    /// day), and nothing left blocks the account until its day is over.
    func learnFromQuota(_ quota: QuotaReport, now t: Date, logger: Logger) async {
        do {
            let attempts = try await ledger.attempts(
                since: t.addingTimeInterval(-2 * 86400), account: account.name, segmentID: nil, limit: Int.max
            )
            .map(attempt)
            let daily = RuleEngine.accountBudgets(
                account: account.name, history: attempts, blocks: [], limits: queue.limits, now: t
            )
            .first { $0.rule == .accountDaily }
            let lesson = quota.lesson(ledgerUsed: daily?.used ?? 0, at: t)
            observer?.quotaReported(account: account.name, limit: quota.limit, remaining: quota.remaining)
            guard lesson.requestsElsewhere > 0 || lesson.accountBlockedUntil != nil else { return }
            for _ in 0..<min(lesson.requestsElsewhere, quota.limit) {
                _ = try await ledger.recordExternal(
                    account: account.name, segmentID: Self.elsewhereSegment, timeZone: "UTC", at: t)
            }
            if let until = lesson.accountBlockedUntil {
                try await ledger.addBlock(
                    account: account.name, segmentID: nil, until: until, reason: lesson.reason, now: t)
            }
            logger.notice(
                "SendGrid counts requests today that refreshd did not make; recorded as external",
                metadata: [
                    "elsewhere": "\(lesson.requestsElsewhere)", "reason": "\(lesson.reason)",
                    "blocked_until": "\(lesson.accountBlockedUntil.map(Timestamp.rfc3339) ?? "-")",
                ])
            loaded = false
        } catch {
            logger.error("cannot record what SendGrid's rate-limit headers say", metadata: ["error": "\(error)"])
        }
    }

    /// What an answer means, carried out before it is recorded: the streaks, the log line, the
    /// status line's error and what a 429 teaches (its blocks are written before the answer).
    func carryOut(
        _ meaning: AnswerMeaning, segment: String, zone: ZoneRules, jobs: [StoredJob], logger: Logger
    ) async {
        connectFailures = meaning.connectFailures
        if meaning.endsRateLimitStreak {
            uninformativeRateLimits[segment] = nil
            lastRateLimitedSegment = nil
        }
        if let note = meaning.note {
            logger.log(
                level: Self.level(note.level), "\(note.message)",
                metadata: note.metadata.mapValues { .string($0) })
        } else if meaning.outcome == .accepted {
            logger.info(
                "refresh accepted by SendGrid",
                metadata: [
                    "jobs": "\(jobs.map(\.id))", "time_zone": "\(zone.name)", "status": "\(meaning.status ?? 0)",
                ])
        }
        for effect in meaning.effects {
            switch effect {
            case .noteError(let text): note(error: text)
            case .learnFromRateLimit(let resetHeader):
                await learnFromRateLimit(
                    resetHeader: resetHeader, segment: segment, zone: zone, at: meaning.finished, logger: logger)
            case .pause, .compareQuota: break  // after the answer is recorded
            }
        }
    }

    static func level(_ level: AnswerMeaning.Note.Level) -> Logger.Level {
        switch level {
        case .info: return .info
        case .notice: return .notice
        case .warning: return .warning
        case .error: return .error
        case .critical: return .critical
        }
    }

    /// A 429: what it teaches (RateLimitLesson: the headers, a fresh segment read, the 429s before
    /// it) goes into the ledger as blocks.
    func learnFromRateLimit(
        resetHeader: String?, segment: String, zone: ZoneRules, at t: Date, logger: Logger
    ) async {
        var reading: SegmentReading?
        if let client, let key = account.apiKey, preflight,
            case .success(let read) = await client.readSegment(
                segment: segment, key: key, onBehalfOf: account.onBehalfOf)
        {
            reading = read
        }
        let lesson = RateLimitLesson.learn(
            resetHeader: resetHeader, reading: reading, segment: segment, zone: zone, at: t,
            uninformativeStreak: uninformativeRateLimits[segment] ?? 0,
            previousRateLimitedSegment: lastRateLimitedSegment)
        uninformativeRateLimits[segment] = lesson.uninformativeStreak
        lastRateLimitedSegment = segment
        do {
            try await ledger.addBlock(
                account: account.name, segmentID: segment, until: lesson.segmentBlockedUntil,
                reason: "429: " + lesson.reasons.joined(separator: ", "),
                now: t)
            if let midnight = lesson.accountBlockedUntil {
                try await ledger.addBlock(
                    account: account.name, segmentID: nil, until: midnight,
                    reason: "429: the account's day seems exhausted", now: t)
                logger.warning(
                    "SendGrid answered 429 and the account's day seems used up elsewhere; paused until 00:00 UTC",
                    metadata: ["until": "\(Timestamp.rfc3339(midnight))"])
            }
        } catch {
            logger.error("cannot record a block learned from a 429", metadata: ["error": "\(error)"])
        }
        logger.warning(
            "SendGrid answered 429; the segment is blocked",
            metadata: [
                "until": "\(Timestamp.rfc3339(lesson.segmentBlockedUntil))",
                "reason": "\(lesson.reasons.joined(separator: ", "))",
            ])
    }

    /// What the pre-flight read says against the ledger (Reconciliation), carried out. Returns
    /// whether the ledger changed (the rules must then decide again).
    func reconcile(segment: String, zone: ZoneRules, reading: SegmentReading, at t: Date, logger: Logger) async throws
        -> Bool
    {
        try await ledger.recordUsage(
            account: account.name, segmentID: segment, refreshesUsed: reading.refreshesUsed,
            lastRefreshedAt: reading.lastRefreshedAt,
            observedAt: t)
        let known = try await ledger.history(account: account.name, segmentID: segment, now: t).segmentAttempts.map {
            Reconciliation.Known(
                id: $0.id, outcome: $0.outcome, timeZone: $0.timeZone, startedAt: $0.startedAt,
                finishedAt: $0.finishedAt)
        }
        switch Reconciliation.reconcile(reading: reading, attempts: known, zone: zone, now: t) {
        case .agrees:
            return false
        case .external(let missing, let at):
            for _ in 0..<missing {
                _ = try await ledger.recordExternal(
                    account: account.name, segmentID: segment, timeZone: zone.name, at: at)
            }
            logger.notice(
                "SendGrid counts refreshes today that refreshd did not send (web UI or another tool); recorded as external",
                metadata: [
                    "refreshes_used": "\(reading.refreshesUsed)", "missing": "\(missing)",
                    "at": "\(Timestamp.rfc3339(at))",
                ])
            let external = Attempt(
                account: account.name, segment: segment, zone: zone, outcome: .external, startedAt: at, finishedAt: at)
            for _ in 0..<missing { queue.record(external, now: t) }
        case .confirmed(let ids):
            let sent = try await ledger.confirmRecorded(attemptIDs: ids, now: t)
            logger.notice(
                "pre-flight shows SendGrid recorded earlier unanswered requests; their jobs count as sent",
                metadata: ["attempts": "\(ids)", "jobs": "\(sent.map(\.id))"])
            queue.setAccountHistory(
                try await ledger.attempts(
                    since: t.addingTimeInterval(-2 * 86400), account: account.name, segmentID: nil, limit: Int.max
                ).map(attempt))
        case .unrecorded(let ids):
            let changed = try await ledger.markUnrecorded(attemptIDs: ids)
            logger.info(
                "pre-flight shows SendGrid did not record earlier unanswered requests",
                metadata: ["attempts": "\(changed)"])
            queue.setAccountHistory(
                try await ledger.attempts(
                    since: t.addingTimeInterval(-2 * 86400), account: account.name, segmentID: nil, limit: Int.max
                ).map(attempt))
        }
        try await reload(segment: segment, now: t)
        return true
    }
}
