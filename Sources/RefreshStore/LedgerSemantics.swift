import Foundation
import RefreshCore

/// What a ledger operation means, whatever the backend stores it in: the states an operation
/// accepts, the checks of an operator's change, and the texts the rows keep. `SQLiteLedger` and
/// `PostgresLedger` both call these, so the two ledgers answer the conformance suite alike.
package enum LedgerSemantics {
    /// Cancel takes queued jobs only.
    package static func checkCancellable(_ job: StoredJob) throws {
        guard job.state == .queued else {
            throw LedgerError(.invalidState, "job \(job.id) is \(job.state.rawValue) and can no longer be cancelled")
        }
    }

    /// Retry takes failed or expired jobs only (R8).
    package static func checkRetryable(_ job: StoredJob) throws {
        guard job.state == .failed || job.state == .expired else {
            throw LedgerError(
                .invalidState, "job \(job.id) is \(job.state.rawValue); only failed or expired jobs are retried")
        }
    }

    /// The fields a queued job has after an operator's change, checked.
    /// - Throws: `.invalidState` (not queued), `.invalidInput` (priority outside -100...100,
    ///   expires_at not after not_before).
    package static func edited(_ job: StoredJob, _ change: JobChange) throws -> (
        priority: Int, notBefore: Date?, expiresAt: Date?
    ) {
        guard job.state == .queued else {
            throw LedgerError(.invalidState, "job \(job.id) is \(job.state.rawValue); only queued jobs can be changed")
        }
        let priority = change.priority ?? job.job.priority
        let notBefore = change.notBefore ?? job.job.notBefore
        let expiresAt = change.expiresAt ?? job.job.expiresAt
        guard (-100...100).contains(priority) else {
            throw LedgerError(.invalidInput, "priority: \(priority) is outside -100...100")
        }
        if let notBefore, let expiresAt, expiresAt <= notBefore {
            throw LedgerError(.invalidInput, "expires_at (\(expiresAt)) must be after not_before (\(notBefore))")
        }
        return (priority, notBefore, expiresAt)
    }

    /// Whether an answer for an attempt now `current` is late (R4: it was made `uncertain` or
    /// `unrecorded` while its request was out; the real answer wins). Any other state but
    /// `reserved` already has its answer.
    /// - Throws: `.invalidState` when the attempt is already answered.
    package static func isLateAnswer(attemptID: Int64, current: String) throws -> Bool {
        let late = current == AttemptOutcome.uncertain.rawValue || current == AttemptOutcome.unrecorded.rawValue
        guard current == AttemptOutcome.reserved.rawValue || late else {
            throw LedgerError(.invalidState, "attempt \(attemptID) is already \(current)")
        }
        return late
    }

    /// The error text an answer leaves on its attempt (bounded; a late answer says so).
    package static func answerText(_ error: String?, lateAfter current: String?) -> String? {
        guard let current else { return boundedErrorText(error) }
        return boundedErrorText(
            [error, "answered after refreshd had marked it \(current)"].compactMap { $0 }.joined(separator: "; "))
    }

    /// A block lifted by hand keeps its row as a record; its reason says when and what it was
    /// (the note first: the bounded text may cut the end).
    package static func liftedReason(_ block: StoredBlock, now: Date) -> String {
        boundedErrorText(
            "lifted by hand at " + Timestamp.rfc3339(now) + " (was until " + Timestamp.rfc3339(block.until) + "); "
                + block.reason) ?? ""
    }

    /// The reason of a job marked sent because a pre-flight showed SendGrid counted it (R5).
    package static let confirmedByPreflight = "SendGrid counted the earlier unanswered request (seen by pre-flight)"
}
