import ArgumentParser
import Foundation
import RefreshCore
import RefreshWire
import TZData

/// `refreshctl wait`: follows jobs until they are sent (or fail, expire, are cancelled), with the
/// forecast on the way. Also behind `refreshctl enqueue --wait`.
struct WaitCommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "wait",
        abstract: "Wait until jobs are sent, showing when each is expected to go out; exit by the outcome.",
        discussion: """
            Follows each job in turn (long polls on the control API: no busy polling). On a terminal the \
            forecast line is updated in place when it moves; otherwise every change is a new line. Then the \
            outcome.

            Exit codes (the first job, in the order given, that did not go out decides):
              0  every job was sent (or coalesced into another job's refresh)
              3  the daemon is not reachable
              4  no such job
              6  a job failed
              7  a job expired
              8  a job was cancelled
              9  --timeout ran out while a job was still queued (it stays queued)

            Examples:
              refreshctl wait 42
              refreshctl wait 42 43 --timeout 10m
            """)

    @Argument(help: ArgumentHelp("The job ids.", valueName: "job"), completion: Completions.queuedJob)
    var jobs: [String]

    @Option(
        help: ArgumentHelp(
            "Stop waiting after this long, e.g. 90s, 10m, 1h30m (default: no limit).", valueName: "duration"))
    var timeout: String?

    @OptionGroup var options: DaemonOptions

    func validate() throws {
        if jobs.isEmpty { throw ValidationError("give at least one job id") }
        if let timeout, WaitDuration.seconds(timeout) == nil {
            throw ValidationError("--timeout \"\(timeout)\" is not a duration (e.g. 90s, 10m, 1h30m, or seconds)")
        }
    }

    mutating func run(output: OutputSink) throws {
        let client = try options.client()
        let deadline = timeout.flatMap(WaitDuration.seconds).map { Date().addingTimeInterval($0) }
        var first: RefreshctlExit = .ok
        for job in jobs {
            let outcome = try JobWaiter(client: client, output: output, json: options.json).wait(
                for: job, until: deadline)
            if first == .ok { first = outcome }
        }
        if first != .ok { throw CommandFailure(first.waitMessage, exit: first) }
    }
}

extension RefreshctlExit {
    /// What `wait` says on its way out with this code.
    var waitMessage: String {
        switch self {
        case .failed: return "a job failed"
        case .expired: return "a job expired"
        case .cancelled: return "a job was cancelled"
        case .timedOut: return "stopped waiting (--timeout): a job is still queued, and stays queued"
        default: return "a job did not go out"
        }
    }
}

/// "90s", "10m", "1h30m", "2h", "1d" or plain seconds.
enum WaitDuration {
    static func seconds(_ text: String) -> TimeInterval? {
        if let plain = Double(text), plain >= 0 { return plain }
        var total: TimeInterval = 0
        var number = ""
        var sawUnit = false
        for character in text {
            if character.isNumber || character == "." {
                number.append(character)
                continue
            }
            let unit: TimeInterval
            switch character {
            case "s": unit = 1
            case "m": unit = 60
            case "h": unit = 3600
            case "d": unit = 86400
            default: return nil
            }
            guard let value = Double(number) else { return nil }
            total += value * unit
            number = ""
            sawUnit = true
        }
        return sawUnit && number.isEmpty ? total : nil
    }
}

/// Follows one job through the control API's long poll (`GET /v1/jobs/{id}?wait=`), printing the
/// forecast as it moves and the outcome.
struct JobWaiter {
    let client: ControlClient
    let output: OutputSink
    let json: Bool
    /// One long poll's length; the daemon answers earlier on any change.
    static let pollSeconds = 55

    func wait(for job: String, until deadline: Date?) throws -> RefreshctlExit {
        guard let id = Int64(job), id > 0 else {
            throw CommandFailure("\"\(job)\" is not a job id (a positive integer)", exit: .usage)
        }
        var tag: String?
        while true {
            // The first look answers at once; then each long poll waits for a change from it.
            var seconds = tag == nil ? 0 : Self.pollSeconds
            if let deadline { seconds = max(0, min(seconds, Int(deadline.timeIntervalSinceNow.rounded(.up)))) }
            let headers = tag.map { [("If-None-Match", $0)] } ?? []
            let answer = try client.call(
                .job, id: "\(id)", query: [("wait", "\(seconds)")], headers: headers,
                readTimeout: .seconds(Int64(seconds) + 30))
            let previous = tag
            tag = answer.headers.first(name: "ETag")
            let body = try answer.decode(JobAnswer.self)
            let state = body.job.state
            // A new line when the job or its forecast changed; on a terminal the status line is
            // also redrawn after each quiet poll (its "in 3 h 12 min" moves on).
            if tag != previous || (output.isTerminal && !json) {
                if json {
                    output.line(answer.body.trimmingCharacters(in: .whitespacesAndNewlines))
                } else {
                    let line = Self.describe(job: body.job, forecast: body.forecast, now: Date())
                    state == .queued || state == .sending ? output.status(line) : output.line(line)
                }
            }
            switch state {
            case .sent, .coalesced: return .ok
            case .failed: return .failed
            case .expired: return .expired
            case .cancelled: return .cancelled
            case .queued, .sending:
                if let deadline, Date() >= deadline { return .timedOut }
            }
        }
    }

    /// One line about the job: where it stands, or how it ended.
    static func describe(job: JobBody, forecast: JobForecast?, now: Date) -> String {
        let id = "\(job.id)"
        let zone = job.timeZone
        func when(_ at: Date?) -> String {
            guard let at else { return "-" }
            return
                "\(Timestamp.rfc3339(at)) (\(Human.local(at, zone: zone, zones: sharedZones)) \(Human.text(zone)), \(Human.relative(at, now: now)))"
        }
        switch job.state {
        case .queued:
            if let held = job.heldReason { return "queued as \(id), held: \(Human.text(held))" }
            switch forecast?.fate {
            case .send?: return "queued as \(id), expected at \(when(forecast?.at))"
            case .coalesce?:
                return "queued as \(id), expected at \(when(forecast?.at)) with job \(Human.text(forecast?.leader))"
            case .expire?:
                return "queued as \(id), will expire at \(when(forecast?.at)): no legal slot before its expires_at"
            case .paused?: return "queued as \(id), waiting: the account is paused (see refreshctl status)"
            case .held?: return "queued as \(id), held: its time zone is not in the tz data"
            case .unknownAccount?: return "queued as \(id), waiting: its account is not configured"
            default: return "queued as \(id), no send planned yet"
            }
        case .sending: return "job \(id) is being sent now"
        case .sent: return "job \(id) sent at \(when(job.updatedAt))"
        case .coalesced:
            return "job \(id) coalesced: sent with another job's refresh of the segment at \(when(job.updatedAt))"
        case .failed: return "job \(id) failed: \(Human.text(job.reason))"
        case .expired: return "job \(id) expired at \(when(job.updatedAt))"
        case .cancelled: return "job \(id) was cancelled"
        }
    }
}
