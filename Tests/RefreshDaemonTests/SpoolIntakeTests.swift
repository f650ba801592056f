import Foundation
import Glibc
import Logging
import RefreshCore
@testable import RefreshStore
import TZData
import Testing

@testable import RefreshDaemon

let hostZones: ZoneInfoDirectory = try! ZoneInfoDirectory(path: ZoneInfoDirectory.defaultPath(environment: ProcessInfo.processInfo.environment))
let testsFolder: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path

struct IntakeFixture {
    let directory = temporaryDirectory()
    let ledger: SQLiteLedger
    let intake: SpoolIntake
    let logs = LogSink.memory()

    init(maxQueuedJobs: Int = 100_000) throws {
        ledger = try SQLiteLedger(path: directory + "/ledger.sqlite", now: Date())
        let sink = logs
        let logger = Logger(label: "test") { _ in JournalLogHandler(label: "test", level: .debug, journald: false, sink: sink, clock: { Date() }) }
        intake = SpoolIntake(
            spoolDirectory: directory + "/spool", ledger: ledger, accounts: ["default", "eu"], zones: hostZones, maxQueuedJobs: maxQueuedJobs,
            now: { Date() }, logger: logger)
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

    func contents(_ folder: String) -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted() }
}

@Suite("Spool intake")
struct SpoolIntakeTests {
    /// The directories are made with the documented modes (incoming/ setgid, group-writable).
    @Test func directories() throws {
        let fixture = try IntakeFixture()
        var info = stat()
        #expect(stat(fixture.intake.incoming, &info) == 0)
        #expect(info.st_mode & 0o7777 == 0o2770)
        #expect(stat(fixture.intake.rejected, &info) == 0 && info.st_mode & 0o777 == 0o750)
    }

    /// Every file of the garbage corpus (and the special files) lands in rejected/ with a reason
    /// naming the problem; the valid files around them are all taken; nothing is left behind.
    @Test func garbageCorpus() throws {
        let fixture = try IntakeFixture()
        let expected = try String(contentsOfFile: testsFolder + "/SpoolCorpus.tsv", encoding: .utf8)
            .split(separator: "\n").map { line -> (String, String) in
                let parts = line.split(separator: "\t", omittingEmptySubsequences: false)
                return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
            }
        #expect(expected.count >= 100)
        var valid = 0
        for (index, (name, _)) in expected.enumerated() {
            try fixture.drop(name, [UInt8](try Data(contentsOf: URL(fileURLWithPath: testsFolder + "/SpoolCorpus/" + name))))
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
        try FileManager.default.createDirectory(atPath: incoming + "/directory.json", withIntermediateDirectories: false)
        let special = [
            ("ten-mib.json", "at most 65536 bytes"), ("symlink.json", "a symbolic link"), ("fifo.json", "a FIFO"),
            ("directory.json", "a directory"),
        ]
        // Not-ready names are left alone.
        try "{}".write(toFile: incoming + "/.hidden", atomically: false, encoding: .utf8)
        try "{}".write(toFile: incoming + "/writing.tmp", atomically: false, encoding: .utf8)

        let state = fixture.intake.scan()
        #expect(state.taken == valid)
        #expect(state.rejected == expected.count + special.count)
        #expect(state.blocked == nil)
        #expect(fixture.contents(incoming) == [".hidden", "writing.tmp"])
        #expect(try fixture.ledger.queuedJobs().count == valid)
        for (name, reason) in expected + special {
            let error = try String(contentsOfFile: fixture.intake.rejected + "/" + name + ".error", encoding: .utf8)
            #expect(!error.isEmpty && error.contains(reason), "\(name): \(error)")
            #expect(FileManager.default.fileExists(atPath: fixture.intake.rejected + "/" + name) || name == "symlink.json" || name == "fifo.json")
        }
        // The secret behind the symlink was never read into the reason or the log.
        #expect(!fixture.logs.text.contains("secret\n"))
        #expect(try String(contentsOfFile: fixture.directory + "/secret", encoding: .utf8) == "secret")
    }

    /// The same job id with the same content is one job; with other content the file is rejected.
    @Test func idempotencyKeys() throws {
        let fixture = try IntakeFixture()
        try fixture.drop("a.json", fixture.validJob(1, id: "crm-1"))
        try fixture.drop("b.json", fixture.validJob(1, id: "crm-1"))
        try fixture.drop("c.json", fixture.validJob(2, id: "crm-1"))
        let state = fixture.intake.scan()
        #expect(state.taken == 2 && state.rejected == 1)
        #expect(try fixture.ledger.queuedJobs().count == 1)
        let reason = try String(contentsOfFile: fixture.intake.rejected + "/c.json.error", encoding: .utf8)
        #expect(reason.contains("a job with id \"crm-1\" already exists"))
    }

    /// A file read again after a crash between commit and unlink is not a second job.
    @Test func crashBetweenCommitAndUnlink() throws {
        let fixture = try IntakeFixture()
        try fixture.drop("job.json", fixture.validJob(7))
        // Simulate the crash: record the file as taken without removing it.
        let path = fixture.intake.incoming + "/job.json"
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        var info = stat()
        #expect(stat(path, &info) == 0)
        let identity = "\(info.st_dev):\(info.st_ino):\(info.st_size):\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
        _ = try fixture.ledger.ingestSpoolFile(
            identity: identity, contentDigest: ContentDigest.fnv1a64(bytes), name: "job.json",
            job: NewJob(source: "spool:job.json", account: "default", segmentID: String(format: "0f8c5e8e-1111-4f4a-9a53-%012d", 7), timeZone: "Europe/Paris"),
            now: Date())
        let state = fixture.intake.scan()
        #expect(state.taken == 1)
        #expect(try fixture.ledger.queuedJobs().count == 1)
        #expect(fixture.contents(fixture.intake.incoming).isEmpty)
    }

    /// A full queue leaves files in incoming/ and says so; room lets them in.
    @Test func fullQueueWaits() throws {
        let fixture = try IntakeFixture(maxQueuedJobs: 2)
        for index in 0..<4 { try fixture.drop("j\(index).json", fixture.validJob(index)) }
        let state = fixture.intake.scan()
        #expect(state.taken == 2)
        #expect(state.backlog == 2)
        #expect(state.blocked?.contains("max_queued_jobs = 2") == true)
        #expect(state.queueFull, "a full queue is not retried every few seconds")
        #expect(fixture.logs.text.components(separatedBy: "spool intake stopped").count == 2)
        fixture.intake.scan()
        #expect(fixture.logs.text.components(separatedBy: "spool intake stopped").count == 2)  // logged once
        let first = try #require(try fixture.ledger.queuedJobs().first)
        _ = try fixture.ledger.cancel(jobID: first.id, now: Date())
        let after = fixture.intake.scan()
        #expect(after.taken == 3 && after.backlog == 1)
    }

    /// A read-only ledger: intake stops, files stay, nothing is deleted.
    @Test func readOnlyLedgerKeepsFiles() throws {
        let fixture = try IntakeFixture()
        try fixture.drop("a.json", fixture.validJob(1))
        try fixture.ledger.writer.write { db in try db.execute(sql: "PRAGMA query_only = 1") }
        let state = fixture.intake.scan()
        #expect(state.taken == 0 && state.rejected == 0)
        #expect(state.blocked?.contains("cannot write the ledger") == true)
        #expect(!state.queueFull, "an unwritable ledger is retried every few seconds")
        #expect(fixture.contents(fixture.intake.incoming) == ["a.json"])
    }
}
