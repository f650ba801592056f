import Foundation
import Glibc
import RefreshStore
import TestSupport
import Testing

/// The built `refreshd`, next to the test bundle; `$REFRESHD_BINARY` runs the process tests
/// against another build (the release binary, or an older one to show a finding reproduces).
let refreshdPath: String = {
    if let chosen = ProcessInfo.processInfo.environment["REFRESHD_BINARY"], !chosen.isEmpty { return chosen }
    let products = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [products, products.deletingLastPathComponent()] {
        let path = candidate.appendingPathComponent("refreshd").path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    var root = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { root.deleteLastPathComponent() }
    return root.appendingPathComponent(".build/debug/refreshd").path
}()

/// A running refreshd whose stderr is collected.
final class DaemonProcess: @unchecked Sendable {
    let process = Process()
    private let lock = NSLock()
    private var collected = Data()
    private let done = DispatchSemaphore(value: 0)
    /// Signalled at the end of the output (the process's side of the pipe closed).
    private let drained = DispatchSemaphore(value: 0)

    /// `wrapper`: a command that ends by running its arguments (refreshd's path, then `arguments`).
    init(arguments: [String], environment: [String: String], wrapper: [String] = []) throws {
        process.executableURL = URL(fileURLWithPath: wrapper.first ?? refreshdPath)
        process.arguments = wrapper.isEmpty ? arguments : Array(wrapper.dropFirst()) + [refreshdPath] + arguments
        process.environment = environment
        let stderr = Pipe()
        process.standardError = stderr
        process.standardOutput = stderr
        stderr.fileHandleForReading.readabilityHandler = { [weak self, drained] handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                drained.signal()
                return
            }
            guard let self else { return }
            self.lock.lock()
            self.collected.append(data)
            self.lock.unlock()
        }
        process.terminationHandler = { [done] _ in done.signal() }
        try process.run()
    }

    var output: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: collected, as: UTF8.self)
    }

    /// Waits until the output contains `text` (or the timeout passes); true if it did.
    func waitFor(_ text: String, timeout: TimeInterval = 15) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if output.contains(text) { return true }
            if !process.isRunning {
                drain()
                return output.contains(text)
            }
            usleep(UInt32(0.02 * 1_000_000))
        }
        return false
    }

    /// The same, for async tests (blocks a thread only after the process exited, for its last bytes).
    func eventuallyOutputs(_ text: String, timeout: TimeInterval = 15) async -> Bool {
        guard await eventually(timeout: timeout, { output.contains(text) || !process.isRunning }) else { return false }
        if !output.contains(text) { drain() }
        return output.contains(text)
    }

    /// After exit: waits (at most 5 s) until the pipe's last bytes are collected.
    private func drain() {
        if drained.wait(timeout: .now() + 5) == .success { drained.signal() }
    }

    /// Waits for exit and for the last of the output (the exit can be seen before the pipe's last
    /// bytes are read); nil on timeout.
    func waitForExit(timeout: TimeInterval) -> Int32? {
        let deadline = DispatchTime.now() + timeout
        guard done.wait(timeout: deadline) == .success else {
            // Say what the process was doing: still running (which state), or gone unseen.
            let pid = process.processIdentifier
            let state =
                (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8))?.split(separator: "\n").first {
                    $0.hasPrefix("State:")
                }.map(String.init) ?? "no /proc entry"
            let stack = (try? String(contentsOfFile: "/proc/\(pid)/wchan", encoding: .utf8)) ?? "?"
            lock.lock()
            collected.append(
                Data("\n[test] no exit seen after \(timeout) s: pid \(pid) \(state), wchan \(stack)\n".utf8))
            lock.unlock()
            return nil
        }
        drain()
        return process.terminationStatus
    }
}

func daemonEnvironment(_ directory: String, extra: [String: String] = [:]) -> [String: String] {
    var environment = ["HOME": directory, "PATH": "/usr/bin:/bin"]
    if let tzdir = ProcessInfo.processInfo.environment["TZDIR"] { environment["TZDIR"] = tzdir }
    return environment.merging(extra) { $1 }
}

func writeConfig(_ directory: String, _ extra: String = "") throws -> String {
    let path = directory + "/refreshd.toml"
    try """
    state_dir = "\(directory)/state"
    spool_dir = "\(directory)/spool"
    socket = "\(directory)/refreshd.sock"
    \(extra)
    """.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

@Suite("refreshd process", .serialized)
struct RefreshdProcessTests {
    /// Starts on a temp config (dry-run, no key), stops on SIGTERM with exit 0 within 2 s, ledger intact.
    @Test func startsAndStopsOnSIGTERM() async throws {
        try await offPool {
            let directory = temporaryDirectory()
            let config = try writeConfig(directory)
            let daemon = try DaemonProcess(
                arguments: ["run", "--config", config], environment: daemonEnvironment(directory))
            #expect(daemon.waitFor("refreshd started"), "\(daemon.output)")
            #expect(daemon.output.contains("dry-run"))
            let start = Date()
            kill(daemon.process.processIdentifier, SIGTERM)
            let status = daemon.waitForExit(timeout: 5)
            let elapsed = Date().timeIntervalSince(start)
            #expect(status == 0, "\(daemon.output)")
            #expect(elapsed < 2, "took \(elapsed) s to stop")
            #expect(daemon.output.contains("refreshd stopped"))
            let ledger = try SQLiteLedger(path: directory + "/state/ledger.sqlite", now: Date())
            #expect(try ledger.appliedMigrations() == ["v1", "v2", "v3", "v4", "v5"])
        }
    }

    /// An unknown REFRESHD_GLOBAL_EXECUTOR is a configuration error (78) naming the variable and
    /// the values it takes, before anything starts; `event-loops` is the default said aloud.
    @Test func unknownExecutorIsRefused() async throws {
        try await offPool {
            let directory = temporaryDirectory()
            let config = try writeConfig(directory)
            let refused = try DaemonProcess(
                arguments: ["run", "--config", config],
                environment: daemonEnvironment(directory, extra: ["REFRESHD_GLOBAL_EXECUTOR": "pool"]))
            #expect(refused.waitForExit(timeout: 10) == 78, "\(refused.output)")
            #expect(refused.output.contains("REFRESHD_GLOBAL_EXECUTOR: \"pool\""), "\(refused.output)")
            #expect(refused.output.contains("event-loops or swift"))
            #expect(!FileManager.default.fileExists(atPath: directory + "/state/ledger.sqlite"), "nothing started")
            let explicit = try DaemonProcess(
                arguments: ["run", "--config", config],
                environment: daemonEnvironment(directory, extra: ["REFRESHD_GLOBAL_EXECUTOR": "event-loops"]))
            #expect(explicit.waitFor("refreshd started"), "\(explicit.output)")
            #expect(explicit.output.contains("executor=event-loops"))
            kill(explicit.process.processIdentifier, SIGTERM)
            #expect(explicit.waitForExit(timeout: 10) == 0)
        }
    }

    /// SIGINT stops it too; under journald every line carries a <N> priority prefix.
    @Test func journaldPrefixAndSIGINT() async throws {
        try await offPool {
            let directory = temporaryDirectory()
            let config = try writeConfig(directory)
            let daemon = try DaemonProcess(
                arguments: ["--config", config],
                environment: daemonEnvironment(directory, extra: ["JOURNAL_STREAM": "8:12345"]))
            #expect(daemon.waitFor("refreshd started"))
            // Steady state is quiet at info: after start-up (the dry-run warning and "started"), nothing.
            usleep(UInt32(1.5 * 1_000_000))
            #expect(daemon.output.split(separator: "\n").count == 2, "\(daemon.output)")
            kill(daemon.process.processIdentifier, SIGINT)
            #expect(daemon.waitForExit(timeout: 5) == 0)
            let lines = daemon.output.split(separator: "\n")
            #expect(!lines.isEmpty)
            #expect(lines.allSatisfy { $0.range(of: #"^<[0-7]>"#, options: .regularExpression) != nil }, "\(lines)")
            #expect(lines.contains { $0.hasPrefix("<6>info: refreshd started") })
            #expect(lines.contains { $0.hasPrefix("<4>warning: dry-run") })
        }
    }

    /// A corrupt ledger: refuses to start (exit 74) naming the file; the file is left as it was.
    @Test func refusesCorruptLedger() async throws {
        try await offPool {
            let directory = temporaryDirectory()
            let config = try writeConfig(directory)
            try FileManager.default.createDirectory(atPath: directory + "/state", withIntermediateDirectories: true)
            let garbage = Data(repeating: 0x5A, count: 4096)
            try garbage.write(to: URL(fileURLWithPath: directory + "/state/ledger.sqlite"))
            let daemon = try DaemonProcess(
                arguments: ["run", "--config", config], environment: daemonEnvironment(directory))
            #expect(daemon.waitForExit(timeout: 10) == 74)
            #expect(daemon.output.contains(directory + "/state/ledger.sqlite"), "\(daemon.output)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: directory + "/state/ledger.sqlite")) == garbage)
        }
    }

    /// check-config: 0 and the effective configuration when valid; 78 with the reasons otherwise; never the key.
    @Test func checkConfig() async throws {
        try await offPool {
            let directory = temporaryDirectory()
            let good = try writeConfig(directory)
            let valid = try DaemonProcess(
                arguments: ["check-config", "--config", good],
                environment: daemonEnvironment(directory, extra: ["SENDGRID_API_KEY": fakeKey]))
            #expect(valid.waitForExit(timeout: 10) == 0)
            #expect(valid.output.contains("state_dir = \"\(directory)/state\""))
            #expect(valid.output.contains("# configuration is valid"))
            #expect(!valid.output.contains(fakeKey))
            let bad = try writeConfig(directory, "[limits]\nsegment_daily = 5\nbogus = 1\n")
            let invalid = try DaemonProcess(
                arguments: ["check-config", "--config", bad], environment: daemonEnvironment(directory))
            #expect(invalid.waitForExit(timeout: 10) == 78)
            #expect(
                invalid.output.contains("limits.segment_daily (\(bad):5): 5 is above SendGrid's documented limit of 2"),
                "\(invalid.output)")
            #expect(invalid.output.contains("limits.bogus (\(bad):6): unknown key"))
            let run = try DaemonProcess(arguments: ["run", "--config", bad], environment: daemonEnvironment(directory))
            #expect(run.waitForExit(timeout: 10) == 78)
        }
    }
}
