import ArgumentParser
import Foundation
import RefreshCore
import RefreshViews
import RefreshWire
import TZData

/// Options every command that talks to the daemon takes.
struct DaemonOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "refreshd's control socket (default: $REFRESHD_SOCKET, the configured socket, or /run/refreshd/refreshd.sock).",
            valueName: "path"), completion: .file())
    var socket: String?

    @Option(
        help: ArgumentHelp("refreshd's config file, to find the socket.", valueName: "file"),
        completion: .file(extensions: ["toml"]))
    var config: String?

    @Flag(help: "Print the daemon's JSON answer instead of a table.")
    var json = false

    func client() throws -> ControlClient { try ControlClient.resolve(socket: socket, config: config) }
}

/// Prints the answer as JSON, or decodes it as `Body` and calls `human`.
private func present<Body: Decodable>(
    _ answer: ControlAnswer, as type: Body.Type, json: Bool, output: OutputSink, human: (Body) throws -> Void
) throws {
    if json {
        output.line(answer.body.trimmingCharacters(in: .whitespacesAndNewlines))
    } else {
        try human(try answer.decode(Body.self))
    }
}

let sharedZones: ZoneInfoDirectory? = try? hostZoneDirectory()

/// `refreshctl budget`.
struct BudgetCommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "budget",
        abstract: "How many refreshes are left: per account, or for one segment.",
        discussion: """
            Without a segment: every account's requests used today (UTC), its limit, what is left, when it resets, \
            whether it is paused and why, and when its next refresh is expected.

            With a segment: what is left today in the segment's zone and for the account, and the earliest instant \
            a refresh of it may go out, with the rule that holds it back. --time-zone is needed for a segment \
            refreshd has never seen (otherwise the zone of its latest job or refresh is used).

            With --all: every known segment (a queued job or a refresh in the last 4 days) in one table: what is \
            left today for it, and when its next refresh may go out (--account narrows it to one account).

            Examples:
              refreshctl budget
              refreshctl budget --all
              refreshctl budget 0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01 --time-zone America/Chicago
              refreshctl budget 0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01 --json
            """)

    @Argument(help: ArgumentHelp("A segment's UUID.", valueName: "segment"))
    var segment: String?

    @Option(name: .customLong("time-zone"), help: "The segment's IANA time zone.", completion: Completions.timeZone)
    var timeZone: String?

    @Option(help: "The account (default: default).", completion: Completions.account)
    var account: String?

    @Flag(help: "Every known segment's budget in one table.")
    var all = false

    @OptionGroup var options: DaemonOptions

    func validate() throws {
        if all, segment != nil || timeZone != nil {
            throw ValidationError("--all lists every segment: give no segment and no --time-zone")
        }
    }

    mutating func run(output: OutputSink) throws {
        let client = try options.client()
        if all {
            let answer = try client.call(.segments, query: [("account", account)])
            try present(answer, as: SegmentsAnswer.self, json: options.json, output: output) { body in
                let rows = body.segments.map { row -> [String] in
                    let zone = Human.text(row.timeZone)
                    let next: String
                    if let paused = row.pausedReason {
                        next = "paused: " + Human.text(paused)
                    } else if row.allowedNow {
                        next = "now"
                    } else if let earliest = row.earliest {
                        next =
                            "\(Human.local(earliest, zone: row.timeZone, zones: sharedZones)) (\(Human.relative(earliest, now: body.now))), "
                            + row.binding.map(\.rawValue).joined(separator: ", ")
                    } else {
                        next = "never (a limit is 0)"
                    }
                    return [
                        Human.text(row.segmentID), zone, Human.text(row.account), "\(row.segmentRemainingToday)", next,
                    ]
                }
                Human.table(["SEGMENT", "ZONE", "ACCOUNT", "LEFT TODAY", "NEXT ALLOWED (LOCAL)"], rows, into: output)
            }
            return
        }
        guard let segment else {
            let answer = try client.call(.budget)
            try present(answer, as: BudgetAnswer.self, json: options.json, output: output) { body in
                let now = body.now
                let rows = body.accounts.map { account -> [String] in
                    [
                        Human.text(account.account), "\(account.remaining) of \(account.limit)",
                        account.resetsAt.map { "\(Timestamp.rfc3339($0)) (\(Human.relative($0, now: now)))" } ?? "-",
                        "\(account.queued)", account.nextSendAt.map { Human.relative($0, now: now) } ?? "-",
                        (account.paused ? "paused: " + Human.text(account.pausedReason) : "")
                            + (account.dryRun ? "dry-run" : ""),
                    ]
                }
                Human.table(
                    ["ACCOUNT", "LEFT TODAY", "RESETS (UTC)", "QUEUED", "NEXT SEND", "NOTE"], rows, into: output)
            }
            return
        }
        let answer = try client.call(
            .segmentBudget, id: segment, query: [("time_zone", timeZone), ("account", account)])
        try present(answer, as: SegmentBudgetBody.self, json: options.json, output: output) { body in
            let zone = Human.text(body.timeZone)
            func when(_ date: Date) -> String {
                "\(Timestamp.rfc3339(date)) (\(Human.local(date, zone: body.timeZone, zones: sharedZones)) \(zone), \(Human.relative(date, now: body.now)))"
            }
            output.line("segment \(Human.text(body.segmentID))  account \(Human.text(body.account))  zone \(zone)")
            if let paused = body.pausedReason {
                output.line("the account is paused: \(Human.text(paused))")
            } else if body.allowedNow {
                output.line("a refresh may go out now")
            } else if let earliest = body.earliest {
                output.line(
                    "next refresh not before \(when(earliest)), held by \(body.binding.map(\.rawValue).joined(separator: ", "))"
                )
            } else {
                output.line("no refresh can go out under the configured limits (a limit is 0)")
            }
            output.line(
                "left today: \(body.segmentRemainingToday) for the segment, \(body.accountRemaining) for the account")
            output.line("")
            let rows = body.rules.map { rule in
                [
                    rule.rule.rawValue, "\(rule.used)", "\(rule.limit)", "\(rule.remaining)",
                    rule.resetsAt.map(when) ?? "-",
                ]
            }
            Human.table(["RULE", "USED", "LIMIT", "LEFT", "RESETS"], rows, into: output)
        }
    }
}

/// `refreshctl jobs`.
struct JobsCommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "jobs",
        abstract: "List jobs (oldest first), optionally by state or segment.",
        discussion: """
            States: \(JobState.allCases.map(\.rawValue).joined(separator: ", ")). A page holds --limit jobs; \
            the last line says how to get the next one.

            Examples:
              refreshctl jobs --state queued
              refreshctl jobs --segment 0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01 --json
            """)

    @Option(help: "Only jobs in this state.")
    var state: String?

    @Option(help: ArgumentHelp("Only jobs of this segment.", valueName: "uuid"))
    var segment: String?

    @Option(help: "At most this many (1...1000, default 50).")
    var limit: Int = 50

    @Option(help: "Start after this job id (the cursor a previous page printed).")
    var cursor: String?

    @OptionGroup var options: DaemonOptions

    mutating func run(output: OutputSink) throws {
        let answer = try options.client().call(
            .jobs, query: [("limit", "\(limit)"), ("state", state), ("segment", segment), ("cursor", cursor)])
        try present(answer, as: JobsPage.self, json: options.json, output: output) { page in
            let rows = page.jobs.map { job in
                [
                    "\(job.id)", job.state.rawValue, Human.text(job.segmentID), Human.text(job.timeZone),
                    "\(job.priority)", Human.text(job.account), Human.text(job.createdAt),
                    Human.text(job.reason ?? job.note),
                ]
            }
            Human.table(
                ["ID", "STATE", "SEGMENT", "ZONE", "PRIO", "ACCOUNT", "CREATED (UTC)", "NOTE / REASON"], rows,
                into: output)
            if let next = page.nextCursor { output.line("more: refreshctl jobs --cursor \(next)") }
        }
    }
}

/// `refreshctl show`.
struct ShowCommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show one job, and when it is expected to go out.",
        discussion: "Example:\n  refreshctl show 42")

    @Argument(help: "The job id.", completion: Completions.queuedJob)
    var job: String

    @OptionGroup var options: DaemonOptions

    mutating func run(output: OutputSink) throws {
        let client = try options.client()
        let answer = try client.call(.job, id: job)
        try present(answer, as: JobAnswer.self, json: options.json, output: output) { answer in
            let job = answer.job
            let fields: [(String, String)] = [
                ("id", "\(job.id)"), ("state", job.state.rawValue), ("account", Human.text(job.account)),
                ("segment_id", Human.text(job.segmentID)), ("time_zone", Human.text(job.timeZone)),
                ("priority", "\(job.priority)"), ("source", Human.text(job.source)),
                ("idempotency_key", Human.text(job.idempotencyKey)), ("not_before", Human.text(job.notBefore)),
                ("expires_at", Human.text(job.expiresAt)), ("note", Human.text(job.note)), ("tries", "\(job.tries)"),
                ("retry_at", Human.text(job.retryAt)), ("attempt_id", Human.text(job.attemptID)),
                ("reason", Human.text(job.reason)), ("created_at", Human.text(job.createdAt)),
                ("updated_at", Human.text(job.updatedAt)),
            ]
            for (key, value) in fields { output.line(key.padding(toLength: 16, withPad: " ", startingAt: 0) + value) }
            if let held = job.heldReason {
                output.line("HELD".padding(toLength: 16, withPad: " ", startingAt: 0) + Human.text(held))
            }
            if job.state == .queued, let fate = answer.forecast {
                let expected = "expected".padding(toLength: 16, withPad: " ", startingAt: 0)
                if let at = fate.at {
                    let zone = job.timeZone
                    let now = try client.call(.plan).decode(PlanAnswer.self).now
                    output.line(
                        expected
                            + "\(fate.fate.rawValue) at \(Timestamp.rfc3339(at)) (\(Human.local(at, zone: zone, zones: sharedZones)) \(Human.text(zone)), \(Human.relative(at, now: now)))"
                    )
                } else {
                    output.line(expected + fate.fate.rawValue)
                }
            }
        }
    }
}

/// `refreshctl cancel`.
struct CancelCommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "cancel",
        abstract: "Cancel jobs that have not been sent: one by id, or every queued job of a segment or account.",
        discussion: """
            In bulk, --segment and/or --account choose the queued jobs (one of them is required: never the whole \
            queue by accident); --dry-run lists them without cancelling. The count is printed.

            Exit codes: 0 cancelled (or nothing matched), 4 no such job, 5 the job was already sent or finished.

            Examples:
              refreshctl cancel 42
              refreshctl cancel --segment 0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01 --dry-run
              refreshctl cancel --state queued --account emea
            """)

    @Argument(help: "The job id.", completion: Completions.queuedJob)
    var job: String?

    @Option(help: ArgumentHelp("Every queued job of this segment.", valueName: "uuid"))
    var segment: String?

    @Option(help: "Every queued job of this account.", completion: Completions.account)
    var account: String?

    @Option(help: ArgumentHelp("Which jobs (only queued ones can be cancelled).", valueName: "queued"))
    var state: String?

    @Flag(help: "List what would be cancelled; change nothing.")
    var dryRun = false

    @OptionGroup var options: DaemonOptions

    func validate() throws {
        let bulk = segment != nil || account != nil || state != nil || dryRun
        if job != nil, bulk {
            throw ValidationError("give a job id, or --segment/--account for a bulk cancel, not both")
        }
        if job == nil, segment == nil, account == nil {
            throw ValidationError("give a job id, or --segment and/or --account")
        }
        if let state, state != "queued" { throw ValidationError("--state: only queued jobs can be cancelled") }
    }

    mutating func run(output: OutputSink) throws {
        let client = try options.client()
        guard let job else {
            let filter = CancelFilterBody(account: account, segment: segment, dryRun: dryRun)
            let answer = try client.call(.cancelJobs, body: try ControlClient.json(filter))
            try present(answer, as: BulkAnswer.self, json: options.json, output: output) { body in
                bulkSummary(body, verb: dryRun ? "would cancel" : "cancelled", into: output)
            }
            return
        }
        let answer = try client.call(.cancelJob, id: job)
        try present(answer, as: JobEnvelope.self, json: options.json, output: output) { answer in
            output.line("cancelled job \(answer.job.id) (segment \(Human.text(answer.job.segmentID)))")
        }
    }
}

/// "cancelled 3 jobs", then one line per job.
func bulkSummary(_ body: BulkAnswer, verb: String, into output: OutputSink) {
    output.line("\(verb) \(body.jobs.count) job\(body.jobs.count == 1 ? "" : "s")")
    for job in body.jobs {
        output.line(
            "  \(job.id)  \(job.state.rawValue)  \(Human.text(job.segmentID))  \(Human.text(job.account))")
    }
}

/// `refreshctl plan`.
struct PlanCommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "plan", abstract: "The forecast: when each queued job is expected to go out, and why then.",
        discussion: """
            Each line is one refresh; the jobs it serves are listed (the first leads, the others are coalesced). \
            WHY names what holds it until then: \
            \(PlanReason.allCases.map { "\($0.rawValue) (\($0.meaning))" }.joined(separator: ", ")). \
            The forecast assumes every send is accepted.

            What if: --with-job FILE (or - for standard input), or the job flags (--segment, --time-zone, ...), shows \
            the forecast as if that job were queued now, without queueing it (its id shows as -1).

            Timeline: --timeline draws the next --hours (48) across the terminal, a quarter of that behind now: one \
            row per account (its UTC day) and per segment (its local midnights in every zone it is sent with), \
            the refreshes made, the planned sends with their job counts, and what holds them (the interval rule, \
            a used day, a learned block, a hold); below, each UTC day's ten slots, used and planned. --account and \
            --segment (repeatable) choose the rows. Colour on a terminal unless NO_COLOR is set; --ascii for \
            plain ASCII.

            Examples:
              refreshctl plan --limit 20
              refreshctl plan --segment 0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01 --time-zone America/Chicago
              refreshctl plan --timeline --hours 24 --account default
            """)

    @Flag(help: "Draw the plan and the refreshes made as a timeline.")
    var timeline = false

    @Option(help: "With --timeline: how many hours ahead to draw, 1-336 (default 48).")
    var hours: Int = 48

    @Flag(help: "With --timeline: plain ASCII, no colour.")
    var ascii = false

    @Option(help: "With --timeline: the width in columns (default: the terminal's, else $COLUMNS, else 100).")
    var width: Int?

    @Option(help: "Show at most this many refreshes (default 50).")
    var limit: Int = 50

    @Option(
        name: .customLong("with-job"),
        help: ArgumentHelp("A job file (or -) to plan as if queued now; nothing is queued.", valueName: "file"))
    var withJob: String?

    @OptionGroup var job: JobFlags

    @OptionGroup var options: DaemonOptions

    func validate() throws {
        guard (1...336).contains(hours) else { throw ValidationError("--hours is 1 to 336 (two weeks)") }
        if let width, width < 40 { throw ValidationError("--width is at least 40 columns") }
        if timeline {
            guard withJob == nil, job.timeZone == nil, job.id == nil, job.priority == nil, job.notBefore == nil,
                job.expiresAt == nil, job.note == nil
            else {
                throw ValidationError(
                    "--timeline draws the queue as it is: give only --account, --segment, --hours, --ascii, --width")
            }
            guard !options.json else {
                throw ValidationError("--timeline draws; for the data give --json without it (or GET /v1/plan)")
            }
        } else if ascii || width != nil || hours != 48 {
            throw ValidationError("--ascii, --width and --hours go with --timeline")
        }
    }

    mutating func run(output: OutputSink) throws {
        let client = try options.client()
        if timeline { return try drawTimeline(client: client, output: output) }
        var candidate = false
        let answer: ControlAnswer
        if withJob != nil || !job.isEmpty {
            let bytes = try job.bytes(file: withJob)
            answer = try client.call(.whatIf, body: "{\"jobs\":[" + String(decoding: bytes, as: UTF8.self) + "]}")
            candidate = true
        } else {
            answer = try client.call(.plan)
        }
        let limit = self.limit
        try present(answer, as: PlanAnswer.self, json: options.json, output: output) { body in
            let now = body.now
            if candidate, let fate = body.jobs.first(where: { $0.id == -1 }) {
                let at = fate.at
                let send = body.sends.first { $0.jobs.contains(-1) }
                let zone = send?.timeZone ?? "-"
                switch fate.fate {
                case .send, .coalesce:
                    let reasons = send?.reasons.map(\.rawValue) ?? []
                    output.line(
                        "this job would go out at \(at.map(Timestamp.rfc3339) ?? "-") (\(at.map { Human.local($0, zone: zone, zones: sharedZones) } ?? "-") \(Human.text(zone)), "
                            + "\(at.map { Human.relative($0, now: now) } ?? "-"))"
                            + (reasons.isEmpty ? "" : ", held by " + reasons.joined(separator: ", ")))
                default:
                    output.line(
                        "this job would not go out: \(fate.fate.rawValue)\(at.map { " at " + Timestamp.rfc3339($0) } ?? "")"
                    )
                }
                output.line("(nothing was queued; the whole forecast with it follows, the job as -1)")
                output.line("")
            }
            let rows = body.sends.prefix(limit).map { send -> [String] in
                let zone = Human.text(send.timeZone)
                return [
                    Timestamp.rfc3339(send.at),
                    "\(Human.local(send.at, zone: send.timeZone, zones: sharedZones)) \(zone)",
                    Human.relative(send.at, now: now), Human.text(send.segmentID),
                    send.jobs.map(String.init).joined(separator: ","),
                    send.reasons.map(\.rawValue).joined(separator: ",").ifEmpty("-"),
                ]
            }
            Human.table(["WHEN (UTC)", "LOCAL", "IN", "SEGMENT", "JOBS", "WHY"], rows, into: output)
            if body.sends.count > limit {
                output.line("... and \(body.sends.count - limit) more (--limit, or --json for all)")
            }
            for job in body.jobs where job.fate.isStuck {
                output.line(
                    "job \(job.id): \(job.fate.rawValue)\(job.at.map { " at " + Timestamp.rfc3339($0) } ?? "")"
                        + (job.reason.map { " (" + Human.text($0) + ")" } ?? ""))
            }
        }
    }
}

extension PlanCommand {
    /// --timeline: the five bodies the drawing needs, decoded as the page decodes them.
    func drawTimeline(client: ControlClient, output: OutputSink) throws {
        let segments = try job.segment.map { text -> String in
            guard let id = JobFile.normalizedUUID(text) else {
                throw CommandFailure("--segment: \"\(text)\" is not a segment id (a UUID)", exit: .usage)
            }
            return id
        }
        let since = Timestamp.rfc3339(Date().addingTimeInterval(-Double(hours) * 900 - 2 * 86400))
        let plan = try client.call(.plan)
        let view: BudgetView
        do {
            view = try BudgetView(
                plan: Data(plan.body.utf8), budget: Data(try client.call(.budget).body.utf8),
                refreshes: Data(
                    try client.call(.refreshes, query: [("since", "\(since)"), ("limit", "1000")]).body.utf8),
                blocks: Data(try client.call(.blocks).body.utf8), holds: Data(try client.call(.holds).body.utf8))
        } catch let failure as CommandFailure {
            throw failure
        } catch {
            throw CommandFailure("refreshd's answer could not be read: \(error)", exit: .error)
        }
        if let account = job.account, !view.accounts.contains(where: { $0.account == account }) {
            throw CommandFailure(
                "no account \"\(account)\" (configured: \(view.accounts.map(\.account).joined(separator: ", ")))",
                exit: .notFound)
        }
        let drawing = Timeline(
            view, hours: hours, accounts: Set(job.account.map { [$0] } ?? []), segments: Set(segments),
            zone: { try? sharedZones?.rules(for: $0) })
        let terminal = isatty(STDOUT_FILENO) == 1
        let environment = ProcessInfo.processInfo.environment
        let colour =
            terminal && !ascii && (environment["NO_COLOR"] ?? "").isEmpty && environment["TERM"] != "dumb"
        let text = TimelineText(width: width ?? Terminal.columns(), ascii: ascii, color: colour)
        for line in text.render(drawing) { output.drawing(line) }
    }
}

/// The terminal refreshctl writes to.
enum Terminal {
    /// Its width: the terminal's (TIOCGWINSZ), else $COLUMNS, else 100.
    static func columns() -> Int {
        var size = winsize()
        if isatty(STDOUT_FILENO) == 1, ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col >= 40 {
            return Int(size.ws_col)
        }
        if let text = ProcessInfo.processInfo.environment["COLUMNS"], let value = Int(text), value >= 40 {
            return value
        }
        return 100
    }
}

/// `refreshctl history`.
struct HistoryCommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "Refreshes refreshd sent (or learned of), newest first, with what SendGrid answered.",
        discussion: """
            Outcomes: \(AttemptOutcome.allCases.map { "\($0.rawValue) (\($0.meaning))" }.joined(separator: ", ")).

            Example:
              refreshctl history --since 2026-11-25T00:00:00Z --segment 0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01
            """)

    @Option(
        help: ArgumentHelp(
            "Only refreshes started at or after this RFC 3339 time (default: 7 days ago).", valueName: "time"))
    var since: String?

    @Option(help: ArgumentHelp("Only this segment.", valueName: "uuid"))
    var segment: String?

    @Option(help: "Only this account.", completion: Completions.account)
    var account: String?

    @Option(help: "At most this many (1...1000, default 50).")
    var limit: Int = 50

    @OptionGroup var options: DaemonOptions

    mutating func run(output: OutputSink) throws {
        let answer = try options.client().call(
            .refreshes, query: [("limit", "\(limit)"), ("since", since), ("segment", segment), ("account", account)])
        try present(answer, as: RefreshesAnswer.self, json: options.json, output: output) { body in
            let rows = body.refreshes.map { attempt in
                [
                    Human.text(attempt.startedAt), attempt.outcome.rawValue, Human.text(attempt.httpStatus),
                    Human.text(attempt.segmentID), Human.text(attempt.timeZone), Human.text(attempt.account),
                    (attempt.countsForSegment ? "segment+" : "") + (attempt.countsForAccount ? "account" : "-"),
                ]
            }
            Human.table(
                ["STARTED (UTC)", "OUTCOME", "HTTP", "SEGMENT", "ZONE", "ACCOUNT", "COUNTS FOR"], rows, into: output)
        }
    }
}

/// `refreshctl blocks`.
struct BlocksCommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "blocks", abstract: "Blocks learned from SendGrid's 429s that are still in force.",
        discussion: """
            When SendGrid answers 429, refreshd blocks the segment (and, when the account's day seems used up \
            elsewhere, the whole account until 00:00 UTC) until the instant SendGrid's headers or a fresh read \
            of the segment name. Each block is listed with its id, what it covers, until when and why. \
            `refreshctl unblock ID` lifts one by hand.

            Example:
              refreshctl blocks --account default
            """)

    @Option(help: "Only this account.", completion: Completions.account)
    var account: String?

    @OptionGroup var options: DaemonOptions

    mutating func run(output: OutputSink) throws {
        let answer = try options.client().call(.blocks, query: [("account", account)])
        try present(answer, as: BlocksAnswer.self, json: options.json, output: output) { body in
            guard !body.blocks.isEmpty else {
                output.line("no blocks in force")
                return
            }
            let rows = body.blocks.map { block in
                [
                    "\(block.id)", Human.text(block.account),
                    block.scope == .account ? "(whole account)" : Human.text(block.segmentID),
                    Human.text(block.until), Human.relative(block.until, now: body.now), Human.text(block.reason),
                ]
            }
            Human.table(["ID", "ACCOUNT", "SEGMENT", "UNTIL (UTC)", "ENDS", "WHY"], rows, into: output)
        }
    }
}

/// `refreshctl unblock`.
struct UnblockCommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "unblock", abstract: "Lift a block learned from SendGrid by hand.",
        discussion: """
            The block ends now (its record stays, with a note) and the dispatcher looks at the queue again; \
            the rules' safety margin still applies, so a held job goes out about a minute later at the \
            earliest. This is your call: the block came from a 429, and lifting it early may earn another one \
            (which refreshd then learns from again). Use it when you know better, for instance after another \
            tool that used up the account's day was stopped and SendGrid support reset the count.

            Exit codes: 0 lifted, 4 no such block in force.

            Example:
              refreshctl unblock 7
            """)

    @Argument(help: "The block id (refreshctl blocks lists them).")
    var block: String

    @OptionGroup var options: DaemonOptions

    mutating func run(output: OutputSink) throws {
        let answer = try options.client().call(.liftBlock, id: block)
        try present(answer, as: BlockEnvelope.self, json: options.json, output: output) { body in
            let block = body.block
            let what =
                block.scope == .account
                ? "account \(Human.text(block.account))" : "segment \(Human.text(block.segmentID))"
            output.line("lifted block \(block.id) on \(what)")
        }
    }
}

/// `refreshctl status`.
struct StatusCommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Is refreshd running, and how is it doing?",
        discussion: """
            Version, tz data, dry-run, uptime, queue, spool, paused accounts, last error.

            Exit code 3 when the daemon is not reachable.
            """)

    @OptionGroup var options: DaemonOptions

    mutating func run(output: OutputSink) throws {
        let answer = try options.client().call(.status)
        try present(answer, as: StatusAnswer.self, json: options.json, output: output) { body in
            let now = body.now
            let uptime = Double(body.uptimeSeconds)
            output.line(
                "refreshd \(Human.text(body.version)), running for \(Human.relative(now.addingTimeInterval(uptime), now: now).replacingOccurrences(of: "in ", with: ""))"
            )
            output.line("tz data \(Human.text(body.tzdataVersion)) from \(Human.text(body.tzDirectory))")
            output.line(
                "ledger: \(Human.text(body.ledger.location))"
                    + (body.ledger.unreachableReason.map { "; LEDGER UNREACHABLE (nothing is sent): " + Human.text($0) }
                        ?? ""))
            if let cluster = body.cluster {
                let alive = cluster.hosts.filter(\.alive).map { Human.text($0.hostID) }
                let silent = cluster.hosts.filter { !$0.alive }.map { Human.text($0.hostID) }
                output.line(
                    "cluster: this host is \(Human.text(cluster.hostID)); alive: \(alive.joined(separator: ", ").ifEmpty("none"))"
                        + (silent.isEmpty ? "" : "; silent: " + silent.joined(separator: ", "))
                        + (cluster.clockSkewSeconds.map { String(format: "; clock %+.3f s against the database", $0) }
                            ?? ""))
                if let refusal = cluster.refusal { output.line("NOT SENDING: " + Human.text(refusal)) }
            }
            if body.dryRun {
                output.line("DRY-RUN: refreshes are planned and recorded, never sent")
            }
            func count(_ state: JobState) -> Int { body.jobs[state.rawValue] ?? 0 }
            output.line(
                "queue: \(body.queueSize) queued, \(count(.sending)) sending, \(count(.sent)) sent, \(count(.failed)) failed"
            )
            let spool = body.spool
            output.line(
                "spool: \(spool.backlog) waiting, \(spool.taken) taken, \(spool.rejected) rejected since start"
                    + (spool.blocked.map { "; BLOCKED: " + Human.text($0) } ?? ""))
            if !spool.skipped.isEmpty {
                output.line(
                    "spool: SKIPPED (cannot be moved out of incoming/; remove by hand): "
                        + spool.skipped.map { Human.text($0) }.joined(separator: ", "))
            }
            if body.heldJobs > 0 {
                output.line(
                    "HELD: \(body.heldJobs) queued job\(body.heldJobs == 1 ? "" : "s") name a time zone the tz data cannot load (refreshctl plan)"
                )
            }
            for account in body.accounts {
                var line = "account \(Human.text(account.name)): \(account.queued) queued"
                if let next = account.nextSendAt { line += ", next send \(Human.relative(next, now: now))" }
                if account.dryRun { line += ", dry-run" }
                if let paused = account.pausedReason { line += ", PAUSED: " + Human.text(paused) }
                if let cluster = body.cluster {
                    line += ", leader " + Human.text(account.leader ?? "none")
                    if account.leader == cluster.hostID { line += " (this host)" }
                    if let standby = account.standby { line += "; not sent from here: " + Human.text(standby) }
                }
                output.line(line)
            }
            for hold in body.holds {
                let scope = hold.segmentID.map { "segment \($0) of account " } ?? "account "
                output.line(
                    "ON HOLD (\(hold.id)): \(Human.text(scope))\(Human.text(hold.account)), by \(Human.text(hold.who)) since "
                        + "\(Human.text(hold.since)): \(Human.text(hold.reason)) (refreshctl release)")
            }
            if let error = body.lastError { output.line("last error: \(Human.text(error))") }
        }
    }
}

extension String {
    func ifEmpty(_ replacement: String) -> String { isEmpty ? replacement : self }
}
