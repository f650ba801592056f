import Foundation
import Glibc
import Logging
import RefreshCore
import RefreshStore
import RefreshWire
import ServiceLifecycle

/// Something a hook is told about: a job that reached a final state (from the ledger's events,
/// R9), or an account event the lanes report (paused, ledger not writable).
public struct HookEvent: Sendable, Equatable {
    /// sent, coalesced, failed, expired, cancelled, account_paused or ledger_unwritable.
    public var name: String
    public var at: Date
    public var account: String
    public var job: StoredJob?
    public var httpStatus: Int?
    public var reason: String?

    public init(
        name: String, at: Date, account: String, job: StoredJob? = nil, httpStatus: Int? = nil, reason: String? = nil
    ) {
        self.name = name
        self.at = at
        self.account = account
        self.job = job
        self.httpStatus = httpStatus
        self.reason = reason
    }

    init(_ event: JobEvent) {
        self.init(
            name: event.state.rawValue, at: event.at, account: event.job.job.account, job: event.job,
            httpStatus: event.httpStatus,
            reason: event.job.reason)
    }

    /// The JSON a hook reads on standard input.
    var json: String {
        var members: [(String, String)] = [
            ("event", JSONText.quote(name)), ("at", JSONText.quote(Timestamp.rfc3339(at))),
            ("account", JSONText.quote(account)),
            ("http_status", httpStatus.map(String.init) ?? "null"), ("reason", reason.map(JSONText.quote) ?? "null"),
        ]
        if let job {
            let fields: [(String, String)] = [
                ("id", String(job.id)), ("state", JSONText.quote(job.state.rawValue)),
                ("segment_id", JSONText.quote(job.job.segmentID)),
                ("time_zone", JSONText.quote(job.job.timeZone)),
                ("idempotency_key", job.job.idempotencyKey.map(JSONText.quote) ?? "null"),
                ("source", JSONText.quote(job.job.source)), ("note", job.job.note.map(JSONText.quote) ?? "null"),
                ("attempt_id", job.attemptID.map(String.init) ?? "null"),
                ("created_at", JSONText.quote(Timestamp.rfc3339(job.createdAt))),
            ]
            members.append(("job", "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"))
        } else {
            members.append(("job", "null"))
        }
        return "{" + members.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}\n"
    }

    /// The environment a hook gets: these variables and a fixed PATH, nothing of refreshd's own
    /// (no API key, no credentials directory).
    var environment: [String: String] {
        var variables = [
            "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "REFRESHD_EVENT": name,
            "REFRESHD_AT": Timestamp.rfc3339(at),
            "REFRESHD_ACCOUNT": account,
        ]
        if let job {
            variables["REFRESHD_JOB_ID"] = String(job.id)
            variables["REFRESHD_SEGMENT_ID"] = job.job.segmentID
            variables["REFRESHD_OUTCOME"] = job.state.rawValue
            if let key = job.job.idempotencyKey { variables["REFRESHD_IDEMPOTENCY_KEY"] = key }
        }
        if let httpStatus { variables["REFRESHD_HTTP_STATUS"] = String(httpStatus) }
        if let reason { variables["REFRESHD_REASON"] = String(reason.prefix(1000)) }
        return variables
    }
}

/// Runs the configured `[[hook]]` programs on events. Job events come from the ledger (R9) in
/// order, from where the runner stopped (`hook_cursor`, committed after a batch's hooks ran: at
/// least once across restarts; on a ledger that never had a runner, from now). Account events
/// come from the lanes. At most `maxConcurrent` programs run at once; each is killed (its whole
/// process group) at its timeout; a failing or hanging hook is logged and never holds up
/// dispatch, which does not wait for hooks at all. With no hook configured this service does
/// nothing.
public final class HookService: Service, DispatchObserver, @unchecked Sendable {
    let hooks: [HookConfiguration]
    let maxConcurrent: Int
    let ledger: any Ledger
    let logger: Logger
    let now: @Sendable () -> Date
    private let lock = NSLock()
    private var pending: [HookEvent] = []

    public init(
        hooks: [HookConfiguration], maxConcurrent: Int, ledger: any Ledger, now: @escaping @Sendable () -> Date,
        logger: Logger
    ) {
        self.hooks = hooks
        self.maxConcurrent = max(1, maxConcurrent)
        self.ledger = ledger
        self.now = now
        self.logger = logger
    }

    public func attemptFinished(account: String, outcome: AttemptOutcome, latency: Duration?) {}

    public func accountPaused(account: String, reason: String) {
        post(HookEvent(name: "account_paused", at: now(), account: account, reason: reason))
    }

    public func ledgerUnwritable(account: String, error: String) {
        post(HookEvent(name: "ledger_unwritable", at: now(), account: account, reason: error))
    }

    /// An account event, run with the next batch.
    public func post(_ event: HookEvent) {
        guard hooks.contains(where: { $0.on.contains(event.name) }) else { return }
        lock.withLock { pending.append(event) }
    }

    public func run() async throws {
        guard !hooks.isEmpty else {
            try? await gracefulShutdown()
            return
        }
        // Ledger calls block: a thread of its own, like the lanes.
        try await withTaskExecutorPreference(BlockingExecutor("hooks")) { try await loop() }
    }

    private func loop() async throws {
        let start: Int64
        if let saved = try? await ledger.hookCursor() {
            start = saved
        } else {
            start = (try? await ledger.latestJobEventID()) ?? 0
            try? await ledger.setHookCursor(start)
        }
        await cancelWhenGracefulShutdown {
            var cursor = start
            while !Task.isCancelled {
                var events: [JobEvent] = []
                do {
                    events = try await self.ledger.jobEvents(after: cursor, limit: 100)
                } catch {
                    self.logger.error("hooks: cannot read job events from the ledger", metadata: ["error": "\(error)"])
                }
                let accountEvents = self.lock.withLock { () -> [HookEvent] in
                    defer { self.pending = [] }
                    return self.pending
                }
                let batch = accountEvents + events.map(HookEvent.init)
                if batch.isEmpty {
                    // Events are looked for once a second while hooks are configured.
                    try? await Task.sleep(for: .seconds(1))
                    continue
                }
                await self.runAll(batch)
                if let last = events.last {
                    cursor = last.id
                    do { try await self.ledger.setHookCursor(cursor) } catch {
                        self.logger.error("hooks: cannot record how far they ran", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
    }

    /// Every (event, hook) pair of the batch, at most `maxConcurrent` at once.
    func runAll(_ batch: [HookEvent]) async {
        let runs = batch.flatMap { event in hooks.filter { $0.on.contains(event.name) }.map { (event, $0) } }
        await withTaskGroup(of: Void.self) { group in
            var running = 0
            for (event, hook) in runs {
                if running == maxConcurrent {
                    await group.next()
                    running -= 1
                }
                group.addTask { self.runOne(hook, event) }
                running += 1
            }
        }
    }

    private func runOne(_ hook: HookConfiguration, _ event: HookEvent) {
        var hookLogger = logger
        hookLogger[metadataKey: "hook"] = "\(hook.exec)"
        hookLogger[metadataKey: "event"] = "\(event.name)"
        if let job = event.job { hookLogger[metadataKey: "job"] = "\(job.id)" }
        switch HookProcess.run(
            executable: hook.exec, arguments: hook.args, environment: event.environment, input: event.json,
            timeout: hook.timeoutSeconds)
        {
        case .exited(0, _): hookLogger.debug("hook ran")
        case .exited(let status, let output):
            hookLogger.warning(
                "hook failed", metadata: ["status": "\(status)", "output": "\(LogText.escaped(output))"])
        case .killed(let output):
            hookLogger.warning(
                "hook did not finish in time: killed",
                metadata: ["timeout_s": "\(hook.timeoutSeconds)", "output": "\(LogText.escaped(output))"])
        case .cannotStart(let reason):
            hookLogger.error("hook cannot be started", metadata: ["reason": "\(reason)"])
        }
    }
}

/// One hook program: spawned directly (no shell) in a process group of its own, the event on
/// its standard input, its output kept (the first 4 KiB) for the log, killed with its group at
/// the timeout.
enum HookProcess {
    enum Result: Equatable {
        case exited(Int32, String)
        case killed(String)
        case cannotStart(String)
    }

    static func run(executable: String, arguments: [String], environment: [String: String], input: String, timeout: Int)
        -> Result
    {
        var stdinPipe: [Int32] = [0, 0]
        var outPipe: [Int32] = [0, 0]
        guard pipe(&stdinPipe) == 0 else { return .cannotStart(String(cString: strerror(errno))) }
        guard pipe(&outPipe) == 0 else {
            close(stdinPipe[0])
            close(stdinPipe[1])
            return .cannotStart(String(cString: strerror(errno)))
        }
        // No end leaks into a child (dup2 gives the child its own 0, 1, 2) nor into other hooks.
        for descriptor in stdinPipe + outPipe { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 2)
        // Nothing else of refreshd's (the ledger, sockets, anything opened without close-on-exec)
        // reaches a hook.
        _ = addCloseFrom?(&actions, 3)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        var spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        // ETXTBSY: the file is open for writing somewhere (being replaced, or a descriptor a
        // forked process still holds); that passes, so try again for a second before giving up.
        for _ in 0..<20 where spawned == ETXTBSY {
            usleep(50_000)
            spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        }
        close(stdinPipe[0])
        close(outPipe[1])
        guard spawned == 0 else {
            close(stdinPipe[1])
            close(outPipe[0])
            return .cannotStart(String(cString: strerror(spawned)))
        }
        // The event on stdin (a few hundred bytes: fits the pipe); a hook that never reads it is fine.
        _ = input.utf8CString.withUnsafeBufferPointer { buffer in
            write(stdinPipe[1], buffer.baseAddress, buffer.count - 1)
        }
        close(stdinPipe[1])
        // Its output, read on this thread until the pipe closes or the deadline passes.
        let deadline = Date().addingTimeInterval(Double(timeout))
        var output = [UInt8]()
        var killed = false
        let flags = fcntl(outPipe[0], F_GETFL)
        _ = fcntl(outPipe[0], F_SETFL, flags | O_NONBLOCK)
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            var descriptor = pollfd(fd: outPipe[0], events: Int16(POLLIN), revents: 0)
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 {
                kill(-pid, SIGKILL)
                killed = true
                break
            }
            let ready = poll(&descriptor, 1, Int32(min(remaining, 1) * 1000))
            if ready < 0, errno == EINTR { continue }
            if ready > 0 {
                let count = read(outPipe[0], &chunk, chunk.count)
                if count > 0 {
                    if output.count < 4096 { output += chunk[0..<min(count, 4096 - output.count)] }
                    continue
                }
                if count == 0 { break }
                if errno == EAGAIN || errno == EINTR { continue }
                break
            }
        }
        close(outPipe[0])
        var status: Int32 = 0
        if !killed {
            // Its output closed; it may still run (it closed its stdout): wait, up to the deadline.
            while true {
                let done = waitpid(pid, &status, WNOHANG)
                if done == pid { break }
                if done < 0, errno != EINTR { break }
                if Date() >= deadline {
                    kill(-pid, SIGKILL)
                    killed = true
                    break
                }
                usleep(20_000)
            }
        }
        if killed { while waitpid(pid, &status, 0) < 0, errno == EINTR {} }
        let text = String(decoding: output, as: UTF8.self)
        if killed { return .killed(text) }
        let exited = (status & 0x7f) == 0
        return .exited(exited ? (status >> 8) & 0xff : 128 + (status & 0x7f), text)
    }
}

/// glibc's posix_spawn_file_actions_addclosefrom_np (2.34+), which Swift's Glibc module does not
/// export: looked up once; nil where the C library lacks it.
private let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np")
    else { return nil }
    return unsafeBitCast(
        symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
}()
