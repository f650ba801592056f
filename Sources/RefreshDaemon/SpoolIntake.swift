import Foundation
import Glibc
import Logging
import NIOConcurrencyHelpers
import RefreshCore
import RefreshStore
import RefreshWire
import TZData

/// Takes job files from `<spool_dir>/incoming/` into the ledger (the Postfix-style drop-in queue).
///
/// Writers create a file elsewhere or as a dot-file (or `*.tmp`) and rename it in. Intake first
/// moves a ready file out of `incoming/` into `active/`, a directory only refreshd writes: from
/// then on the name cannot change under it, so everything it does next (read, reject, unlink) acts
/// on the file it read, never on whatever a name in `incoming/` points to by then. In `active/` it
/// reads only regular files (opened with O_NOFOLLOW; never a symlink, FIFO, device or directory),
/// validates them exactly as `refreshctl enqueue` and the API do, commits the job together with the
/// file's identity and content digest, and only then unlinks the file: a crash in between cannot
/// make a second job, because the same file is recognised when read again (files left in
/// `active/` are read first at the next scan). Bad content moves the file to `rejected/` next to
/// `<name>.error` with the reason; only content rejects a file: a transient error (no descriptor
/// left, an I/O error) leaves it for the next scan. When the queue is full, or the ledger cannot be
/// written (full disk, read-only, locked), files wait and the problem is reported once.
public final class SpoolIntake: Sendable {
    public let spoolDirectory: String
    /// The directories (RefreshWire's `SpoolLayout`, which refreshctl enqueue writes by).
    public var spool: SpoolLayout { SpoolLayout(directory: spoolDirectory) }
    public var incoming: String { spool.incoming }
    /// Files being taken: moved here from incoming/ before they are read (refreshd's own).
    public var active: String { spool.active }
    public var rejected: String { spool.rejected }
    let ledger: any Ledger
    private let settings: NIOLockedValueBox<Settings>
    var accounts: Set<String> { settings.withLockedValue { $0.accounts } }
    var zones: ZoneInfoDirectory { settings.withLockedValue { $0.zones } }
    var maxQueuedJobs: Int { settings.withLockedValue { $0.maxQueuedJobs } }
    var rejectedRetentionDays: Int { settings.withLockedValue { $0.rejectedRetentionDays } }

    struct Settings {
        var accounts: Set<String>
        var zones: ZoneInfoDirectory
        var maxQueuedJobs: Int
        var rejectedRetentionDays: Int
    }

    /// A reload: new accounts, tz data, queue bound, retention of rejected/; taken at the next scan.
    public func update(
        accounts: Set<String>, zones: ZoneInfoDirectory, maxQueuedJobs: Int, rejectedRetentionDays: Int? = nil
    ) {
        settings.withLockedValue {
            $0 = Settings(
                accounts: accounts, zones: zones, maxQueuedJobs: maxQueuedJobs,
                rejectedRetentionDays: rejectedRetentionDays ?? $0.rejectedRetentionDays)
        }
    }
    let now: @Sendable () -> Date
    let logger: Logger
    private let state = NIOLockedValueBox(IntakeState())
    /// Entries of incoming/ that cannot be moved out (reported once each, then skipped).
    private let stuck = NIOLockedValueBox<Set<String>>([])

    /// What intake last saw, for status.
    public struct IntakeState: Sendable, Equatable {
        /// Why files are being left where they are, if they are.
        public var blocked: String?
        /// Blocked only because `max_queued_jobs` jobs are queued (room comes back slowly: no hurry).
        public var queueFull = false
        /// Files waiting in incoming/ and active/ after the last scan.
        public var backlog = 0
        public var taken = 0
        public var rejected = 0
        /// Entries of incoming/ that cannot be moved out (e.g. a directory refreshd may not move),
        /// skipped so the rest of the spool is taken; shown with their reason.
        public var skipped: [String] = []
        /// What rejected/ holds (files and their .error reasons) after the last retention pass.
        public var rejectedFiles = 0
        public var rejectedBytes = 0
        /// The incoming/ directory's identity (device, inode) as last seen.
        public var incomingIdentity: String?
    }

    /// Opens a file of active/ for reading (`open(2)`; tests pass a failing one to show what a
    /// transient error does).
    let openFile: @Sendable (String) -> Int32

    public init(
        spoolDirectory: String, ledger: any Ledger, accounts: Set<String>, zones: ZoneInfoDirectory, maxQueuedJobs: Int,
        rejectedRetentionDays: Int = 30, now: @escaping @Sendable () -> Date, logger: Logger,
        onEnqueued: @escaping @Sendable () -> Void = {},
        openFile: @escaping @Sendable (String) -> Int32 = { open($0, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) }
    ) {
        self.openFile = openFile
        self.onEnqueued = onEnqueued
        self.spoolDirectory = spoolDirectory
        self.ledger = ledger
        self.settings = NIOLockedValueBox(
            Settings(
                accounts: accounts, zones: zones, maxQueuedJobs: maxQueuedJobs,
                rejectedRetentionDays: rejectedRetentionDays))
        self.now = now
        self.logger = logger
    }

    /// Called after a scan that put jobs in the ledger (wakes the dispatcher).
    let onEnqueued: @Sendable () -> Void

    public var status: IntakeState { state.withLockedValue { $0 } }

    /// The directories and their modes (SpoolLayout.directories).
    var layout: [(path: String, mode: Int)] { spool.directories }

    /// Creates the spool directories when missing. Existing directories keep their modes.
    public func prepareDirectories() throws {
        for (path, mode) in layout {
            var info = stat()
            if lstat(path, &info) == 0 {
                guard info.st_mode & S_IFMT == S_IFDIR else {
                    throw IntakeError("\(path) exists and is not a directory")
                }
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

    /// One pass: files left in active/ first, then every ready file of incoming/, oldest first.
    @discardableResult
    public func scan() async -> IntakeState {
        var taken = 0
        var rejectedCount = 0
        var blocked: String?
        var queueFull = false
        let identity = checkDirectories(blocked: &blocked)
        var queued = (try? await ledger.queuedCount()) ?? 0
        if blocked == nil {
            // Leftovers of an interrupted scan (a crash, a full disk, a full queue) go first.
            var leftovers: [Entry] = []
            switch Self.list(active) {
            case .success(let entries): leftovers = entries
            case .failure(let error): blocked = "cannot read \(active): \(error)"
            }
            var pendingIncoming: [Entry] = []
            if blocked == nil {
                switch Self.list(incoming) {
                case .success(let entries): pendingIncoming = entries.filter(\.isReady)
                case .failure(let error): blocked = "cannot read \(incoming): \(error)"
                }
            }
            var names = leftovers.map { String(decoding: $0.name, as: UTF8.self) }[...]
            var waiting = pendingIncoming[...]
            while blocked == nil, !names.isEmpty || !waiting.isEmpty {
                let room = maxQueuedJobs - queued
                guard room > 0 else {
                    queueFull = true
                    blocked =
                        "the queue holds \(queued) jobs (max_queued_jobs = \(maxQueuedJobs)); files wait in \(incoming)"
                    break
                }
                // Move up to a batch out of incoming/ when no leftovers remain.
                if names.isEmpty {
                    while let entry = waiting.first, names.count < min(Self.batchSize, room) {
                        waiting.removeFirst()
                        if let name = take(entry) { names.append(name) }
                    }
                    if names.isEmpty { continue }
                }
                var batch: [SpoolFileJob] = []
                while let name = names.first, batch.count < min(Self.batchSize, room), blocked == nil {
                    names.removeFirst()
                    switch read(name) {
                    case .job(let file): batch.append(file)
                    case .outcome(.rejected): rejectedCount += 1
                    case .outcome(.blocked(let reason)): blocked = reason
                    case .outcome: break
                    }
                }
                guard !batch.isEmpty else { continue }
                let results: [Result<SpoolIngestResult, LedgerError>]
                do {
                    results = try await ledger.ingestSpoolFiles(batch, now: now())
                } catch {
                    blocked = "cannot write the ledger: \(error)"
                    break
                }
                // Committed: only now are the files removed (from active/, where no name can change).
                for (file, result) in zip(batch, results) {
                    switch result {
                    case .success(let outcome):
                        log(outcome, file: file.name)
                        if case .enqueued(.created) = outcome { queued += 1 }
                        if unlink(active + "/" + file.name) != 0 && errno != ENOENT {
                            blocked =
                                "a job is in the ledger but \(active)/\(file.name) cannot be removed: \(String(cString: strerror(errno)))"
                        }
                        taken += 1
                    case .failure(let error):
                        if case .rejected = reject(file.name, error.message) { rejectedCount += 1 }
                    }
                }
            }
        }
        if taken > 0 { onEnqueued() }
        let backlog = (try? Self.list(incoming).get().filter(\.isReady).count) ?? 0
        let inActive = (try? Self.list(active).get().count) ?? 0
        let skipped = stuck.withLockedValue { Array($0).sorted() }
        return state.withLockedValue { state in
            if let blocked, state.blocked != blocked {
                logger.error(
                    "spool intake stopped; files stay in the spool", metadata: ["reason": "\(LogText.escaped(blocked))"]
                )
            } else if blocked == nil, let previous = state.blocked {
                logger.notice("spool intake resumed", metadata: ["was": "\(LogText.escaped(previous))"])
            }
            state.blocked = blocked
            state.queueFull = queueFull
            state.backlog = backlog + inActive
            state.taken += taken
            state.rejected += rejectedCount
            state.skipped = skipped
            state.incomingIdentity = identity ?? state.incomingIdentity
            return state
        }
    }

    // MARK: The directories

    /// Makes sure the spool's directories are there (recreating any that was deleted, with its
    /// mode) and returns incoming/'s identity; sets `blocked` when one is not a directory.
    private func checkDirectories(blocked: inout String?) -> String? {
        var missing: [String] = []
        for (path, _) in layout {
            var info = stat()
            if lstat(path, &info) != 0 {
                missing.append(path)
            } else if info.st_mode & S_IFMT != S_IFDIR {
                blocked = "\(path) is not a directory (a symlink or a file took its place); move it away"
                return nil
            }
        }
        if !missing.isEmpty {
            do {
                try prepareDirectories()
                logger.warning(
                    "spool directories were missing (deleted while refreshd ran?); created them again",
                    metadata: ["directories": "\(missing.joined(separator: ","))"])
                var made = stat()
                if lstat(incoming, &made) == 0, made.st_mode & 0o7777 != 0o2770 {
                    // Under the unit, RestrictSUIDSGID= forbids setting the setgid bit.
                    logger.warning(
                        "incoming/ could not get its setgid bit back: submitted files may not keep the refreshd group",
                        metadata: [
                            "mode": "\(String(made.st_mode & 0o7777, radix: 8))",
                            "fix": "systemd-tmpfiles --create refreshd.conf",
                        ])
                }
            } catch {
                blocked = "cannot create the spool directories again: \(error)"
                return nil
            }
        }
        var info = stat()
        guard lstat(incoming, &info) == 0 else { return nil }
        let identity = "\(info.st_dev):\(info.st_ino)"
        let previous = state.withLockedValue { $0.incomingIdentity }
        if let previous, previous != identity, missing.isEmpty {
            logger.warning(
                "the spool's incoming/ directory was replaced while refreshd ran; watching the new one",
                metadata: ["directory": "\(incoming)"])
        }
        return identity
    }

    /// A directory entry: its raw name (not always UTF-8) and modification time.
    struct Entry {
        var name: [UInt8]
        var mtime: Double

        /// Writers hide unfinished files as dot-files or `*.tmp` (SpoolLayout.isReady).
        var isReady: Bool { SpoolLayout.isReady(name) }
    }

    /// The entries of a directory (no "." or ".."), oldest modification first.
    static func list(_ directory: String) -> Result<[Entry], IntakeError> {
        guard let handle = opendir(directory) else { return .failure(IntakeError(String(cString: strerror(errno)))) }
        defer { closedir(handle) }
        var entries: [Entry] = []
        while true {
            errno = 0
            guard let entry = readdir(handle) else {
                if errno != 0 { return .failure(IntakeError(String(cString: strerror(errno)))) }
                break
            }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in Array(raw.prefix { $0 != 0 }) }
            if name == [46] || name == [46, 46] { continue }
            var info = stat()
            let mtime =
                lstat(path(directory, name), &info) == 0
                ? Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9 : 0
            entries.append(Entry(name: name, mtime: mtime))
        }
        return .success(
            entries.sorted { $0.mtime != $1.mtime ? $0.mtime < $1.mtime : $0.name.lexicographicallyPrecedes($1.name) })
    }

    /// A NUL-terminated path from a directory and a raw name.
    static func path(_ directory: String, _ name: [UInt8]) -> [CChar] {
        (Array(directory.utf8) + [UInt8(ascii: "/")] + name + [0]).map { CChar(bitPattern: $0) }
    }

    /// Moves one ready entry of incoming/ into active/; returns its name there, or nil when it is
    /// gone or cannot be moved (reported once, then skipped: the rest of the spool goes on).
    private func take(_ entry: Entry) -> String? {
        let shown = LogText.escaped(entry.name)
        if stuck.withLockedValue({ $0.contains(shown) }) {
            var info = stat()
            if lstat(Self.path(incoming, entry.name), &info) == 0 { return nil }
            _ = stuck.withLockedValue { $0.remove(shown) }
            return nil
        }
        // A name that is not UTF-8 (or holds control characters) gets a printable one in active/.
        var target = shown
        var suffix = 1
        var info = stat()
        while lstat(active + "/" + target, &info) == 0 {
            target = "\(shown).\(suffix)"
            suffix += 1
        }
        guard rename(Self.path(incoming, entry.name), active + "/" + target) == 0 else {
            let code = errno
            if code == ENOENT { return nil }
            let reason = "cannot be moved out of \(incoming): \(String(cString: strerror(code)))"
            _ = stuck.withLockedValue { $0.insert(shown) }
            logger.error(
                "spool entry skipped: it cannot be moved out of incoming/ (remove it by hand); the rest of the spool is taken",
                metadata: ["file": "\(shown)", "reason": "\(reason)"])
            return nil
        }
        if target != String(decoding: entry.name, as: UTF8.self) || !entry.name.allSatisfy({ $0 >= 0x20 && $0 != 0x7f })
        {
            logger.notice(
                "spool file renamed: its name is not printable UTF-8",
                metadata: ["file": "\(shown)", "as": "\(target)"])
        }
        return target
    }

    // MARK: Reading

    enum Outcome: Equatable {
        case taken, rejected, gone
        case blocked(String)
    }

    enum ReadResult {
        case job(SpoolFileJob)
        case outcome(Outcome)
    }

    /// What makes a spool file recognisable if it is read again: device, inode, size, mtime and
    /// its name in active/ (two hard links to one file are two submissions).
    static func identity(_ info: stat, name: String) -> String {
        "\(info.st_dev):\(info.st_ino):\(info.st_size):\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec):\(name)"
    }

    /// Opens, checks and validates one file of active/; bad content is rejected here, a transient
    /// error leaves the file for the next scan.
    func read(_ name: String) -> ReadResult {
        let path = active + "/" + name
        let fd = openFile(path)
        if fd < 0 {
            let code = errno
            switch code {
            case ENOENT: return .outcome(.gone)
            case ELOOP:
                return .outcome(
                    reject(name, "a symbolic link; job files must be regular files (symlinks are never followed)"))
            case ENXIO: return .outcome(reject(name, "not a regular file (a socket or device)"))
            case EACCES, EPERM:
                return .outcome(
                    reject(
                        name, "refreshd may not read it (\(String(cString: strerror(code)))); make it group-readable"))
            default:
                return .outcome(
                    .blocked("cannot open \(path) (left for the next scan): \(String(cString: strerror(code)))"))
            }
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            return .outcome(
                .blocked("cannot examine \(path) (left for the next scan): \(String(cString: strerror(errno)))"))
        }
        switch info.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: return .outcome(reject(name, "a directory; job files must be regular files"))
        case S_IFIFO: return .outcome(reject(name, "a FIFO; job files must be regular files"))
        default: return .outcome(reject(name, "not a regular file (a socket or device)"))
        }
        guard info.st_size <= JobFile.maxBytes else {
            return .outcome(
                reject(name, "the file is \(info.st_size) bytes; a job file is at most \(JobFile.maxBytes) bytes"))
        }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size) + 1)
        var count = 0
        while count < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 {
                if errno == EINTR { continue }
                return .outcome(
                    .blocked("cannot read \(path) (left for the next scan): \(String(cString: strerror(errno)))"))
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
        let job = NewJob(
            source: "spool:\(name)", idempotencyKey: request.id, account: request.account, segmentID: request.segmentID,
            timeZone: request.timeZone, priority: request.priority, notBefore: request.notBefore,
            expiresAt: request.expiresAt,
            note: request.note)
        return .job(
            SpoolFileJob(
                identity: Self.identity(info, name: name), contentDigest: ContentDigest.fnv1a64(bytes), name: name,
                job: job))
    }

    private func log(_ outcome: SpoolIngestResult, file: String) {
        switch outcome {
        case .enqueued(.created(let stored)):
            logger.debug(
                "job taken from the spool",
                metadata: ["job": "\(stored.id)", "segment": "\(stored.job.segmentID)", "file": "\(file)"])
        case .enqueued(.duplicate(let stored)):
            logger.info(
                "job file repeats an existing job id; nothing new",
                metadata: ["job": "\(stored.id)", "file": "\(file)"])
        case .alreadyTaken:
            logger.info("job file was taken before a restart; removing it", metadata: ["file": "\(file)"])
        }
    }

    private func zoneProblem(_ zone: String) -> String? {
        zones.contains(zone) ? nil : TZDataError.unknownZone(zone, suggestions: zones.suggestions(for: zone)).message
    }

    /// Moves a bad file from active/ to rejected/ (a free name) and writes the reason next to it.
    private func reject(_ name: String, _ reason: String) -> Outcome {
        var target = name
        var suffix = 1
        while FileManager.default.fileExists(atPath: rejected + "/" + target)
            || FileManager.default.fileExists(atPath: rejected + "/" + target + ".error")
        {
            target = "\(name).\(suffix)"
            suffix += 1
        }
        guard rename(active + "/" + name, rejected + "/" + target) == 0 else {
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

    // MARK: Retention of rejected/

    /// Deletes what rejected/ holds that was rejected more than `rejected_retention_days` ago (0:
    /// keep everything), by the time it was moved there (its ctime), and records what remains.
    @discardableResult
    public func pruneRejected() -> (removed: Int, files: Int, bytes: Int) {
        let days = rejectedRetentionDays
        let cutoff = now().timeIntervalSince1970 - Double(days) * 86400
        var removed = 0
        var files = 0
        var bytes = 0
        for entry in (try? Self.list(rejected).get()) ?? [] {
            let path = Self.path(rejected, entry.name)
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            let changed = Double(info.st_ctim.tv_sec)
            if days > 0, changed < cutoff, info.st_mode & S_IFMT != S_IFDIR, unlink(path) == 0 {
                removed += 1
                continue
            }
            files += 1
            bytes += Int(info.st_size)
        }
        if removed > 0 {
            logger.info(
                "rejected spool files past their retention removed",
                metadata: ["removed": "\(removed)", "retention_days": "\(days)"])
        }
        state.withLockedValue {
            $0.rejectedFiles = files
            $0.rejectedBytes = bytes
        }
        return (removed, files, bytes)
    }
}

/// A spool directory problem.
public struct IntakeError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

extension Array where Element == UInt8 {
    func ends(with suffix: [UInt8]) -> Bool {
        count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix
    }
}
