import AsyncHTTPClient
import FakeSendGrid
import Foundation
import Glibc
import NIOCore
import NIOHTTP1
import RefreshCore
import RefreshDaemon
import RefreshStore
import TestSupport
import Testing

/// The findings of the outside review, each reproduced against the real daemon (see the README's
/// fault table). Every test here failed on the code before the fixes.
@Suite("Hardening: the real daemon against careless and hostile neighbours")
struct HardeningProcessTests {
    /// A second `refreshd run` on the same state directory exits 75, names the running one, and
    /// leaves the live daemon's in-flight reservation alone: its 202 is recorded, the job is sent
    /// once.
    @Test func secondInstanceNeverTouchesTheLedger() async throws {
        let fake = FakeSendGrid(apiKey: fakeKey, zones: hostZones)
        let url = try await fake.start()
        // SendGrid takes the request and records it, but answers only after 4 s.
        fake.inject(.delay(seconds: 4, recorded: true))
        let directory = temporaryDirectory()
        let config = try writeConfig(directory, "[sendgrid]\nbase_url = \"\(url)\"\n")
        let environment = daemonEnvironment(directory, extra: ["SENDGRID_API_KEY": fakeKey])
        let first = try DaemonProcess(arguments: ["run", "--config", config], environment: environment)
        #expect(await first.eventuallyOutputs("refreshd started"), "\(first.output)")
        try dropJob(directory + "/spool/incoming", 31)
        #expect(await eventually(timeout: 10) { fake.refreshes.count == 1 }, "\(first.output)")

        // Typed by hand while the request is in flight, with another socket (so only the lock stops it).
        let secondConfig = directory + "/second.toml"
        try String(contentsOfFile: config, encoding: .utf8).replacingOccurrences(
            of: directory + "/refreshd.sock", with: directory + "/second.sock"
        )
        .write(toFile: secondConfig, atomically: true, encoding: .utf8)
        let second = try DaemonProcess(arguments: ["run", "--config", secondConfig], environment: environment)
        let code = await offPool { second.waitForExit(timeout: 15) }
        #expect(code == 75, "\(second.output)")
        #expect(second.output.contains("another refreshd (pid=\(first.process.processIdentifier)"), "\(second.output)")

        #expect(await first.eventuallyOutputs("refresh accepted by SendGrid", timeout: 15), "\(first.output)")
        #expect(!first.output.contains("already uncertain"))
        kill(first.process.processIdentifier, SIGTERM)
        #expect(await offPool { first.waitForExit(timeout: 10) } == 0)
        await fake.stop()
        let ledger = try SQLiteLedger(path: directory + "/state/ledger.sqlite", now: Date())
        let attempts = try ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 10)
        #expect(attempts.map(\.outcome) == [.accepted])
        #expect(try ledger.jobCounts()[.sent] == 1 && ledger.queuedCount() == 0)
        #expect(fake.refreshes.count == 1)
    }

    /// A tzdata upgrade drops a queued job's zone (a legacy link, US/Pacific): the job is held,
    /// named in the journal, shown by jobs, plan, status and the metrics, and never sent with UTC
    /// or any other zone. Tz data that has the zone again releases it.
    @Test func zoneDroppedByTZDataUpgradeHoldsTheJob() async throws {
        let fake = FakeSendGrid(apiKey: fakeKey, zones: hostZones)
        let url = try await fake.start()
        let directory = temporaryDirectory()
        let tzdir = directory + "/zoneinfo"
        let copy = Process()
        copy.executableURL = URL(fileURLWithPath: "/bin/cp")
        copy.arguments = ["-a", ZoneInfoDirectoryPath.host, tzdir]
        try copy.run()
        copy.waitUntilExit()
        let config = try writeConfig(directory, "[sendgrid]\nbase_url = \"\(url)\"\n")
        // systemd's status line too (a watchdog tick every 0.5 s).
        let listener = NotifyListener(directory: directory)
        defer { listener.close() }
        let environment = daemonEnvironment(
            directory,
            extra: [
                "SENDGRID_API_KEY": fakeKey, "TZDIR": tzdir, "REFRESHD_TZ_CHECK_SECONDS": "0.5",
                "NOTIFY_SOCKET": listener.path,
                "WATCHDOG_USEC": "1000000",
            ])
        let daemon = try DaemonProcess(arguments: ["run", "--config", config], environment: environment)
        #expect(await daemon.eventuallyOutputs("refreshd started"), "\(daemon.output)")
        let segment = "0f8c5e8e-1111-4f4a-9a53-000000000041"
        // Far enough ahead that the tz data is changed before it, even on slow, busy cores.
        let notBeforeDate = Date().addingTimeInterval(15)
        let notBefore = Timestamp.rfc3339(notBeforeDate)
        try #"{"segment_id": "\#(segment)", "user_time_zone": "US/Pacific", "not_before": "\#(notBefore)"}"#
            .write(toFile: directory + "/spool/incoming/pacific.json", atomically: true, encoding: .utf8)
        let socket = directory + "/refreshd.sock"
        #expect(
            await eventuallyAsync(timeout: 10) {
                ((try? await socketGet(socket, "/v1/jobs?state=queued"))?.object["jobs"] as? [Any])?.count == 1
            })

        // The upgrade: the link is gone from the tz database.
        let zi = tzdir + "/tzdata.zi"
        let original = try String(contentsOfFile: zi, encoding: .utf8)
        try original.replacingOccurrences(of: "L America/Los_Angeles US/Pacific\n", with: "").write(
            toFile: zi, atomically: true, encoding: .utf8)
        #expect(await daemon.eventuallyOutputs("they are held, never sent with another zone"), "\(daemon.output)")
        #expect(daemon.output.contains("(US/Pacific)"))
        // Past not_before: nothing goes out.
        try await Task.sleep(for: .seconds(max(0, notBeforeDate.timeIntervalSinceNow) + 3))
        #expect(fake.refreshes.isEmpty, "\(fake.refreshes)")
        let jobs = try await socketGet(socket, "/v1/jobs?state=queued").object["jobs"] as? [[String: Any]] ?? []
        #expect((jobs.first?["held_reason"] as? String)?.contains("US/Pacific") == true, "\(jobs)")
        let plan = try await socketGet(socket, "/v1/plan").object
        #expect(((plan["jobs"] as? [[String: Any]])?.first?["fate"] as? String) == "held", "\(plan)")
        #expect((plan["sends"] as? [Any])?.isEmpty == true)
        let status = try await socketGet(socket, "/v1/status").object
        #expect(status["held_jobs"] as? Int == 1, "\(status)")
        let metrics = try await socketGet(socket, "/metrics").body
        #expect(metrics.contains(#"refreshd_jobs_held{account="default",reason="unknown_time_zone"} 1"#), "\(metrics)")
        #expect(
            await eventually(timeout: 5) {
                listener.messages.contains { $0.contains("HELD: 1 job with a time zone the tz data lacks") }
            },
            "\(listener.messages.suffix(3))")

        // The zone comes back (the tzdata-legacy package installed): the job goes out with its own zone.
        try original.write(toFile: zi, atomically: true, encoding: .utf8)
        #expect(await eventually(timeout: 15) { fake.refreshes.count == 1 }, "\(daemon.output)")
        #expect(fake.refreshes.first?.zone == "US/Pacific")
        #expect(fake.refreshes.allSatisfy { $0.zone != "UTC" })
        kill(daemon.process.processIdentifier, SIGTERM)
        #expect(await offPool { daemon.waitForExit(timeout: 10) } == 0)
        await fake.stop()
    }

    /// An outside process holding the ledger's write lock (a sqlite3 shell left in a transaction):
    /// API writes answer the documented 503 within a few seconds, and reads (`/healthz`) keep
    /// answering at once meanwhile. The daemon runs its handlers on the event loops
    /// (GlobalExecutor), so a ledger write waiting on a serving thread would stall `/healthz`.
    @Test func outsideWriteLockAnswers503Quickly() async throws {
        let directory = temporaryDirectory()
        let config = try writeConfig(directory)
        let daemon = try DaemonProcess(
            arguments: ["run", "--config", config], environment: daemonEnvironment(directory))
        #expect(await daemon.eventuallyOutputs("refreshd started"), "\(daemon.output)")
        #expect(daemon.output.contains("executor=event-loops"), "\(daemon.output)")
        let socket = directory + "/refreshd.sock"
        // Python's sqlite3 holds a write transaction for 20 s.
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        holder.arguments = [
            "python3", "-c",
            """
            import sqlite3, sys, time
            db = sqlite3.connect(sys.argv[1], isolation_level=None)
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO segment_usage VALUES ('x', 'y', 0, NULL, 0)")
            print("locked", flush=True)
            time.sleep(20)
            """,
            directory + "/state/ledger.sqlite",
        ]
        let out = Pipe()
        holder.standardOutput = out
        try holder.run()
        // SIGKILL: a test process that trapped SIGTERM hands its children SIGTERM ignored.
        defer { kill(holder.processIdentifier, SIGKILL) }
        _ = await offPool { out.fileHandleForReading.availableData }
        let body = #"{"segment_id": "0f8c5e8e-1111-4f4a-9a53-000000000051", "user_time_zone": "UTC"}"#
        let started = ContinuousClock.now
        async let write = socketRequest(socket, .POST, "/v1/jobs", body: body)
        try await Task.sleep(for: .milliseconds(200))
        let readStarted = ContinuousClock.now
        let health = try await socketGet(socket, "/healthz")
        let readTook = ContinuousClock.now - readStarted
        #expect(health.status == 200)
        // Bounds far from the lock's 20 s, so they hold on busy cores; the old code took 10-20 s.
        #expect(readTook < .seconds(3), "reads answer while a write waits: \(readTook)")
        let answer = try await write
        let writeTook = ContinuousClock.now - started
        #expect(answer.status == 503 && answer.errorCode == "ledger_busy", "\(answer)")
        #expect(writeTook < .seconds(8), "the 503 comes quickly, not after the lock: \(writeTook)")
        kill(holder.processIdentifier, SIGKILL)
        holder.waitUntilExit()
        let retry = try await socketRequest(socket, .POST, "/v1/jobs", body: body)
        #expect(retry.status == 201, "\(retry)")
        kill(daemon.process.processIdentifier, SIGTERM)
        #expect(await offPool { daemon.waitForExit(timeout: 10) } == 0)
    }

    /// incoming/ deleted while refreshd runs: it is made again with its mode, the inotify watch is
    /// armed on the new directory (a job dropped there is taken within seconds, long before the 60 s
    /// rescan), and the journal says so.
    @Test func deletedSpoolIsRecreatedAndWatched() async throws {
        try await watchFollowsIncoming(job: 61) { daemon, incoming in
            try FileManager.default.removeItem(atPath: incoming)
            #expect(await daemon.eventuallyOutputs("created them again", timeout: 10), "\(daemon.output)")
            var info = stat()
            #expect(stat(incoming, &info) == 0 && info.st_mode & 0o7777 == 0o2770)
        }
    }

    /// incoming/ replaced while refreshd runs (moved away, a new one made by hand): the watch
    /// follows the new directory, and a job dropped there is taken within seconds.
    @Test func replacedSpoolIsWatched() async throws {
        try await watchFollowsIncoming(job: 91) { _, incoming in
            #expect(rename(incoming, incoming + ".old") == 0)
            // refreshd may already have made it again (it saw the move): either way there is a new one.
            #expect(mkdir(incoming, 0o770) == 0 || errno == EEXIST)
        }
    }

    /// Runs refreshd, changes its incoming/ with `change`, then checks the watch follows: the
    /// journal says so and a job dropped into the new directory is taken within seconds.
    private func watchFollowsIncoming(
        job: Int, _ change: (DaemonProcess, String) async throws -> Void
    ) async throws {
        let directory = temporaryDirectory()
        let config = try writeConfig(directory)
        let daemon = try DaemonProcess(
            arguments: ["run", "--config", config], environment: daemonEnvironment(directory))
        #expect(await daemon.eventuallyOutputs("refreshd started"), "\(daemon.output)")
        let incoming = directory + "/spool/incoming"
        try await change(daemon, incoming)
        #expect(
            await daemon.eventuallyOutputs("watching the spool's incoming/ directory again", timeout: 10),
            "\(daemon.output)")
        try dropJob(incoming, job)
        #expect(
            await eventually(timeout: 10) {
                (try? FileManager.default.contentsOfDirectory(atPath: incoming))?.isEmpty == true
            })
        let jobs = try await socketGet(directory + "/refreshd.sock", "/v1/jobs").object["jobs"] as? [Any]
        #expect(jobs?.count == 1)
        kill(daemon.process.processIdentifier, SIGTERM)
        #expect(await offPool { daemon.waitForExit(timeout: 10) } == 0)
    }

    /// A directory in incoming/ that refreshd may not move (not writable by it, so its ".." cannot
    /// change) is reported once and skipped; every other file is still taken. refreshd runs as an
    /// unprivileged user (root may move anything): as `nobody` through setpriv when the tests run
    /// as root, as the test's own user otherwise.
    @Test func unmovableEntryIsSkippedNotBlocking() async throws {
        let directory = temporaryDirectory()
        let config = try writeConfig(directory)
        for folder in ["/spool", "/spool/incoming", "/spool/active", "/spool/rejected", "/state"] {
            try FileManager.default.createDirectory(atPath: directory + folder, withIntermediateDirectories: true)
        }
        chmod(directory + "/spool/incoming", 0o2770)
        var wrapper: [String] = []
        if getuid() == 0 {
            let chown = Process()
            chown.executableURL = URL(fileURLWithPath: "/bin/chown")
            chown.arguments = ["-R", "65534:65534", directory]
            try chown.run()
            chown.waitUntilExit()
            wrapper = ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        }
        // A directory the daemon's user cannot write: rename(2) must update its "..", so it stays.
        try FileManager.default.createDirectory(
            atPath: directory + "/spool/incoming/stuck.d", withIntermediateDirectories: false)
        chmod(directory + "/spool/incoming/stuck.d", 0o555)
        defer { chmod(directory + "/spool/incoming/stuck.d", 0o755) }
        try dropJob(directory + "/spool/incoming", 81)
        let daemon = try DaemonProcess(
            arguments: ["run", "--config", config], environment: daemonEnvironment(directory), wrapper: wrapper)
        #expect(await daemon.eventuallyOutputs("refreshd started"), "\(daemon.output)")
        #expect(daemon.output.contains("spool entry skipped") && daemon.output.contains("stuck.d"), "\(daemon.output)")
        try dropJob(directory + "/spool/incoming", 82)
        let socket = directory + "/refreshd.sock"
        #expect(
            await eventuallyAsync(timeout: 10) {
                ((try? await socketGet(socket, "/v1/jobs"))?.object["jobs"] as? [Any])?.count == 2
            })
        let status = try await socketGet(socket, "/v1/status").object
        let spool = status["spool"] as? [String: Any] ?? [:]
        #expect(spool["blocked"] is NSNull, "\(spool)")
        #expect((spool["skipped"] as? [String]) == ["stuck.d"], "\(spool)")
        #expect(daemon.output.components(separatedBy: "spool entry skipped").count == 2, "reported once")
        kill(daemon.process.processIdentifier, SIGTERM)
        #expect(await offPool { daemon.waitForExit(timeout: 10) } == 0)
    }

    /// 800 idle connections against a daemon limited to 512 descriptors: the API still answers at
    /// once, a job dropped meanwhile is taken, and the process is alive after the flood has been
    /// kept up for 3 minutes ($REFRESHD_FLOOD_SECONDS). Prints the answer time and the RSS.
    ///
    /// Until 2026-12-07 it was 2,000 against 1,024 (systemd's default). This test process holds the
    /// connections, and with over ~1,350 descriptors open Foundation's `Process.run()` (Swift
    /// 6.3.1), which every other process test calls meanwhile, can read past the end of glibc's
    /// buffer for /proc/self/fd and crash the whole test run (swift-corelibs-foundation #5472; a CI
    /// run died of it). The same overflow of the daemon's descriptors, at a scale that cannot.
    @Test(.enabled(if: FloodProbe.reason == nil, Comment(rawValue: FloodProbe.reason ?? "")))
    func connectionFloodCannotExhaustTheAPI() async throws {
        let seconds = ProcessInfo.processInfo.environment["REFRESHD_FLOOD_SECONDS"].flatMap(Double.init) ?? 180
        // This test process holds the connections: let it have the descriptors.
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let directory = temporaryDirectory()
        let config = try writeConfig(directory)
        let daemon = try DaemonProcess(
            arguments: ["run", "--config", config], environment: daemonEnvironment(directory),
            wrapper: ["/bin/sh", "-c", "ulimit -n 512 && exec \"$@\"", "sh"])
        #expect(await daemon.eventuallyOutputs("refreshd started"), "\(daemon.output)")
        let socket = directory + "/refreshd.sock"
        let flood = IdleFlood(socket: socket)
        defer { flood.closeAll() }
        await offPool { flood.open(800) }
        #expect(flood.opened >= 760, "connections made: \(flood.opened)")

        let asked = ContinuousClock.now
        let health = try await socketRequest(socket, .GET, "/healthz", timeout: .seconds(5))
        let answered = ContinuousClock.now - asked
        // Answered at all (within the 5 s deadline) is the behaviour; how fast is measured on the
        // release build (docs/hardening.md), never asserted here (a debug build on 2 busy cores).
        #expect(health.status == 200)
        let again = ContinuousClock.now
        #expect(try await socketRequest(socket, .GET, "/v1/status", timeout: .seconds(5)).status == 200)
        print(
            "connection flood: \(flood.opened) idle connections made against 512 descriptors; /healthz answered in \(answered), "
                + "then /v1/status in \(ContinuousClock.now - again)")

        try dropJob(directory + "/spool/incoming", 71)
        #expect(
            await eventuallyAsync(timeout: 10) {
                ((try? await socketRequest(socket, .GET, "/v1/jobs", timeout: .seconds(2)))?.object["jobs"] as? [Any])?
                    .count == 1
            })

        // Keep it up: connections the daemon closed are opened again, 800 attempted all along.
        let until = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < until, daemon.process.isRunning {
            try await Task.sleep(for: .seconds(5))
            await offPool { flood.refill(to: 800) }
        }
        #expect(daemon.process.isRunning, "\(daemon.output.suffix(2000))")
        let late = try await socketRequest(socket, .GET, "/healthz", timeout: .seconds(5))
        #expect(late.status == 200)
        let rss =
            (try? String(contentsOfFile: "/proc/\(daemon.process.processIdentifier)/status", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? "unknown"
        print("connection flood: alive after \(Int(seconds)) s of flood; \(rss)")
        #expect(!daemon.output.contains("Too many open files"), "\(daemon.output.suffix(2000))")
        kill(daemon.process.processIdentifier, SIGTERM)
        #expect(await offPool { daemon.waitForExit(timeout: 15) } == 0)
    }
}

/// Whether this process may hold the flood's connections (its hard descriptor limit).
enum FloodProbe {
    static let reason: String? = {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return limit.rlim_max >= 4096
            ? nil
            : "the hard descriptor limit (\(limit.rlim_max)) is below the 4,096 this test needs to hold 800 connections"
    }()
}

/// Where the host's tz database is.
enum ZoneInfoDirectoryPath {
    static let host =
        ProcessInfo.processInfo.environment["TZDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/usr/share/zoneinfo"
}

/// Idle connections to a unix socket: opened, never written to.
final class IdleFlood: @unchecked Sendable {
    let socket: String
    private let lock = NSLock()
    private var descriptors: [Int32] = []

    init(socket: String) { self.socket = socket }

    var opened: Int { lock.withLock { descriptors.count } }

    /// Opens up to `count` connections; gives up after 20 refusals in a row or 30 s (a server
    /// that stopped accepting fills its backlog, and each connect then waits for its timeout).
    func open(_ count: Int) {
        let deadline = ContinuousClock.now + .seconds(30)
        var refusals = 0
        var made = 0
        // A refused connect is tried again (a loaded server may accept late), up to 20 in a row.
        while made < count, refusals < 20, ContinuousClock.now < deadline {
            let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { return }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                for (index, byte) in socket.utf8.enumerated() { raw[index] = byte }
            }
            // A connection the server's backlog cannot take now is not waited for.
            var timeout = timeval(tv_sec: 1, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            if result == 0 {
                refusals = 0
                made += 1
                lock.withLock { descriptors.append(fd) }
            } else {
                refusals += 1
                close(fd)
                usleep(50_000)
            }
        }
    }

    /// Drops the connections the server closed and opens new ones up to `count`.
    func refill(to count: Int) {
        let alive = lock.withLock { () -> Int in
            descriptors = descriptors.filter { fd in
                var pollfd = Glibc.pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let closed = poll(&pollfd, 1, 0) > 0 && (pollfd.revents & Int16(POLLIN | POLLHUP)) != 0
                if closed { close(fd) }
                return !closed
            }
            return descriptors.count
        }
        open(max(0, count - alive))
    }

    /// Writes raw bytes on the `index`-th connection.
    func send(_ text: String, on index: Int) {
        let fd = lock.withLock { descriptors[index] }
        _ = text.utf8CString.withUnsafeBytes { write(fd, $0.baseAddress, $0.count - 1) }
    }

    /// How many of the connections the server has closed (end of stream seen).
    func closedByServer() -> Int {
        lock.withLock {
            descriptors.filter { fd in
                var pollfd = Glibc.pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&pollfd, 1, 0) > 0 else { return false }
                var byte: UInt8 = 0
                return recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) == 0 || pollfd.revents & Int16(POLLHUP) != 0
            }.count
        }
    }

    func closeAll() {
        lock.withLock {
            for fd in descriptors { close(fd) }
            descriptors = []
        }
    }
}

/// One request to a running refreshd's control API over its unix socket.
func socketRequest(
    _ socket: String, _ method: HTTPMethod, _ uri: String, body: String? = nil, timeout: TimeAmount = .seconds(30)
) async throws -> APIAnswer {
    var request = try HTTPClient.Request(
        url: URL(httpURLWithSocketPath: socket, uri: uri)!.absoluteString, method: method,
        body: body.map { .string($0) })
    if body != nil { request.headers.add(name: "Content-Type", value: "application/json") }
    let response = try await HTTPClient.shared.execute(request: request, deadline: .now() + timeout).get()
    var buffer = response.body ?? ByteBuffer()
    return APIAnswer(status: Int(response.status.code), body: buffer.readString(length: buffer.readableBytes) ?? "")
}

/// Polls an async condition every 50 ms until it holds or the timeout passes.
func eventuallyAsync(timeout: TimeInterval, _ condition: () async -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if await condition() { return true }
        try? await Task.sleep(for: .milliseconds(50))
    }
    return await condition()
}
