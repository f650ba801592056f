import ArgumentParser
import Foundation
import Glibc
import RefreshCore
import RefreshWire
import TZData

/// `refreshctl enqueue`: validates a job exactly as the daemon does and writes it atomically into
/// the spool's incoming/ directory. Works while the daemon is stopped.
struct EnqueueCommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "enqueue",
        abstract: "Queue a segment refresh by writing a job file into the spool (works with the daemon stopped).",
        discussion: """
            Either give the job with flags (--segment and --time-zone are required), or pass a ready job file \
            (or - for standard input). The job is validated exactly as refreshd validates spool files, then \
            written atomically into <spool_dir>/incoming/; the file name is printed. refreshd sends it at the \
            earliest instant SendGrid's limits allow.

            Exit codes: 0 queued, 1 the spool cannot be written, 2 invalid job or usage.

            With --wait the job goes to the running daemon over its socket instead (it answers with the job's \
            id), and refreshctl follows it as `refreshctl wait` does: the forecast, then the outcome. Exit codes \
            then: 0 sent or coalesced, 3 daemon unreachable, 6 failed, 7 expired, 8 cancelled, 9 --timeout ran \
            out (the job stays queued).

            Examples:
              refreshctl enqueue --segment 0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01 --time-zone America/Chicago
              refreshctl enqueue --segment 0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01 --time-zone UTC --id crm-2026-11-25 --priority 10
              refreshctl enqueue job.json
              refreshctl enqueue --segment 0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01 --time-zone America/Chicago --wait --timeout 2h
              echo '{"segment_id": "...", "user_time_zone": "UTC"}' | refreshctl enqueue -
            """
    )

    @Argument(help: ArgumentHelp("A job file to queue as it is, or - for standard input.", valueName: "file"))
    var file: String?

    @OptionGroup var job: JobFlags

    @Option(help: ArgumentHelp("refreshd's config file, to find spool_dir and the accounts.", valueName: "file"))
    var config: String?

    @Flag(help: "Print JSON instead of the file name.")
    var json = false

    @Flag(
        help: "Hand the job to the running daemon and wait until it is sent; exit by the outcome (as refreshctl wait).")
    var wait = false

    @Option(
        help: ArgumentHelp(
            "With --wait: stop waiting after this long, e.g. 90s, 10m, 1h30m (the job stays queued).",
            valueName: "duration"))
    var timeout: String?

    @Option(
        help: ArgumentHelp(
            "With --wait: refreshd's control socket (default: $REFRESHD_SOCKET, the configured socket, or /run/refreshd/refreshd.sock).",
            valueName: "path"),
        completion: .file())
    var socket: String?

    func validate() throws {
        if !wait, timeout != nil || socket != nil { throw ValidationError("--timeout and --socket go with --wait") }
        if let timeout, WaitDuration.seconds(timeout) == nil {
            throw ValidationError("--timeout \"\(timeout)\" is not a duration (e.g. 90s, 10m, 1h30m, or seconds)")
        }
    }

    mutating func run(output: OutputSink) throws {
        let environment = ProcessInfo.processInfo.environment
        var loader = ConfigurationLoader(environment: environment, userID: getuid())
        let daemonConfiguration: DaemonConfiguration
        do {
            daemonConfiguration = try loader.load(explicitPath: config, resolvingKeys: false)
        } catch {
            throw CommandFailure("\(error)", exit: .error)
        }
        let zones = try hostZoneDirectory()
        let bytes = try jobBytes()
        let accounts = Set(daemonConfiguration.accounts.map(\.name))
        let request: JobRequest
        switch JobFile.parse(
            bytes, accounts: accounts,
            zoneProblem: { zone in
                zones.contains(zone)
                    ? nil : TZDataError.unknownZone(zone, suggestions: zones.suggestions(for: zone)).message
            })
        {
        case .success(let parsed): request = parsed
        case .failure(let error): throw CommandFailure("invalid job: \(error)", exit: .usage)
        }
        if wait {
            try enqueueAndWait(JobFile.render(request), output: output)
            return
        }
        let incoming = SpoolLayout(directory: daemonConfiguration.spoolDir.value).incoming
        let name = try SpoolWriter.write(Array(JobFile.render(request).utf8), into: incoming)
        if json {
            output.line(
                "{\"file\":\(jsonString(name)),\"path\":\(jsonString(incoming + "/" + name)),\"segment_id\":\(jsonString(request.segmentID)),"
                    + "\"user_time_zone\":\(jsonString(request.timeZone)),\"account\":\(jsonString(request.account))}")
        } else {
            output.line(name)
        }
    }

    /// --wait: the job goes to the daemon over its socket (POST /v1/jobs), which answers with its
    /// id, then is followed until it is sent. The daemon must be running.
    func enqueueAndWait(_ body: String, output: OutputSink) throws {
        let client = try ControlClient.resolve(socket: socket, config: config)
        let answer = try client.call(.enqueue, body: body)
        let created = try answer.decode(JobEnvelope.self)
        let id = created.job.id
        if created.created == false, !json {
            output.line("job \(id) has this idempotency key already; waiting for it")
        }
        let deadline = timeout.flatMap(WaitDuration.seconds).map { Date().addingTimeInterval($0) }
        let outcome = try JobWaiter(client: client, output: output, json: json).wait(for: String(id), until: deadline)
        if outcome != .ok { throw CommandFailure(outcome.waitMessage, exit: outcome) }
    }

    /// The job as bytes: the file or stdin as given, or built from the flags.
    func jobBytes() throws -> [UInt8] { try job.bytes(file: file) }
}

/// Writes a file into a spool directory atomically: a dot-file first (intake ignores those), synced,
/// then renamed to its final name.
enum SpoolWriter {
    static func write(_ bytes: [UInt8], into directory: String) throws -> String {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CommandFailure(
                "the spool directory \(directory) does not exist: start refreshd once (it creates it), or check spool_dir",
                exit: .error)
        }
        let stamp = Timestamp.rfc3339(Date()).replacingOccurrences(of: ":", with: "").replacingOccurrences(
            of: "-", with: "")
        let unique = "\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let name = "\(stamp)-\(unique).json"
        let temporary = directory + "/" + SpoolLayout.temporaryName(writer: "refreshctl", unique: unique)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o660)
        guard fd >= 0 else {
            throw CommandFailure(
                "cannot write into \(directory): \(String(cString: strerror(errno))) (are you in the refreshd group?)",
                exit: .error)
        }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                close(fd)
                unlink(temporary)
                throw CommandFailure("cannot write \(temporary): \(reason)", exit: .error)
            }
            written += n
        }
        let synced = fsync(fd) == 0
        close(fd)
        guard synced, rename(temporary, directory + "/" + name) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw CommandFailure("cannot place the job in \(directory): \(reason)", exit: .error)
        }
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            fsync(directoryFD)
            close(directoryFD)
        }
        return name
    }
}

/// A job given with flags (enqueue, plan --with-job), or as a file.
struct JobFlags: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "The segment's UUID (plan --timeline: the segments to draw; repeat it for several).", valueName: "uuid"))
    var segment: [String] = []

    @Option(
        name: .customLong("time-zone"), help: "The segment's IANA time zone (sent as user_time_zone).",
        completion: Completions.timeZone)
    var timeZone: String?

    @Option(help: "A configured account (default: default).", completion: Completions.account)
    var account: String?

    @Option(help: ArgumentHelp("An idempotency key: 1-128 of A-Z a-z 0-9 . _ : -", valueName: "key"))
    var id: String?

    @Option(help: "Higher goes first, -100...100 (default 0).")
    var priority: Int?

    @Option(
        name: .customLong("not-before"), help: ArgumentHelp("Do not send before this RFC 3339 time.", valueName: "time")
    )
    var notBefore: String?

    @Option(
        name: .customLong("expires-at"),
        help: ArgumentHelp("Give up (state expired) if not sent by this RFC 3339 time.", valueName: "time"))
    var expiresAt: String?

    @Option(help: "A note for people (at most 1 KiB).")
    var note: String?

    var isEmpty: Bool {
        segment.isEmpty && timeZone == nil && account == nil && id == nil && priority == nil && notBefore == nil
            && expiresAt == nil && note == nil
    }

    /// The job as bytes: `file` (or - for stdin) as it is, or built from the flags.
    func bytes(file: String?) throws -> [UInt8] {
        if let file {
            guard isEmpty else {
                throw CommandFailure(
                    "give either a job file or the job flags (--segment, --time-zone, ...), not both", exit: .usage)
            }
            let data: Data?
            if file == "-" {
                data = FileHandle.standardInput.readDataToEndOfFile()
            } else {
                data = FileManager.default.contents(atPath: file)
            }
            guard let data else { throw CommandFailure("cannot read the job file \(file)", exit: .error) }
            return [UInt8](data)
        }
        guard let segment = segment.first else {
            throw CommandFailure("--segment is required (or give a job file)", exit: .usage)
        }
        guard self.segment.count == 1 else { throw CommandFailure("a job has one --segment", exit: .usage) }
        guard let timeZone else { throw CommandFailure("--time-zone is required (or give a job file)", exit: .usage) }
        var members: [(String, String)] = [
            ("segment_id", jsonString(segment)), ("user_time_zone", jsonString(timeZone)),
        ]
        if let account { members.append(("account", jsonString(account))) }
        if let id { members.append(("id", jsonString(id))) }
        if let priority { members.append(("priority", String(priority))) }
        if let notBefore { members.append(("not_before", jsonString(notBefore))) }
        if let expiresAt { members.append(("expires_at", jsonString(expiresAt))) }
        if let note { members.append(("note", jsonString(note))) }
        return Array(("{" + members.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}").utf8)
    }
}
