import Foundation
import Glibc
import Logging
import RefreshCore
import RefreshStore
import Synchronization
import TZData

/// Takes job files from `<spool_dir>/incoming/` into the ledger (the Postfix-style drop-in queue).
///
/// Writers create a file elsewhere or as a dot-file (or `*.tmp`) and rename it in. Intake reads only
/// regular files (opened with O_NOFOLLOW; never a symlink, FIFO, device or directory), validates
/// them exactly as `refreshctl enqueue` and the API do, commits the job together with the file's
/// identity and content digest, and only then unlinks the file: a crash in between cannot make a
/// second job, because the same file is recognised when read again. Bad files move to `rejected/`
/// next to `<name>.error` with the reason. When the queue is full, or the ledger cannot be written
/// (full disk, read-only), files stay where they are and the problem is reported once.
public final class SpoolIntake: Sendable {
    public let spoolDirectory: String
    public var incoming: String { spoolDirectory + "/incoming" }
    public var rejected: String { spoolDirectory + "/rejected" }
    let ledger: any Ledger
    private let settings: Mutex<(accounts: Set<String>, zones: ZoneInfoDirectory, maxQueuedJobs: Int)>
    var accounts: Set<String> { settings.withLock { $0.accounts } }
    var zones: ZoneInfoDirectory { settings.withLock { $0.zones } }
    var maxQueuedJobs: Int { settings.withLock { $0.maxQueuedJobs } }

    /// A reload: new accounts, tz data, queue bound; taken at the next scan.
    public func update(accounts: Set<String>, zones: ZoneInfoDirectory, maxQueuedJobs: Int) {
        settings.withLock { $0 = (accounts, zones, maxQueuedJobs) }
    }
    let now: @Sendable () -> Date
    let logger: Logger
    private let state = Mutex(IntakeState())

    /// What intake last saw, for status.
    public struct IntakeState: Sendable, Equatable {
        /// Why files are being left in incoming/, if they are.
        public var blocked: String?
        /// Blocked only because `max_queued_jobs` jobs are queued (room comes back slowly: no hurry).
        public var queueFull = false
        /// Files waiting in incoming/ after the last scan.
        public var backlog = 0
        public var taken = 0
        public var rejected = 0
    }

    public init(
        spoolDirectory: String, ledger: any Ledger, accounts: Set<String>, zones: ZoneInfoDirectory, maxQueuedJobs: Int,
        now: @escaping @Sendable () -> Date, logger: Logger, onEnqueued: @escaping @Sendable () -> Void = {}
    ) {
        self.onEnqueued = onEnqueued
        self.spoolDirectory = spoolDirectory
        self.ledger = ledger
        self.settings = Mutex((accounts, zones, maxQueuedJobs))
        self.now = now
        self.logger = logger
    }

    /// Called after a scan that put jobs in the ledger (wakes the dispatcher).
    let onEnqueued: @Sendable () -> Void

    public var status: IntakeState { state.withLock { $0 } }

    /// Creates incoming/ (mode 2770: group-writable for submitters, setgid so files keep the
    /// group) and rejected/ (0750) when missing. Existing directories keep their modes.
    public func prepareDirectories() throws {
        for (path, mode) in [(spoolDirectory, 0o755), (incoming, 0o2770), (rejected, 0o750)] {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
                guard isDirectory.boolValue else { throw IntakeError("\(path) exists and is not a directory") }
                continue
            }
            guard mkdir(path, mode_t(mode & 0o777)) == 0 || errno == EEXIST else {
                throw IntakeError("cannot create \(path): \(String(cString: strerror(errno)))")
            }
            // mkdir drops the setgid bit and applies the umask: set the mode explicitly.
            chmod(path, mode_t(mode))
        }
    }

    /// Files read and committed per ledger transaction (one fsync per batch, not per file).
    static let batchSize = 256

    /// One pass over incoming/: every ready file is taken or rejected, oldest first.
    @discardableResult
    public func scan() -> IntakeState {
        var names = readyNames()[...]
        var taken = 0
        var rejectedCount = 0
        var blocked: String?
        var queueFull = false
        var queued = (try? ledger.queuedCount()) ?? 0
        while !names.isEmpty, blocked == nil {
            guard queued < maxQueuedJobs else {
                queueFull = true
                blocked = "the queue holds \(queued) jobs (max_queued_jobs = \(maxQueuedJobs)); \(names.count) files wait in \(incoming)"
                break
            }
            // Read and validate up to a batch; bad files go to rejected/ at once.
            var batch: [SpoolFileJob] = []
            while let name = names.first, batch.count < min(Self.batchSize, maxQueuedJobs - queued) {
                names.removeFirst()
                switch read(name) {
                case .job(let file): batch.append(file)
                case .outcome(.rejected): rejectedCount += 1
                case .outcome(.blocked(let reason)): blocked = reason
                case .outcome: break
                }
                if blocked != nil { break }
            }
            guard !batch.isEmpty else { continue }
            let results: [Result<SpoolIngestResult, LedgerError>]
            do {
                results = try ledger.ingestSpoolFiles(batch, now: now())
            } catch {
                blocked = "cannot write the ledger: \(error)"
                break
            }
            // Committed: only now are the files removed.
            for (file, result) in zip(batch, results) {
                switch result {
                case .success(let outcome):
                    log(outcome, file: file.name)
                    if case .enqueued(.created) = outcome { queued += 1 }
                    if unlink(incoming + "/" + file.name) != 0 && errno != ENOENT {
                        blocked = "a job is in the ledger but \(incoming)/\(file.name) cannot be removed: \(String(cString: strerror(errno)))"
                    }
                    taken += 1
                case .failure(let error):
                    if case .rejected = reject(file.name, error.message) { rejectedCount += 1 }
                }
            }
        }
        if taken > 0 { onEnqueued() }
        let backlog = readyNames().count
        return state.withLock { state in
            if let blocked, state.blocked != blocked {
                logger.error("spool intake stopped; files stay in incoming/", metadata: ["reason": "\(blocked)"])
            } else if blocked == nil, let previous = state.blocked {
                logger.notice("spool intake resumed", metadata: ["was": "\(previous)"])
            }
            state.blocked = blocked
            state.queueFull = queueFull
            state.backlog = backlog
            state.taken += taken
            state.rejected += rejectedCount
            return state
        }
    }

    enum Outcome: Equatable {
        case taken, rejected, gone
        case blocked(String)
    }

    enum ReadResult {
        case job(SpoolFileJob)
        case outcome(Outcome)
    }

    /// Names in incoming/ that are ready (not dot-files, not *.tmp), oldest modification first.
    func readyNames() -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: incoming) else { return [] }
        var entries: [(name: String, mtime: Double)] = []
        for name in names where !name.hasPrefix(".") && !name.hasSuffix(".tmp") {
            var info = stat()
            let mtime = lstat(incoming + "/" + name, &info) == 0 ? Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9 : 0
            entries.append((name, mtime))
        }
        return entries.sorted { ($0.mtime, $0.name) < ($1.mtime, $1.name) }.map(\.name)
    }

    /// Opens, checks and validates one file; bad files are rejected here.
    func read(_ name: String) -> ReadResult {
        let path = incoming + "/" + name
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 {
            let code = errno
            if code == ENOENT { return .outcome(.gone) }
            if code == ELOOP { return .outcome(reject(name, "a symbolic link; job files must be regular files (symlinks are never followed)")) }
            if code == ENXIO { return .outcome(reject(name, "not a regular file (a socket or device)")) }
            return .outcome(reject(name, "cannot be opened: \(String(cString: strerror(code)))"))
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return .outcome(reject(name, "cannot be examined: \(String(cString: strerror(errno)))")) }
        switch info.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: return .outcome(reject(name, "a directory; job files must be regular files"))
        case S_IFIFO: return .outcome(reject(name, "a FIFO; job files must be regular files"))
        default: return .outcome(reject(name, "not a regular file (a socket or device)"))
        }
        guard info.st_size <= JobFile.maxBytes else {
            return .outcome(reject(name, "the file is \(info.st_size) bytes; a job file is at most \(JobFile.maxBytes) bytes"))
        }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size) + 1)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 {
                if errno == EINTR { continue }
                return .outcome(reject(name, "cannot be read: \(String(cString: strerror(errno)))"))
            }
            if n == 0 { break }
            count += n
        }
        guard count <= JobFile.maxBytes else {
            return .outcome(reject(name, "the file grew past \(JobFile.maxBytes) bytes while being read"))
        }
        bytes.removeSubrange(count...)
        let request: JobRequest
        switch JobFile.parse(bytes, accounts: accounts, zoneProblem: zoneProblem) {
        case .success(let parsed): request = parsed
        case .failure(let error): return .outcome(reject(name, "\(error)"))
        }
        let identity = "\(info.st_dev):\(info.st_ino):\(info.st_size):\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
        let job = NewJob(
            source: "spool:\(name)", idempotencyKey: request.id, account: request.account, segmentID: request.segmentID,
            timeZone: request.timeZone, priority: request.priority, notBefore: request.notBefore, expiresAt: request.expiresAt,
            note: request.note)
        return .job(SpoolFileJob(identity: identity, contentDigest: ContentDigest.fnv1a64(bytes), name: name, job: job))
    }

    private func log(_ outcome: SpoolIngestResult, file: String) {
        switch outcome {
        case .enqueued(.created(let stored)):
            logger.debug("job taken from the spool", metadata: ["job.id": "\(stored.id)", "segment.id": "\(stored.job.segmentID)", "file": "\(file)"])
        case .enqueued(.duplicate(let stored)):
            logger.info("job file repeats an existing job id; nothing new", metadata: ["job.id": "\(stored.id)", "file": "\(file)"])
        case .alreadyTaken:
            logger.info("job file was taken before a restart; removing it", metadata: ["file": "\(file)"])
        }
    }

    private func zoneProblem(_ zone: String) -> String? {
        zones.contains(zone) ? nil : TZDataError.unknownZone(zone, suggestions: zones.suggestions(for: zone)).message
    }

    /// Moves a bad file to rejected/ (a free name) and writes the reason next to it.
    private func reject(_ name: String, _ reason: String) -> Outcome {
        var target = name
        var suffix = 1
        while FileManager.default.fileExists(atPath: rejected + "/" + target) || FileManager.default.fileExists(atPath: rejected + "/" + target + ".error") {
            target = "\(name).\(suffix)"
            suffix += 1
        }
        guard rename(incoming + "/" + name, rejected + "/" + target) == 0 else {
            if errno == ENOENT { return .gone }
            return .blocked("cannot move \(name) to \(rejected): \(String(cString: strerror(errno)))")
        }
        let text = "\(reason)\n"
        if !FileManager.default.createFile(atPath: rejected + "/" + target + ".error", contents: Data(text.utf8)) {
            logger.warning("cannot write the reason file", metadata: ["file": "\(target).error"])
        }
        logger.warning("job file rejected", metadata: ["file": "\(name)", "reason": "\(reason)"])
        return .rejected
    }
}

/// A spool directory problem.
public struct IntakeError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
