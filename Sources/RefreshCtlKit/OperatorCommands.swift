import ArgumentParser
import Foundation
import Glibc
import RefreshCore
import RefreshWire

/// `refreshctl retry`: failed or expired jobs queued again, one by one or by filter.
struct RetryCommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "retry",
        abstract: "Queue failed or expired jobs again (after fixing a key, a segment id, an outage).",
        discussion: """
            A retried job is the same job queued again: its tries, backoff and reason start afresh, an expired job \\
            loses its passed expires_at, and its earlier attempts stay in the history (refreshctl history). It goes \\
            out at the earliest instant the rules allow, like any queued job.

            By filter: --state failed or expired (default both), narrowed by --segment, --account and --since \\
            (failed or expired at or after that RFC 3339 time); --dry-run lists them without retrying.

            Exit codes: 0 retried (or nothing matched), 4 no such job, 5 the job is not failed or expired.

            Examples:
              refreshctl retry 42 43
              refreshctl retry --state failed --since 2026-12-01T00:00:00Z --dry-run
            """)

    @Argument(help: ArgumentHelp("Job ids.", valueName: "job"))
    var jobs: [String] = []

    @Option(
        help: ArgumentHelp("failed or expired (default: both).", valueName: "state"),
        completion: .list(["failed", "expired"]))
    var state: String?

    @Option(help: ArgumentHelp("Only jobs of this segment.", valueName: "uuid"))
    var segment: String?

    @Option(help: "Only jobs of this account.", completion: Completions.account)
    var account: String?

    @Option(help: ArgumentHelp("Only jobs that failed or expired at or after this RFC 3339 time.", valueName: "time"))
    var since: String?

    @Flag(help: "List what would be retried; change nothing.")
    var dryRun = false

    @OptionGroup var options: DaemonOptions

    func validate() throws {
        let filtered = state != nil || segment != nil || account != nil || since != nil || dryRun
        if !jobs.isEmpty, filtered {
            throw ValidationError("give job ids, or a filter (--state, --segment, --account, --since), not both")
        }
        if jobs.isEmpty, !filtered { throw ValidationError("give job ids, or a filter such as --state failed") }
        if let state, !["failed", "expired"].contains(state) {
            throw ValidationError("--state: only failed or expired jobs can be retried")
        }
        if let since, Timestamp.parseRFC3339(since) == nil {
            throw ValidationError("--since \"\(since)\" is not an RFC 3339 time")
        }
    }

    mutating func run(output: OutputSink) throws {
        let client = try options.client()
        if jobs.isEmpty {
            let filter = RetryFilterBody(
                state: state.flatMap(JobState.init(rawValue:)), account: account, segment: segment, since: since,
                dryRun: dryRun)
            let answer = try client.call(.retryJobs, body: try ControlClient.json(filter))
            if options.json {
                output.line(answer.body.trimmingCharacters(in: .whitespacesAndNewlines))
            } else {
                bulkSummary(try answer.decode(BulkAnswer.self), verb: dryRun ? "would retry" : "retried", into: output)
            }
            return
        }
        for job in jobs {
            guard let id = Int64(job), id > 0 else {
                throw CommandFailure("\"\(job)\" is not a job id (a positive integer)", exit: .usage)
            }
            let answer = try client.call(.retryJob, id: "\(id)")
            if options.json {
                output.line(answer.body.trimmingCharacters(in: .whitespacesAndNewlines))
            } else {
                let stored = try answer.decode(JobEnvelope.self).job
                output.line("job \(stored.id) queued again (segment \(Human.text(stored.segmentID)))")
            }
        }
    }
}

/// `refreshctl edit`: a queued job's priority and times.
struct EditCommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "edit",
        abstract: "Change a queued job's priority, not_before or expires_at.",
        discussion: """
            Only queued jobs can be changed. "none" clears --not-before or --expires-at. The job keeps its \\
            idempotency key and the digest of what was submitted, so the submitter sending the same job again \\
            is still a no-op.

            Exit codes: 0 changed, 2 invalid value (expires_at must be after not_before), 4 no such job, 5 the job \\
            is not queued.

            Examples:
              refreshctl edit 42 --priority 50
              refreshctl edit 42 --not-before 2026-12-02T06:00:00Z --expires-at none
            """)

    @Argument(help: "The job id.", completion: Completions.queuedJob)
    var job: String

    @Option(help: "Higher goes first, -100...100.")
    var priority: Int?

    @Option(
        name: .customLong("not-before"),
        help: ArgumentHelp("Do not send before this RFC 3339 time (none: no such bound).", valueName: "time"))
    var notBefore: String?

    @Option(
        name: .customLong("expires-at"),
        help: ArgumentHelp("Give up if not sent by this RFC 3339 time (none: never).", valueName: "time"))
    var expiresAt: String?

    @OptionGroup var options: DaemonOptions

    func validate() throws {
        if priority == nil, notBefore == nil, expiresAt == nil {
            throw ValidationError("nothing to change: give --priority, --not-before or --expires-at")
        }
        if let priority, !(-100...100).contains(priority) {
            throw ValidationError("--priority \(priority) is outside -100...100")
        }
        for (flag, value) in [("--not-before", notBefore), ("--expires-at", expiresAt)] {
            if let value, value != "none", Timestamp.parseRFC3339(value) == nil {
                throw ValidationError("\(flag) \"\(value)\" is not an RFC 3339 time (or none)")
            }
        }
    }

    mutating func run(output: OutputSink) throws {
        guard let id = Int64(job), id > 0 else {
            throw CommandFailure("\"\(job)\" is not a job id (a positive integer)", exit: .usage)
        }
        func time(_ text: String?) -> JobEditBody.Time? { text.map { $0 == "none" ? .clear : .set($0) } }
        let change = JobEditBody(priority: priority, notBefore: time(notBefore), expiresAt: time(expiresAt))
        let answer = try options.client().call(.editJob, id: "\(id)", body: try ControlClient.json(change))
        if options.json {
            output.line(answer.body.trimmingCharacters(in: .whitespacesAndNewlines))
            return
        }
        let stored = try answer.decode(JobEnvelope.self).job
        output.line(
            "job \(stored.id): priority \(stored.priority), not_before \(Human.text(stored.notBefore)), "
                + "expires_at \(Human.text(stored.expiresAt))")
    }
}

/// The name of who runs refreshctl (recorded with a hold): the sudo caller, else the user.
func invokingUser() -> String {
    let environment = ProcessInfo.processInfo.environment
    if let user = environment["SUDO_USER"], !user.isEmpty { return user }
    if let entry = getpwuid(getuid()), let name = entry.pointee.pw_name { return String(cString: name) }
    return environment["USER"] ?? "uid \(getuid())"
}

/// `refreshctl hold`: nothing is sent for an account, or one segment, until released.
struct HoldCommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "hold",
        abstract: "Hold an account (or one segment) while you fix something: nothing is sent for it until released.",
        discussion: """
            Jobs keep arriving and stay queued; the plan shows them as held, with who, since when and why; so do \
            refreshctl status and budget, the status line (ON HOLD) and the metric refreshd_holds. A hold is kept in \
            the ledger: it survives restarts. Holding the same scope again answers the hold in force.

            Exit codes: 0 held, 2 unknown account or bad segment id.

            Examples:
              refreshctl hold --account default --reason "rotating the API key"
              refreshctl hold --account default --segment 0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01 --reason "segment being rebuilt"
            """)

    @Option(help: "The account to hold.", completion: Completions.account)
    var account: String

    @Option(help: ArgumentHelp("Only this segment of the account.", valueName: "uuid"))
    var segment: String?

    @Option(help: "Why: shown wherever the hold is (at most 1 KiB).")
    var reason: String

    @OptionGroup var options: DaemonOptions

    mutating func run(output: OutputSink) throws {
        let request = NewHoldBody(account: account, segment: segment, reason: reason, who: invokingUser())
        let answer = try options.client().call(.addHold, body: try ControlClient.json(request))
        if options.json {
            output.line(answer.body.trimmingCharacters(in: .whitespacesAndNewlines))
            return
        }
        let hold = try answer.decode(HoldEnvelope.self).hold
        output.line(
            (answer.status == 201 ? "held" : "already held") + " (hold \(hold.id)): "
                + (hold.segmentID.map { "segment \($0) of " } ?? "") + "account \(Human.text(hold.account))")
    }
}

/// `refreshctl release`: a hold ends; its jobs are planned and sent again.
struct ReleaseCommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "release",
        abstract: "Release a hold (by id, or by account and segment): its jobs go out again.",
        discussion: """
            Exit codes: 0 released, 4 no such hold in force.

            Examples:
              refreshctl release --account default
              refreshctl release 3
            """)

    @Argument(help: ArgumentHelp("The hold id (refreshctl status lists holds).", valueName: "hold"))
    var hold: String?

    @Option(help: "The held account.", completion: Completions.account)
    var account: String?

    @Option(
        help: ArgumentHelp("The held segment of the account (without it: the account's own hold).", valueName: "uuid"))
    var segment: String?

    @OptionGroup var options: DaemonOptions

    func validate() throws {
        if hold == nil, account == nil {
            throw ValidationError("give a hold id, or --account (and --segment for a segment's hold)")
        }
        if hold != nil, account != nil || segment != nil {
            throw ValidationError("give a hold id, or --account/--segment, not both")
        }
    }

    mutating func run(output: OutputSink) throws {
        let client = try options.client()
        var id = hold ?? ""
        if let account {
            let holds = try client.call(.holds, query: [("account", account)])
            let wanted = segment?.lowercased()
            guard let match = try holds.decode(HoldsAnswer.self).holds.first(where: { $0.segmentID == wanted }) else {
                throw CommandFailure(
                    "no hold in force on " + (segment.map { "segment \($0) of " } ?? "") + "account \(account)",
                    exit: .notFound)
            }
            id = String(match.id)
        }
        let answer = try client.call(.releaseHold, id: id)
        if options.json {
            output.line(answer.body.trimmingCharacters(in: .whitespacesAndNewlines))
            return
        }
        let released = try answer.decode(HoldEnvelope.self).hold
        output.line(
            "released hold \(released.id) on " + (released.segmentID.map { "segment \($0) of " } ?? "")
                + "account \(Human.text(released.account))")
    }
}
