import FakeSendGrid
import Foundation
import Glibc
import Logging
import RefreshCore
import RefreshDaemon
import RefreshStore
import RefreshWire
import TestSupport
import Testing

/// A datagram socket standing in for systemd's $NOTIFY_SOCKET: collects what refreshd sends.
final class NotifyListener: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private let lock = NSLock()
    private var received: [String] = []
    private var thread: Thread?
    private var closed = false

    init(directory: String) {
        path = directory + "/notify.sock"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !lock.withLock({ closed }) {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n > 0 { lock.withLock { received.append(String(decoding: buffer[0..<n], as: UTF8.self)) } }
            }
        }
        self.thread = thread
        thread.start()
    }

    var messages: [String] { lock.withLock { received } }

    func close() {
        lock.withLock { closed = true }
        usleep(UInt32(0.2 * 1_000_000))
        Glibc.close(fd)
    }

    /// Waits for a message containing `text`; returns its index.
    func wait(for text: String, after index: Int = -1, timeout: TimeInterval = 15) -> Int? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let found = messages.indices.first(where: { $0 > index && messages[$0].contains(text) }) { return found }
            usleep(UInt32(0.02 * 1_000_000))
        }
        return nil
    }
}

@Suite("systemd integration", .serialized)
struct SystemdTests {
    /// READY=1 once the ledger is open and the spool scanned, STATUS= and WATCHDOG=1 while the
    /// loops run, RELOADING=1 with MONOTONIC_USEC then READY=1 on SIGHUP, STOPPING=1 on SIGTERM.
    @Test func notifyProtocol() async throws {
        try await offPool {
            let directory = temporaryDirectory()
            let listener = NotifyListener(directory: directory)
            defer { listener.close() }
            let config = try writeConfig(directory)
            let daemon = try DaemonProcess(
                arguments: ["run", "--config", config],
                environment: daemonEnvironment(
                    directory, extra: ["NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "1000000"]))
            let ready = try #require(listener.wait(for: "READY=1"), "\(daemon.output)")
            // Reloads work from READY=1 on: SIGHUP is already caught (not ignored, not fatal), and
            // one sent at once is not lost while the services start (a CI run lost one).
            let pid = daemon.process.processIdentifier
            #expect(signalMask("SigCgt", pid: pid) & 1 == 1, "SIGHUP caught at READY=1")
            kill(pid, SIGHUP)
            let early = try #require(listener.wait(for: "RELOADING=1", after: ready), "\(daemon.output)")
            let earlyDone = try #require(listener.wait(for: "READY=1", after: early))
            #expect(daemon.waitFor("refreshd started"))
            #expect(listener.wait(for: "WATCHDOG=1", after: ready, timeout: 5) != nil)
            // READY=1 carries the status line itself: systemd keeps the last STATUS= it got, and
            // a watchdog tick may already have sent one before the spool scan.
            #expect(
                listener.messages[ready].contains("STATUS=0 queued, 10/10 left today"), "\(listener.messages[ready])")
            let status = try #require(listener.messages.last { $0.contains("STATUS=0 queued") })
            #expect(status.contains("10/10 left today"), "\(status)")
            kill(daemon.process.processIdentifier, SIGHUP)
            let reloading = try #require(listener.wait(for: "RELOADING=1", after: earlyDone))
            #expect(listener.messages[reloading].contains("MONOTONIC_USEC="))
            let reloaded = try #require(listener.wait(for: "READY=1", after: reloading))
            #expect(
                listener.messages[reloaded].contains("STATUS=0 queued, 10/10 left today"),
                "\(listener.messages[reloaded])")
            #expect(daemon.waitFor("configuration reloaded"))
            kill(daemon.process.processIdentifier, SIGTERM)
            #expect(daemon.waitForExit(timeout: 10) == 0)
            #expect(listener.wait(for: "STOPPING=1", timeout: 2) != nil)
        }
    }

    /// A signal mask from /proc/PID/status ("SigCgt", "SigIgn"): bit n-1 is signal n.
    func signalMask(_ field: String, pid: Int32) -> UInt64 {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = text.split(separator: "\n").first { $0.hasPrefix(field + ":") }
        return line.flatMap { UInt64($0.dropFirst(field.count + 1).trimmingCharacters(in: .whitespaces), radix: 16) }
            ?? 0
    }

    /// SIGHUP under load: jobs keep arriving, the limits change, an invalid file is refused with the
    /// reason and the running configuration stays; no job is lost; the new limits rule.
    @Test func reloadUnderLoad() async throws {
        let fake = FakeSendGrid(apiKey: fakeKey, zones: hostZones)
        let url = try await fake.start()
        let directory = temporaryDirectory()
        let sendgrid = "[sendgrid]\nbase_url = \"\(url)\"\n"
        let config = try writeConfig(directory, "\(sendgrid)[limits]\naccount_daily = 2\n")
        let daemon = try DaemonProcess(
            arguments: ["run", "--config", config],
            environment: daemonEnvironment(directory, extra: ["SENDGRID_API_KEY": fakeKey]))
        #expect(await daemon.eventuallyOutputs("refreshd started"))
        let incoming = directory + "/spool/incoming"
        let total = 300
        let dropper = Thread {
            for index in 0..<total {
                try? dropJob(incoming, 1000 + index)
                usleep(UInt32(0.005 * 1_000_000))
            }
        }
        dropper.start()
        #expect(await eventually(timeout: 10) { fake.refreshes.count == 2 })
        try await Task.sleep(for: .milliseconds(300))
        #expect(fake.refreshes.count == 2, "account_daily = 2 holds")
        // An invalid configuration is refused; the old one stays.
        _ = try writeConfig(directory, "\(sendgrid)[limits]\naccount_daily = 11\n")
        kill(daemon.process.processIdentifier, SIGHUP)
        #expect(await daemon.eventuallyOutputs("reload refused"))
        #expect(daemon.output.contains("account_daily"))
        try await Task.sleep(for: .milliseconds(300))
        #expect(fake.refreshes.count == 2)
        // A valid one: 5 a day, log level debug.
        _ = try writeConfig(directory, "log_level = \"debug\"\n\(sendgrid)[limits]\naccount_daily = 5\n")
        kill(daemon.process.processIdentifier, SIGHUP)
        #expect(await daemon.eventuallyOutputs("configuration reloaded"))
        #expect(await eventually(timeout: 10) { fake.refreshes.count == 5 })
        #expect(await eventually(timeout: 30) { dropper.isFinished })
        #expect(
            await eventually(timeout: 30) {
                (try? FileManager.default.contentsOfDirectory(atPath: incoming))?.isEmpty == true
            })
        try await Task.sleep(for: .milliseconds(300))
        #expect(fake.refreshes.count == 5 && fake.violations.isEmpty)
        kill(daemon.process.processIdentifier, SIGTERM)
        #expect(daemon.waitForExit(timeout: 10) == 0)
        #expect(daemon.output.contains("debug:"), "the new log level applies")
        let jobs = try SQLiteLedger(path: directory + "/state/ledger.sqlite", now: Date()).jobs(
            state: nil, segmentID: nil, after: nil, limit: 10_000)
        #expect(jobs.count == total)
        #expect(jobs.filter { $0.state == .sent }.count == 5)
        await fake.stop()
    }

    /// tzdata upgrades send no signal: refreshd notices a changed tzdata.zi by itself and logs the
    /// old and new versions.
    @Test func noticesTZDataChange() async throws {
        try await offPool {
            let directory = temporaryDirectory()
            let tzdir = directory + "/zoneinfo"
            let source = ProcessInfo.processInfo.environment["TZDIR"] ?? "/usr/share/zoneinfo"
            let copy = Process()
            copy.executableURL = URL(fileURLWithPath: "/bin/cp")
            copy.arguments = ["-r", source, tzdir]
            try copy.run()
            copy.waitUntilExit()
            let config = try writeConfig(directory)
            let daemon = try DaemonProcess(
                arguments: ["run", "--config", config],
                environment: daemonEnvironment(directory, extra: ["TZDIR": tzdir, "REFRESHD_TZ_CHECK_SECONDS": "0.5"]))
            #expect(daemon.waitFor("refreshd started"))
            let zi = tzdir + "/tzdata.zi"
            var text = try String(contentsOfFile: zi, encoding: .utf8)
            let old = text.split(separator: "\n")[0]
            text = text.replacingOccurrences(of: String(old), with: "# version 2099z")
            try text.write(toFile: zi, atomically: true, encoding: .utf8)
            #expect(daemon.waitFor("tz data changed on disk"), "\(daemon.output)")
            #expect(
                daemon.output.contains("new=2099z")
                    && daemon.output.contains("old=\(old.dropFirst("# version ".count))"))
            kill(daemon.process.processIdentifier, SIGTERM)
            #expect(daemon.waitForExit(timeout: 10) == 0)
        }
    }
}

@Suite("Watchdog liveness")
struct WatchdogTests {
    /// The pings follow the dispatch loop: while it runs they go out; while it hangs (a request
    /// that does not come back) they stop.
    @Test func hungLoopStopsThePings() async throws {
        let fake = FakeSendGrid(apiKey: fakeKey, zones: hostZones)
        let url = try await fake.start()
        fake.inject(.delay(seconds: 4, recorded: true))
        let ledger = try SQLiteLedger(path: temporaryDirectory() + "/ledger.sqlite", now: Date())
        let client = SendGridClient(baseURL: url, requestTimeoutSeconds: 10, connectTimeoutSeconds: 1, version: "test")
        let lane = AccountLane(
            account: AccountConfiguration(name: "default", apiKey: APIKey(fakeKey), apiKeySource: "test"),
            ledger: ledger, client: client,
            zones: hostZones, limits: .sendGrid, preflight: false, maxAttempts: 5, now: { Date() },
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let directory = temporaryDirectory()
        let listener = NotifyListener(directory: directory)
        defer { listener.close() }
        let service = SystemdNotifyService(
            notifier: SystemdNotifier(environment: ["NOTIFY_SOCKET": listener.path]), watchdog: .seconds(1),
            liveness: Liveness(tolerance: .milliseconds(500)), beats: { [lane.lastBeat] }, status: { "test" },
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        // Before the loop runs at all: alive while it may still be starting (the tolerance), then not.
        await #expect(service.tick() == true)
        #expect(await eventuallyAsync(timeout: 3) { await !service.tick() })
        let loop = Task(executorPreference: DedicatedExecutor("lane")) {
            await lane.run(clock: ContinuousClock(), maxSleep: .milliseconds(200))
        }
        #expect(await eventuallyAsync(timeout: 10) { await service.tick() })
        #expect(await eventually(timeout: 2) { listener.messages.contains { $0.contains("WATCHDOG=1") } })
        // A job whose request hangs for 4 s: the loop stops beating.
        _ = try ledger.enqueue(
            NewJob(source: "test", account: "default", segmentID: segmentID(9), timeZone: "UTC"), now: Date())
        lane.wake()
        #expect(await eventually(timeout: 3) { fake.refreshes.count == 1 })
        // While the request hangs (4 s), the loop does not beat: within its 0.5 s tolerance the pings stop.
        #expect(await eventuallyAsync(timeout: 3) { await !service.tick() })
        let before = listener.messages.count
        await #expect(service.tick() == false)
        #expect(await eventually(timeout: 1) { listener.messages.count > before })
        #expect(!(listener.messages.last ?? "").contains("WATCHDOG=1"))
        // The answer comes; the loop beats again, and so do the pings.
        #expect(await eventuallyAsync(timeout: 15) { await service.tick() })
        lane.stop()
        _ = await loop.value
        await client.shutdown()
        await fake.stop()
    }
}
