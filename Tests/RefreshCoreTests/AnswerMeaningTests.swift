import Foundation
import RefreshCore
import Testing

/// What each answer means (docs/dispatcher.md, "What each answer does"): the attempt's outcome,
/// the jobs' fate, the lane's effects and streaks, one row per kind of answer.
@Suite("What SendGrid's answer means")
struct AnswerMeaningTests {
    static let finished = Date(timeIntervalSince1970: 1_725_790_000)
    static let segment = "0f9f1b9e-5a8d-4c4e-9b61-3d2f0c6a7e11"

    struct Row: CustomTestStringConvertible, Sendable {
        let name: String
        let result: Result<SendGridAnswer, SendGridFailure>
        var tries = 1
        var connectFailures = 0
        let outcome: AttemptOutcome
        let jobs: JobDisposition
        var effects: [AnswerMeaning.Effect] = []
        var level: AnswerMeaning.Note.Level?
        var connectFailuresAfter = 0
        var endsRateLimitStreak = false
        var testDescription: String { name }
    }

    static func answer(_ status: Int, _ body: String = "", _ headers: [String: String] = [:]) -> Result<
        SendGridAnswer, SendGridFailure
    > { .success(SendGridAnswer(status: status, headers: headers, body: body)) }

    static let paused401 =
        "SendGrid refused the API key (401); fix the key, then reload refreshd (systemctl reload refreshd)"
    static let paused403 =
        "SendGrid forbids segment refreshes for this account (403: the plan lacks Marketing Campaigns Basic/Advanced, or the key lacks the scope)"

    static let rows: [Row] = [
        Row(
            name: "202: sent, streaks end", result: answer(202, #"{"job_id":"abc"}"#), connectFailures: 3,
            outcome: .accepted, jobs: .sent, endsRateLimitStreak: true),
        Row(
            name: "202 with daily X-RateLimit headers: compared like a pre-flight",
            result: answer(202, "", ["x-ratelimit-limit": "10", "x-ratelimit-remaining": "4"]),
            outcome: .accepted, jobs: .sent,
            effects: [.compareQuota(QuotaReport(headers: ["x-ratelimit-limit": "10", "x-ratelimit-remaining": "4"])!)],
            endsRateLimitStreak: true),
        Row(
            name: "202 with a generic API rate limit: nothing to compare",
            result: answer(202, "", ["x-ratelimit-limit": "600", "x-ratelimit-remaining": "599"]),
            outcome: .accepted, jobs: .sent, endsRateLimitStreak: true),
        Row(
            name: "404: the job fails", result: answer(404, "not found"), outcome: .rejected,
            jobs: .failed(reason: "SendGrid answered 404: not found"),
            effects: [.noteError("SendGrid refused a refresh of \(segment): not found")], level: .error),
        Row(
            name: "422 (one of the rejected statuses)", result: answer(422, ""), outcome: .rejected,
            jobs: .failed(reason: "SendGrid answered 422: (no body)"),
            effects: [.noteError("SendGrid refused a refresh of \(segment): (no body)")], level: .error),
        Row(
            name: "401: paused, the try not counted", result: answer(401, "bad key"), outcome: .unauthorized,
            jobs: .requeue(retryAt: nil, countsTry: false),
            effects: [.noteError(paused401), .pause(reason: paused401)], level: .critical),
        Row(
            name: "403: paused", result: answer(403), outcome: .forbidden,
            jobs: .requeue(retryAt: nil, countsTry: false),
            effects: [.noteError(paused403), .pause(reason: paused403)], level: .critical),
        Row(
            name: "429: blocks learned with the reset header", result: answer(429, "", ["x-ratelimit-reset": "3600"]),
            outcome: .rateLimited, jobs: .requeue(retryAt: nil, countsTry: false),
            effects: [
                .noteError("SendGrid answered 429 for \(segment)"), .learnFromRateLimit(resetHeader: "3600"),
            ]),
        Row(
            name: "503, first try: counts, requeued after 30 s", result: answer(503, "busy"), outcome: .uncertain,
            jobs: .requeue(retryAt: finished.addingTimeInterval(30), countsTry: true), level: .warning),
        Row(
            name: "503, third try: requeued after 120 s", result: answer(503, "busy"), tries: 3, outcome: .uncertain,
            jobs: .requeue(retryAt: finished.addingTimeInterval(120), countsTry: true), level: .warning),
        Row(
            name: "503 at max_attempts: the job fails", result: answer(503, "busy"), tries: 5, outcome: .uncertain,
            jobs: .failed(reason: "no clear answer from SendGrid after 5 tries (last: SendGrid answered 503: busy)"),
            level: .error),
        Row(
            name: "timeout after the request was written: counts", result: .failure(.noAnswer("timed out")),
            tries: 2, connectFailures: 4, outcome: .uncertain,
            jobs: .requeue(retryAt: finished.addingTimeInterval(60), countsTry: true),
            effects: [.noteError("SendGrid: timed out")], level: .warning),
        Row(
            name: "refused before a byte was written: free, backoff grows with the streak",
            result: .failure(.notSent("connection refused")), connectFailures: 2, outcome: .notSent,
            jobs: .requeue(retryAt: finished.addingTimeInterval(20), countsTry: false),
            effects: [.noteError("SendGrid not reachable: connection refused")], level: .warning,
            connectFailuresAfter: 3),
    ]

    @Test(arguments: rows)
    func meaning(_ row: Row) {
        let meaning = AnswerMeaning(
            row.result, segment: Self.segment, tries: row.tries, maxAttempts: 5,
            connectFailures: row.connectFailures, finished: Self.finished)
        #expect(meaning.outcome == row.outcome)
        #expect(meaning.jobs == row.jobs)
        #expect(meaning.effects == row.effects)
        #expect(meaning.note?.level == row.level)
        #expect(meaning.connectFailures == row.connectFailuresAfter)
        #expect(meaning.endsRateLimitStreak == row.endsRateLimitStreak)
        #expect(meaning.finished == Self.finished)
        #expect(meaning.readsBlocksAgain == (row.outcome == .rateLimited))
        // The ledger's columns: a status when SendGrid answered, an error unless accepted.
        if case .success(let answer) = row.result {
            #expect(meaning.status == answer.status)
        } else {
            #expect(meaning.status == nil)
        }
        #expect((meaning.error == nil) == (row.outcome == .accepted))
    }

    @Test func sendGridJobIDFromTheBody() {
        func jobID(_ body: String) -> String? {
            AnswerMeaning(
                .success(SendGridAnswer(status: 202, body: body)), segment: Self.segment, tries: 1, maxAttempts: 5,
                connectFailures: 0, finished: Self.finished
            ).sendGridJobID
        }
        #expect(jobID(#"{"job_id":"5d9d3c1e"}"#) == "5d9d3c1e")
        #expect(jobID(String(repeating: "x", count: 10)) == nil)
        #expect(jobID(#"{"job_id":42}"#) == nil)
        #expect(jobID(#"{"job_id":"\#(String(repeating: "a", count: 300))"}"#)?.count == 100)
    }

    @Test func dryRunCountsAsSent() {
        let meaning = AnswerMeaning.dryRun(at: Self.finished)
        #expect(meaning.outcome == .dryRun && meaning.jobs == .sent && meaning.effects.isEmpty)
    }

    /// D7: the lead lost between the reservation and the request. Nothing went out: the attempt
    /// does not count (not_sent, I3's "every outcome but not_sent"), the jobs go back untried for
    /// the leader, and no streak or pause follows.
    @Test func standDownSendsNothingAndRequeuesUntried() {
        let meaning = AnswerMeaning.standDown("another host leads", at: Self.finished)
        #expect(meaning.outcome == .notSent && !meaning.outcome.countsTowardAccount)
        #expect(meaning.jobs == .requeue(retryAt: nil, countsTry: false))
        #expect(meaning.effects.isEmpty && meaning.status == nil && meaning.finished == Self.finished)
        #expect(meaning.connectFailures == 0 && !meaning.endsRateLimitStreak)
        #expect(meaning.error?.contains("another host leads") == true)
        #expect(meaning.note?.level == .warning)
    }

    /// Every class of answer has a row above: a new AnswerClass case fails here until it does.
    @Test func everyAnswerClassHasARow() {
        let covered = Set(
            Self.rows.compactMap { row -> AnswerClass? in
                if case .success(let answer) = row.result { return AnswerClass(status: answer.status) }
                return nil
            })
        #expect(covered == Set(AnswerClass.allCases))
    }
}
