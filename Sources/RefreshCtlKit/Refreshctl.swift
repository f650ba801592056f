import ArgumentParser
import Foundation
import Glibc
import RefreshWire

/// refreshctl's documented exit codes.
public enum RefreshctlExit: Int32, Sendable {
    /// Success.
    case ok = 0
    /// The command could not do its work (unreadable tz database, daemon error, ...).
    case error = 1
    /// Bad usage or bad input: unknown flag, invalid zone name, invalid date.
    case usage = 2
    /// The daemon could not be reached on its socket.
    case unreachable = 3
    /// No such job.
    case notFound = 4
    /// The change conflicts with the job's state (e.g. cancelling a job already sent).
    case conflict = 5
    /// `wait`: the job failed (SendGrid refused it, or it ran out of attempts).
    case failed = 6
    /// `wait`: the job expired (no legal slot before its expires_at).
    case expired = 7
    /// `wait`: the job was cancelled.
    case cancelled = 8
    /// `wait`: the job was still queued when --timeout ran out (it stays queued).
    case timedOut = 9
}

/// An error a command reports, with the exit code it maps to.
public struct CommandFailure: Error, CustomStringConvertible {
    public let message: String
    public let exit: RefreshctlExit

    public init(_ message: String, exit: RefreshctlExit) {
        self.message = message
        self.exit = exit
    }

    public var description: String { message }
}

/// The root command.
public struct Refreshctl: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "refreshctl",
        abstract: "Inspect and steer refreshd, the SendGrid segment refresh daemon.",
        discussion: """
            SendGrid allows 2 manual refreshes per segment per local day (reset at midnight in the \
            segment's time zone), at most 1 per segment per hour, and 10 per account per UTC day. refreshd \
            queues refresh requests and sends each one at the earliest instant those rules allow. refreshctl \
            shows its calendars, budgets and queue.

            Commands that ask the daemon (budget, jobs, show, wait, cancel, retry, edit, hold, release, plan, history, blocks, unblock, status) talk to its \
            control socket: --socket, else $REFRESHD_SOCKET, else the configured socket, else \
            /run/refreshd/refreshd.sock. --json prints the daemon's JSON for scripts.

            Exit codes:
              0  success
              1  error: the command could not do its work
              2  usage: bad flag or bad input (unknown time zone, invalid date or id)
              3  the daemon is not reachable
              4  no such job (or block)
              5  conflict: the job can no longer be changed (already sent or finished)
              6  wait: the job failed
              7  wait: the job expired
              8  wait: the job was cancelled
              9  wait: still queued when --timeout ran out
            """,
        version: RefreshdVersion.current,
        subcommands: [
            StatusCommand.self, BudgetCommand.self, JobsCommand.self, ShowCommand.self, WaitCommand.self,
            CancelCommand.self, RetryCommand.self,
            EditCommand.self, HoldCommand.self, ReleaseCommand.self, PlanCommand.self, HistoryCommand.self,
            BlocksCommand.self, UnblockCommand.self, EnqueueCommand.self, CalendarCommand.self, UICommand.self,
        ]
    )

    public init() {}

    /// Runs refreshctl with the process arguments and exits with a documented code.
    public static func mainWithExitCodes(_ arguments: [String]? = nil) -> Never {
        let (output, errorOutput, code) = runCapturing(
            arguments ?? Array(CommandLine.arguments.dropFirst()), live: true)
        if !output.isEmpty { FileHandle.standardOutput.write(Data(output.utf8)) }
        if !errorOutput.isEmpty { FileHandle.standardError.write(Data(errorOutput.utf8)) }
        Foundation.exit(code)
    }

    /// Parses and runs a command line; returns what would go to stdout, stderr, and the exit code.
    /// Commands write their output through `OutputSink` so tests can call this in process.
    /// With `live`, standard output is written as it comes (for `wait`) and not returned.
    public static func runCapturing(_ arguments: [String], live: Bool = false) -> (
        stdout: String, stderr: String, code: Int32
    ) {
        let sink = OutputSink(live: live)
        do {
            var command = try parseAsRoot(arguments)
            if var runnable = command as? SinkRunnable {
                try runnable.run(output: sink)
            } else {
                try command.run()
            }
            return (sink.text, "", RefreshctlExit.ok.rawValue)
        } catch let failure as CommandFailure {
            return (sink.text, "refreshctl: " + failure.message + "\n", failure.exit.rawValue)
        } catch {
            let code = exitCode(for: error)
            let message = fullMessage(for: error)
            if code == .success { return (message + "\n", "", 0) }
            let mapped: Int32 = code == .validationFailure ? RefreshctlExit.usage.rawValue : code.rawValue
            return (sink.text, message + "\n", mapped)
        }
    }
}

/// Collects a command's standard output, or writes it as it comes (`live`).
public final class OutputSink {
    public private(set) var text = ""
    private let live: Bool
    private let terminal: Bool
    private var statusShown = false

    /// Whether the output goes to a terminal (status lines are redrawn in place there).
    public var isTerminal: Bool { terminal }

    public init(live: Bool = false) {
        self.live = live
        terminal = live && isatty(STDOUT_FILENO) == 1
    }

    /// Adds a line; control characters in it (other than line breaks) are escaped, so no text from
    /// a job or from SendGrid can move the cursor, clear the screen or rewrite a line.
    public func line(_ string: String = "") {
        if statusShown {
            emit("\n")
            statusShown = false
        }
        emit(Self.escaped(string) + "\n")
    }

    /// A line of a drawing that may hold colour (ANSI SGR) sequences: written as it is. Only for
    /// text whose other control characters the drawing already replaced (`TimelineText`).
    public func drawing(_ string: String) {
        if statusShown {
            emit("\n")
            statusShown = false
        }
        emit(string + "\n")
    }

    /// A line that says where something stands: on a terminal each status replaces the previous
    /// one in place (and the next `line` starts below it); elsewhere it is an ordinary line.
    public func status(_ string: String) {
        guard terminal else { return line(string) }
        emit("\r\u{1b}[K" + Self.escaped(string))
        statusShown = true
    }

    private static func escaped(_ string: String) -> String {
        string.split(separator: "\n", omittingEmptySubsequences: false).map { LogText.escaped(String($0)) }.joined(
            separator: "\n")
    }

    private func emit(_ string: String) {
        if live {
            FileHandle.standardOutput.write(Data(string.utf8))
        } else {
            text += string
        }
    }
}

/// A command that writes through an `OutputSink`.
protocol SinkRunnable: ParsableCommand {
    mutating func run(output: OutputSink) throws
}

extension SinkRunnable {
    /// Runs the command printing to stdout (used when not called through `runCapturing`).
    func run() throws {
        let sink = OutputSink()
        var copy = self
        try copy.run(output: sink)
        print(sink.text, terminator: "")
    }
}
