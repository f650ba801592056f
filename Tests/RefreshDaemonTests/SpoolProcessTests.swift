import Foundation
import Glibc
import RefreshCore
import RefreshStore
import TestSupport
import Testing

func dropJob(_ incoming: String, _ index: Int) throws {
    let segment = String(format: "0f8c5e8e-1111-4f4a-9a53-%012d", index)
    let text = JobFile.render(JobRequest(segmentID: segment, timeZone: "America/Chicago"))
    let temporary = incoming + "/.drop-\(index)"
    try text.write(toFile: temporary, atomically: false, encoding: .utf8)
    guard rename(temporary, incoming + "/job-\(index).json") == 0 else { throw ProgramError("rename failed") }
}

struct ProgramError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The same, for async tests: polls with Task.sleep, never blocking a cooperative thread (on 2
/// cores, a blocked pool starves the very loops a test waits for).
func eventually(timeout: TimeInterval, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return condition()
}

func waitUntil(timeout: TimeInterval, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition() { return true }
        usleep(UInt32(0.02 * 1_000_000))
    }
    return condition()
}

@Suite("Spool with the real daemon", .serialized)
struct SpoolProcessTests {
    /// A file renamed into incoming/ is taken at once (inotify), far sooner than the 60 s rescan.
    @Test func inotifyWakesIntake() async throws {
        try await offPool {
            let directory = temporaryDirectory()
            let config = try writeConfig(directory)
            let daemon = try DaemonProcess(
                arguments: ["run", "--config", config], environment: daemonEnvironment(directory))
            #expect(daemon.waitFor("refreshd started"))
            let incoming = directory + "/spool/incoming"
            try dropJob(incoming, 1)
            #expect(
                waitUntil(timeout: 10) {
                    (try? FileManager.default.contentsOfDirectory(atPath: incoming))?.isEmpty == true
                })
            kill(daemon.process.processIdentifier, SIGTERM)
            #expect(daemon.waitForExit(timeout: 5) == 0)
            // The job is in the ledger (and, with no API key, already dispatched in dry-run).
            let jobs = try SQLiteLedger(path: directory + "/state/ledger.sqlite", now: Date()).jobs(
                state: nil, segmentID: nil, after: nil, limit: 10)
            #expect(jobs.count == 1 && [.queued, .sending, .sent].contains(jobs.first?.state))
        }
    }

    /// kill -9 at random moments while 1,000 files are dropped; after restarts every file became
    /// exactly one job.
    @Test func killNineWhileDropping() async throws {
        try await offPool {
            let directory = temporaryDirectory()
            let config = try writeConfig(directory)
            var daemon = try DaemonProcess(
                arguments: ["run", "--config", config], environment: daemonEnvironment(directory))
            #expect(daemon.waitFor("refreshd started"))
            let incoming = directory + "/spool/incoming"
            let total = 1000
            let dropper = Thread {
                for index in 0..<total {
                    try? dropJob(incoming, index)
                    if index % 50 == 0 { usleep(UInt32(0.005 * 1_000_000)) }
                }
            }
            dropper.start()
            var kills = 0
            for _ in 0..<4 {
                usleep(UInt32.random(in: 50_000...400_000))
                kill(daemon.process.processIdentifier, SIGKILL)
                _ = daemon.waitForExit(timeout: 5)
                kills += 1
                daemon = try DaemonProcess(
                    arguments: ["run", "--config", config], environment: daemonEnvironment(directory))
                #expect(daemon.waitFor("refreshd started"), "\(daemon.output)")
            }
            #expect(waitUntil(timeout: 60) { dropper.isFinished })
            #expect(
                waitUntil(timeout: 60) {
                    (try? FileManager.default.contentsOfDirectory(atPath: incoming))?.filter { !$0.hasPrefix(".") }
                        .isEmpty == true
                })
            kill(daemon.process.processIdentifier, SIGTERM)
            #expect(daemon.waitForExit(timeout: 5) == 0)
            // Every job, whatever the dry-run dispatcher did with it meanwhile.
            let jobs = try SQLiteLedger(path: directory + "/state/ledger.sqlite", now: Date()).jobs(
                state: nil, segmentID: nil, after: nil, limit: 10_000)
            #expect(kills == 4)
            #expect(jobs.count == total)
            #expect(Set(jobs.map(\.job.segmentID)).count == total)
            #expect(
                (try? FileManager.default.contentsOfDirectory(atPath: directory + "/spool/rejected"))?.isEmpty == true)
        }
    }
}
