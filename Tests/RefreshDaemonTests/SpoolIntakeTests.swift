import Foundation
import Glibc
import Logging
import RefreshCore
import Synchronization
import TZData
import Testing

@testable import RefreshDaemon
@testable import RefreshStore

let hostZones: ZoneInfoDirectory = try! ZoneInfoDirectory(
    path: ZoneInfoDirectory.defaultPath(environment: ProcessInfo.processInfo.environment))
let testsFolder: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path

struct IntakeFixture {
    let directory = temporaryDirectory()
    let ledger: SQLiteLedger
    let intake: SpoolIntake
    let logs = LogSink.memory()

    init(
        maxQueuedJobs: Int = 100_000, now: @escaping @Sendable () -> Date = { Date() },
        openFile: (@Sendable (String) -> Int32)? = nil
    ) throws {
        ledger = try SQLiteLedger(path: directory + "/ledger.sqlite", now: Date())
        let sink = logs
        let logger = Logger(label: "test") { _ in
            JournalLogHandler(label: "test", level: .debug, journald: false, sink: sink, clock: { Date() })
        }
        intake = SpoolIntake(
            spoolDirectory: directory + "/spool", ledger: ledger, accounts: ["default", "eu"], zones: hostZones,
            maxQueuedJobs: maxQueuedJobs,
            now: now, logger: logger, openFile: openFile ?? { open($0, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) }
        )
        try intake.prepareDirectories()
    }

    /// Writes a file the way writers must: as a dot-file, then renamed in.
    func drop(_ name: String, _ bytes: [UInt8]) throws {
        let temporary = intake.incoming + "/." + name + ".part"
        try Data(bytes).write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, intake.incoming + "/" + name) == 0 else { throw IntakeError("rename failed") }
    }

    func validJob(_ index: Int, id: String? = nil) -> [UInt8] {
        let segment = String(format: "0f8c5e8e-1111-4f4a-9a53-%012d", index)
        return Array(JobFile.render(JobRequest(segmentID: segment, timeZone: "Europe/Paris", id: id)).utf8)
    }

    func contents(_ folder: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
    }
}

@Suite("Spool intake")
struct SpoolIntakeTests {
    /// The directories are made with the documented modes (incoming/ setgid, group-writable).
    @Test func directories() async throws {
        let fixture = try IntakeFixture()
        var info = stat()
        #expect(stat(fixture.intake.incoming, &info) == 0)
        #expect(info.st_mode & 0o7777 == 0o2770)
        #expect(stat(fixture.intake.rejected, &info) == 0 && info.st_mode & 0o777 == 0o750)
    }

    /// Every file of the garbage corpus (and the special files) lands in rejected/ with a reason
    /// naming the problem; the valid files around them are all taken; nothing is left behind.
    @Test func garbageCorpus() async throws {
        let fixture = try IntakeFixture()
        let expected = try String(contentsOfFile: testsFolder + "/SpoolCorpus.tsv", encoding: .utf8)
            .split(separator: "\n").map { line -> (String, String) in
                let parts = line.split(separator: "\t", omittingEmptySubsequences: false)
                return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
            }
        #expect(expected.count >= 100)
        var valid = 0
        for (index, (name, _)) in expected.enumerated() {
            try fixture.drop(
                name, [UInt8](try Data(contentsOf: URL(fileURLWithPath: testsFolder + "/SpoolCorpus/" + name))))
            if index % 3 == 0 {
                try fixture.drop("valid-\(index).json", fixture.validJob(index))
                valid += 1
            }
        }
        // Files git cannot hold: 10 MiB, a symlink to a secret, a FIFO, a directory.
        let incoming = fixture.intake.incoming
        try Data(repeating: 0x41, count: 10 * 1024 * 1024).write(to: URL(fileURLWithPath: incoming + "/ten-mib.json"))
        try "secret".write(toFile: fixture.directory + "/secret", atomically: true, encoding: .utf8)
        #expect(symlink(fixture.directory + "/secret", incoming + "/symlink.json") == 0)
        #expect(mkfifo(incoming + "/fifo.json", 0o600) == 0)
        try FileManager.default.createDirectory(
            atPath: incoming + "/directory.json", withIntermediateDirectories: false)
        let special = [
            ("ten-mib.json", "at most 65536 bytes"), ("symlink.json", "a symbolic link"), ("fifo.json", "a FIFO"),
            ("directory.json", "a directory"),
        ]
        // Not-ready names are left alone.
        try "{}".write(toFile: incoming + "/.hidden", atomically: false, encoding: .utf8)
        try "{}".write(toFile: incoming + "/writing.tmp", atomically: false, encoding: .utf8)

        let state = await fixture.intake.scan()
        #expect(state.taken == valid)
        #expect(state.rejected == expected.count + special.count)
        #expect(state.blocked == nil)
        #expect(fixture.contents(incoming) == [".hidden", "writing.tmp"])
        #expect(try fixture.ledger.queuedJobs().count == valid)
        for (name, reason) in expected + special {
            let error = try String(contentsOfFile: fixture.intake.rejected + "/" + name + ".error", encoding: .utf8)
            #expect(!error.isEmpty && error.contains(reason), "\(name): \(error)")
            #expect(
                FileManager.default.fileExists(atPath: fixture.intake.rejected + "/" + name) || name == "symlink.json"
                    || name == "fifo.json")
        }
        // The secret behind the symlink was never read into the reason or the log.
        #expect(!fixture.logs.text.contains("secret\n"))
        #expect(try String(contentsOfFile: fixture.directory + "/secret", encoding: .utf8) == "secret")
    }

    /// The same job id with the same content is one job; with other content the file is rejected.
    @Test func idempotencyKeys() async throws {
        let fixture = try IntakeFixture()
        try fixture.drop("a.json", fixture.validJob(1, id: "crm-1"))
        try fixture.drop("b.json", fixture.validJob(1, id: "crm-1"))
        try fixture.drop("c.json", fixture.validJob(2, id: "crm-1"))
        let state = await fixture.intake.scan()
        #expect(state.taken == 2 && state.rejected == 1)
        #expect(try fixture.ledger.queuedJobs().count == 1)
        let reason = try String(contentsOfFile: fixture.intake.rejected + "/c.json.error", encoding: .utf8)
        #expect(reason.contains("a job with id \"crm-1\" already exists"))
    }

    /// A file read again after a crash between commit and unlink is not a second job.
    @Test func crashBetweenCommitAndUnlink() async throws {
        let fixture = try IntakeFixture()
        try fixture.drop("job.json", fixture.validJob(7))
        // Simulate the crash: the file was moved to active/ and recorded as taken, not removed (R6).
        let path = fixture.intake.active + "/job.json"
        #expect(rename(fixture.intake.incoming + "/job.json", path) == 0)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        var info = stat()
        #expect(stat(path, &info) == 0)
        let identity = SpoolIntake.identity(info, name: "job.json")
        _ = try await fixture.ledger.ingestSpoolFile(
            identity: identity, contentDigest: ContentDigest.fnv1a64(bytes), name: "job.json",
            job: NewJob(
                source: "spool:job.json", account: "default",
                segmentID: String(format: "0f8c5e8e-1111-4f4a-9a53-%012d", 7), timeZone: "Europe/Paris"),
            now: Date())
        let state = await fixture.intake.scan()
        #expect(state.taken == 1)
        #expect(try fixture.ledger.queuedJobs().count == 1)
        #expect(fixture.contents(fixture.intake.incoming).isEmpty && fixture.contents(fixture.intake.active).isEmpty)
    }

    /// A full queue leaves files in incoming/ and says so; room lets them in.
    @Test func fullQueueWaits() async throws {
        let fixture = try IntakeFixture(maxQueuedJobs: 2)
        for index in 0..<4 { try fixture.drop("j\(index).json", fixture.validJob(index)) }
        let state = await fixture.intake.scan()
        #expect(state.taken == 2)
        #expect(state.backlog == 2)
        #expect(state.blocked?.contains("max_queued_jobs = 2") == true)
        #expect(state.queueFull, "a full queue is not retried every few seconds")
        #expect(fixture.logs.text.components(separatedBy: "spool intake stopped").count == 2)
        await fixture.intake.scan()
        #expect(fixture.logs.text.components(separatedBy: "spool intake stopped").count == 2)  // logged once
        let first = try #require(try fixture.ledger.queuedJobs().first)
        _ = try fixture.ledger.cancel(jobID: first.id, now: Date())
        let after = await fixture.intake.scan()
        #expect(after.taken == 3 && after.backlog == 1)
    }

    /// A read-only ledger: intake stops, files stay, nothing is deleted.
    @Test func readOnlyLedgerKeepsFiles() async throws {
        let fixture = try IntakeFixture()
        try fixture.drop("a.json", fixture.validJob(1))
        try await fixture.ledger.writer.write { db in try db.execute(sql: "PRAGMA query_only = 1") }
        let state = await fixture.intake.scan()
        #expect(state.taken == 0 && state.rejected == 0)
        #expect(state.blocked?.contains("cannot write the ledger") == true)
        #expect(!state.queueFull, "an unwritable ledger is retried every few seconds")
        #expect(fixture.contents(fixture.intake.active) == ["a.json"], "kept in the spool (active/), never deleted")
        try await fixture.ledger.writer.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA query_only = 0") }
        #expect(await fixture.intake.scan().taken == 1, "taken once the ledger can be written")
    }

    // MARK: Hardening (issue "Hold up against careless and hostile neighbours")

    /// Two hard links to one file are two submissions: two jobs, neither dropped.
    @Test func hardLinksAreTwoJobs() async throws {
        let fixture = try IntakeFixture()
        try fixture.drop("a.json", fixture.validJob(1))
        #expect(link(fixture.intake.incoming + "/a.json", fixture.intake.incoming + "/b.json") == 0)
        let state = await fixture.intake.scan()
        #expect(state.taken == 2 && state.rejected == 0)
        #expect(try fixture.ledger.queuedJobs().map(\.job.source).sorted() == ["spool:a.json", "spool:b.json"])
        #expect(fixture.contents(fixture.intake.incoming).isEmpty && fixture.contents(fixture.intake.active).isEmpty)
    }

    /// A file renamed over the same name while refreshd reads the first one is not deleted unread:
    /// refreshd acts on the file it read (moved to active/ first), so the new one is the next job.
    @Test func fileRenamedOverTheNameIsNotLost() async throws {
        let incoming = Mutex<String?>(nil)
        let replacement = Mutex<[UInt8]>([])
        let fixture = try IntakeFixture(openFile: { path in
            // While refreshd opens job.json, a writer renames a new job.json into incoming/.
            if path.hasSuffix("/active/job.json"), let folder = incoming.withLock({ $0 }) {
                let bytes = replacement.withLock { $0 }
                _ = FileManager.default.createFile(atPath: folder + "/.job.json.part", contents: Data(bytes))
                rename(folder + "/.job.json.part", folder + "/job.json")
                incoming.withLock { $0 = nil }
            }
            return open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        })
        incoming.withLock { $0 = fixture.intake.incoming }
        replacement.withLock { $0 = fixture.validJob(2) }
        try fixture.drop("job.json", fixture.validJob(1))
        #expect(await fixture.intake.scan().taken == 1)
        #expect(
            fixture.contents(fixture.intake.incoming) == ["job.json"], "the file renamed in meanwhile is still there")
        #expect(await fixture.intake.scan().taken == 2, "counts since start: the second file is taken too")
        let segments = try fixture.ledger.queuedJobs().map(\.job.segmentID)
        #expect(
            segments == [
                String(format: "0f8c5e8e-1111-4f4a-9a53-%012d", 1), String(format: "0f8c5e8e-1111-4f4a-9a53-%012d", 2),
            ])
    }

    /// A transient open() error (no descriptor left) never rejects a valid file: it waits in the
    /// spool, intake says why, and the next scan takes it.
    @Test func transientOpenErrorKeepsTheFile() async throws {
        let failures = Mutex(1)
        let fixture = try IntakeFixture(openFile: { path in
            if failures.withLock({ count in
                defer { count -= 1 }
                return count > 0
            }) {
                errno = EMFILE
                return -1
            }
            return open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        })
        try fixture.drop("job.json", fixture.validJob(3))
        let first = await fixture.intake.scan()
        #expect(first.rejected == 0 && first.taken == 0)
        #expect(first.blocked?.contains("Too many open files") == true, "\(String(describing: first.blocked))")
        #expect(fixture.contents(fixture.intake.rejected).isEmpty)
        let second = await fixture.intake.scan()
        #expect(second.taken == 1 && second.blocked == nil)
        #expect(try fixture.ledger.queuedJobs().count == 1)
    }

    /// A file whose name is not UTF-8 is taken like any other (under a printable name), not
    /// left in incoming/ forever.
    @Test func nonUTF8NameIsTaken() async throws {
        let fixture = try IntakeFixture()
        let name: [UInt8] = Array("caf".utf8) + [0xe9] + Array(".json".utf8)
        let path = (Array(fixture.intake.incoming.utf8) + [UInt8(ascii: "/")] + name + [0]).map {
            CChar(bitPattern: $0)
        }
        let bytes = fixture.validJob(4)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o640)
        #expect(fd >= 0)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        let state = await fixture.intake.scan()
        #expect(state.taken == 1 && state.backlog == 0)
        #expect(try fixture.ledger.queuedJobs().map(\.job.source) == ["spool:caf\\xe9.json"])
        #expect(fixture.logs.text.contains("its name is not printable UTF-8"))
    }

    /// incoming/ deleted while running is made again, with its mode, and intake goes on.
    @Test func deletedSpoolDirectoryIsRecreated() async throws {
        let fixture = try IntakeFixture()
        await fixture.intake.scan()
        try FileManager.default.removeItem(atPath: fixture.intake.incoming)
        let state = await fixture.intake.scan()
        #expect(state.blocked == nil)
        var info = stat()
        #expect(stat(fixture.intake.incoming, &info) == 0 && info.st_mode & 0o7777 == 0o2770)
        #expect(fixture.logs.text.contains("created them again"))
        try fixture.drop("job.json", fixture.validJob(5))
        #expect(await fixture.intake.scan().taken == 1)
    }

    /// A spool that cannot be read is reported (blocked, with the reason), never a silent empty scan.
    @Test func unreadableSpoolIsReported() async throws {
        let fixture = try IntakeFixture()
        try FileManager.default.removeItem(atPath: fixture.intake.incoming)
        _ = FileManager.default.createFile(atPath: fixture.intake.incoming, contents: Data("not a directory".utf8))
        let state = await fixture.intake.scan()
        #expect(state.blocked?.contains("is not a directory") == true, "\(String(describing: state.blocked))")
        #expect(fixture.logs.text.contains("spool intake stopped"))
    }

    /// rejected/ keeps what was rejected for rejected_retention_days, then lets it go; its size is
    /// measured for the metrics.
    @Test func rejectedRetention() async throws {
        let clock = Mutex(Date())
        let fixture = try IntakeFixture(now: { clock.withLock { $0 } })
        try fixture.drop("bad.json", Array("{".utf8))
        #expect(await fixture.intake.scan().rejected == 1)
        let kept = fixture.intake.pruneRejected()
        #expect(kept.removed == 0 && kept.files == 2 && kept.bytes > 0)
        #expect(fixture.intake.status.rejectedFiles == 2)
        clock.withLock { $0 = $0.addingTimeInterval(31 * 86400) }
        let pruned = fixture.intake.pruneRejected()
        #expect(pruned.removed == 2 && pruned.files == 0)
        #expect(fixture.contents(fixture.intake.rejected).isEmpty)
    }
}
