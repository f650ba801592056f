// What SendGrid's answer to one refresh request means, as a value: the attempt's row, what becomes
// of the jobs it served, and the effects the lane carries out (like SendQueue's steps). The lane
// keeps two streaks between answers (requests not sent in a row, and whether a 429 streak ends);
// they go in and come out here, so every branch is a table test (AnswerMeaningTests).
//
// The reading that cannot cause a 429 wins: an answer that may have reached SendGrid (5xx, a
// timeout after the request was written) counts as `uncertain`; only a failure before a byte was
// written is `not_sent` and free.

import Foundation

/// An answer from SendGrid (any status).
public struct SendGridAnswer: Sendable, Equatable {
    public var status: Int
    /// Header names lower-cased.
    public var headers: [String: String]
    /// At most 64 KiB of the body.
    public var body: String

    public init(status: Int, headers: [String: String] = [:], body: String = "") {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The body on one line, at most 300 characters, for the ledger's error column and the log.
    public var summary: String {
        let flattened = body.replacingOccurrences(of: "\n", with: " ")
        return flattened.isEmpty ? "(no body)" : String(flattened.prefix(300))
    }
}

/// A request that got no answer.
public enum SendGridFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// Failed before the request was written (connection refused, DNS, TLS, connect timeout):
    /// SendGrid cannot have seen it.
    case notSent(String)
    /// Failed after the request was written (timeout, reset): SendGrid may have recorded it.
    case noAnswer(String)

    public var description: String {
        switch self {
        case .notSent(let reason): return "not sent: \(reason)"
        case .noAnswer(let reason): return "no answer: \(reason)"
        }
    }
}

/// What happens to the jobs an attempt served, once its answer is known.
public enum JobDisposition: Sendable, Equatable {
    /// The leader becomes `sent`, the others `coalesced`.
    case sent
    /// All become `failed` with the reason (an `uncertain` outcome adds one to their `tries`).
    case failed(reason: String)
    /// All go back to `queued`, held back until `retryAt` if given; `countsTry` adds one to each
    /// job's `tries` (the request may have reached SendGrid without an answer).
    case requeue(retryAt: Date?, countsTry: Bool)
}

/// What one request's result means for the lane (docs/dispatcher.md, "What each answer does").
public struct AnswerMeaning: Sendable, Equatable {
    /// What the lane does besides recording the attempt, in this order.
    public enum Effect: Sendable, Equatable {
        /// The status line's last error.
        case noteError(String)
        /// A 429: learn what it teaches (RateLimitLesson: the headers, a fresh read, the 429s
        /// before it), record the blocks, then read the blocks again once the answer is recorded.
        case learnFromRateLimit(resetHeader: String?)
        /// The account sends nothing more until a reload (401, 403).
        case pause(reason: String)
        /// X-RateLimit headers on an accepted refresh that describe the daily quota: compared with
        /// the ledger's count like a pre-flight (QuotaReport.lesson).
        case compareQuota(QuotaReport)
    }

    /// A log line for the lane to write (the lane adds the account, segment and jobs).
    public struct Note: Sendable, Equatable {
        public enum Level: String, Sendable, Equatable { case info, notice, warning, error, critical }
        public var level: Level
        public var message: String
        public var metadata: [String: String]

        public init(_ level: Level, _ message: String, metadata: [String: String] = [:]) {
            self.level = level
            self.message = message
            self.metadata = metadata
        }
    }

    public var outcome: AttemptOutcome
    /// The HTTP status, when there was an answer.
    public var status: Int?
    /// SendGrid's `job_id` from an accepted answer's body, at most 100 characters.
    public var sendGridJobID: String?
    /// For the attempt's error column: the body's summary or the transport's reason.
    public var error: String?
    /// The instant the answer came (the attempt's finished_at).
    public var finished: Date
    public var jobs: JobDisposition
    public var effects: [Effect]
    /// Nil when the lane logs nothing of its own (an accepted answer is logged with its jobs).
    public var note: Note?
    /// Requests in a row that failed before being written, after this one (the not-sent backoff).
    public var connectFailures: Int
    /// An accepted answer ends the 429 streaks (RateLimitLesson's inputs) of the lane.
    public var endsRateLimitStreak: Bool

    /// The meaning of `result`, the answer to a request for jobs tried `tries - 1` times before.
    /// - Parameters:
    ///   - tries: this request's number for its jobs (the most any of them was tried, plus one).
    ///   - maxAttempts: after this many unclear answers the jobs fail.
    ///   - connectFailures: the lane's not-sent streak before this request.
    ///   - finished: when the answer (or the failure) came.
    public init(
        _ result: Result<SendGridAnswer, SendGridFailure>, segment: String, tries: Int, maxAttempts: Int,
        connectFailures: Int, finished: Date
    ) {
        self.finished = finished
        self.connectFailures = 0
        endsRateLimitStreak = false
        sendGridJobID = nil
        effects = []
        note = nil
        switch result {
        case .failure(.notSent(let reason)):
            self.connectFailures = connectFailures + 1
            let backoff = Backoff.notSent(failures: self.connectFailures)
            outcome = .notSent
            status = nil
            error = reason
            jobs = .requeue(retryAt: finished.addingTimeInterval(backoff), countsTry: false)
            effects = [.noteError("SendGrid not reachable: \(reason)")]
            note = Note(
                .warning, "cannot reach SendGrid; nothing was sent",
                metadata: ["reason": reason, "retry_in_s": "\(Int(backoff))"])
        case .failure(.noAnswer(let reason)):
            outcome = .uncertain
            status = nil
            error = reason
            jobs = .failed(reason: "")
            effects = [.noteError("SendGrid: \(reason)")]
            retryOrFail(reason: reason, tries: tries, maxAttempts: maxAttempts)
        case .success(let answer):
            status = answer.status
            error = answer.summary
            let summary = answer.summary
            switch AnswerClass(status: answer.status) {
            case .accepted:
                outcome = .accepted
                error = nil
                endsRateLimitStreak = true
                sendGridJobID = Self.jobID(in: answer.body)
                jobs = .sent
                if let quota = QuotaReport(headers: answer.headers) { effects = [.compareQuota(quota)] }
            case .rejected:
                outcome = .rejected
                jobs = .failed(reason: "SendGrid answered \(answer.status): \(summary)")
                effects = [.noteError("SendGrid refused a refresh of \(segment): \(summary)")]
                note = Note(
                    .error, "SendGrid refused the request; the job fails",
                    metadata: ["status": "\(answer.status)", "reason": summary])
            case .unauthorized:
                let reason =
                    "SendGrid refused the API key (401); fix the key, then reload refreshd (systemctl reload refreshd)"
                outcome = .unauthorized
                jobs = .requeue(retryAt: nil, countsTry: false)
                effects = [.noteError(reason), .pause(reason: reason)]
                note = Note(
                    .critical, "account paused: SendGrid refused the API key",
                    metadata: ["status": "401", "fix": "put a valid key in place and reload"])
            case .forbidden:
                let reason =
                    "SendGrid forbids segment refreshes for this account (403: the plan lacks Marketing Campaigns Basic/Advanced, or the key lacks the scope)"
                outcome = .forbidden
                jobs = .requeue(retryAt: nil, countsTry: false)
                effects = [.noteError(reason), .pause(reason: reason)]
                note = Note(
                    .critical, "account paused: SendGrid answered 403", metadata: ["status": "403", "reason": summary])
            case .rateLimited:
                outcome = .rateLimited
                jobs = .requeue(retryAt: nil, countsTry: false)
                effects = [
                    .noteError("SendGrid answered 429 for \(segment)"),
                    .learnFromRateLimit(resetHeader: answer.headers["x-ratelimit-reset"]),
                ]
            case .unclear:
                outcome = .uncertain
                jobs = .failed(reason: "")
                retryOrFail(
                    reason: "SendGrid answered \(answer.status): \(summary)", tries: tries, maxAttempts: maxAttempts)
            }
        }
    }

    /// Whether the lane reads the account's blocks again once the answer is recorded (a 429 added some).
    public var readsBlocksAgain: Bool {
        effects.contains { if case .learnFromRateLimit = $0 { return true } else { return false } }
    }

    /// The host stopped leading the account between the reservation and the request (#14):
    /// nothing was sent; the jobs go back to the queue untried, for the leader to send.
    public static func standDown(_ reason: String, at t: Date) -> AnswerMeaning {
        AnswerMeaning(
            outcome: .notSent, status: nil, sendGridJobID: nil, error: "not sent: \(reason)", finished: t,
            jobs: .requeue(retryAt: nil, countsTry: false), effects: [],
            note: Note(
                .warning, "this host stopped leading the account before sending; nothing was sent",
                metadata: ["reason": reason]),
            connectFailures: 0, endsRateLimitStreak: false)
    }

    /// A dry-run: nothing sent, the jobs count as sent.
    public static func dryRun(at t: Date) -> AnswerMeaning {
        AnswerMeaning(
            outcome: .dryRun, status: nil, sendGridJobID: nil, error: nil, finished: t, jobs: .sent, effects: [],
            note: nil, connectFailures: 0, endsRateLimitStreak: false)
    }

    public init(
        outcome: AttemptOutcome, status: Int?, sendGridJobID: String?, error: String?, finished: Date,
        jobs: JobDisposition, effects: [Effect], note: Note?, connectFailures: Int, endsRateLimitStreak: Bool
    ) {
        self.outcome = outcome
        self.status = status
        self.sendGridJobID = sendGridJobID
        self.error = error
        self.finished = finished
        self.jobs = jobs
        self.effects = effects
        self.note = note
        self.connectFailures = connectFailures
        self.endsRateLimitStreak = endsRateLimitStreak
    }

    /// An answer that may have reached SendGrid: the refresh counts; the jobs go back with a
    /// backoff, or fail once `maxAttempts` requests went unanswered.
    private mutating func retryOrFail(reason: String, tries: Int, maxAttempts: Int) {
        error = reason
        if tries >= maxAttempts {
            jobs = .failed(reason: "no clear answer from SendGrid after \(tries) tries (last: \(reason))")
            note = Note(
                .error, "no clear answer from SendGrid; the job fails",
                metadata: ["tries": "\(tries)", "reason": reason])
            return
        }
        let backoff = Backoff.unclear(tries: tries)
        jobs = .requeue(retryAt: finished.addingTimeInterval(backoff), countsTry: true)
        note = Note(
            .warning, "no clear answer from SendGrid; the refresh counts and the job is requeued",
            metadata: ["tries": "\(tries)", "reason": reason, "retry_in_s": "\(Int(backoff))"])
    }

    /// `job_id` of an accepted answer's JSON body, at most 100 characters (nil when absent).
    static func jobID(in body: String) -> String? {
        struct Accepted: Decodable { var job_id: String? }
        guard let decoded = try? JSONDecoder().decode(Accepted.self, from: Data(body.utf8)) else { return nil }
        return decoded.job_id.map { String($0.prefix(100)) }
    }
}
