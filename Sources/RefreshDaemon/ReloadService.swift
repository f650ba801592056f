import Foundation
import Logging
import RefreshCore
import RefreshStore
import RefreshWire
import ServiceLifecycle
import TZData
import UnixSignals

/// Applies a new configuration (SIGHUP) or new tz data to the running daemon without dropping
/// the queue or a request in flight: limits, accounts (lanes added and stopped), keys, SendGrid
/// settings, log level, tz data. An invalid configuration is refused with the reason logged; the
/// running one stays.
public final class Reloader: @unchecked Sendable {
    let explicitPath: String?
    let environment: [String: String]
    let dispatcher: DispatcherService
    let intake: SpoolIntake
    let state: ControlState
    let ledger: any Ledger
    let levels: LogLevelControl
    let notifier: SystemdNotifier
    let logger: Logger
    let now: @Sendable () -> Date
    let lanes: LaneFactory
    private let lock = NSLock()
    private var configuration: DaemonConfiguration
    private var zones: ZoneInfoDirectory
    private var client: SendGridClient?
    private var zonesStamp: String

    public init(
        explicitPath: String?, environment: [String: String], configuration: DaemonConfiguration,
        zones: ZoneInfoDirectory,
        client: SendGridClient?, dispatcher: DispatcherService, intake: SpoolIntake, state: ControlState,
        ledger: any Ledger,
        levels: LogLevelControl, notifier: SystemdNotifier, lanes: LaneFactory,
        now: @escaping @Sendable () -> Date,
        logger: Logger
    ) {
        self.explicitPath = explicitPath
        self.environment = environment
        self.configuration = configuration
        self.zones = zones
        self.client = client
        self.dispatcher = dispatcher
        self.intake = intake
        self.state = state
        self.ledger = ledger
        self.levels = levels
        self.notifier = notifier
        self.lanes = lanes
        self.now = now
        self.logger = logger
        self.zonesStamp = Self.stamp(zones.path)
    }

    /// What identifies the tz data on disk: tzdata.zi's version line, size and mtime.
    static func stamp(_ directory: String) -> String {
        var info = stat()
        guard stat(directory + "/tzdata.zi", &info) == 0 else { return "none" }
        return "\(info.st_size):\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)"
    }

    /// SIGHUP: read the configuration and the tz data again and apply them. Returns whether it did.
    @discardableResult
    public func reload() async -> Bool {
        notifier.send("RELOADING=1\nMONOTONIC_USEC=\(SystemdNotifier.monotonicMicroseconds())\nSTATUS=reloading")
        // READY=1 ends the reload with a fresh status line (or why the reload was refused).
        let refusal = await applyFiles()
        let status: String
        if let refusal {
            status = "reload refused: \(refusal.prefix(200))"
        } else {
            status = await DaemonApplication.statusLine(state: state)
        }
        notifier.send("READY=1\nSTATUS=" + status)
        return refusal == nil
    }

    /// Reads the configuration and the tz data and applies them; why not, if it did not.
    private func applyFiles() async -> String? {
        var loader = ConfigurationLoader(environment: environment, userID: getuid())
        let next: DaemonConfiguration
        do {
            next = try loader.load(explicitPath: explicitPath)
        } catch {
            logger.error("reload refused; the running configuration stays", metadata: ["reason": "\(error)"])
            return String(describing: error)
        }
        let newZones: ZoneInfoDirectory
        do {
            newZones = try ZoneInfoDirectory(path: ZoneInfoDirectory.defaultPath(environment: environment))
        } catch {
            logger.error(
                "reload refused: the tz database cannot be read; the running configuration stays",
                metadata: ["reason": "\(error.message)"])
            return "the tz database cannot be read: \(error.message)"
        }
        await apply(next, zones: newZones)
        for warning in loader.warnings { logger.warning("\(warning)") }
        logger.notice(
            "configuration reloaded",
            metadata: [
                "accounts": "\(next.accounts.map(\.name).joined(separator: ","))",
                "log_level": "\(next.logLevel.value)",
            ])
        return nil
    }

    /// The tz data changed on disk (a tzdata upgrade sends no signal): read it again.
    @discardableResult
    public func checkTZData() async -> Bool {
        let path = lock.withLock { zones.path }
        let stamp = Self.stamp(path)
        guard stamp != lock.withLock({ zonesStamp }) else { return false }
        guard let fresh = try? ZoneInfoDirectory(path: path) else {
            logger.error(
                "the tz database changed but cannot be read; keeping the loaded one",
                metadata: ["tz_directory": "\(path)"])
            lock.withLock { zonesStamp = stamp }
            return false
        }
        let (old, configuration) = lock.withLock { (zones.version, self.configuration) }
        logger.notice(
            "tz data changed on disk; reloaded",
            metadata: ["old": "\(old ?? "unknown")", "new": "\(fresh.version ?? "unknown")"])
        await apply(configuration, zones: fresh)
        return true
    }

    private func apply(_ next: DaemonConfiguration, zones newZones: ZoneInfoDirectory) async {
        let (previous, oldZones, oldClient) = lock.withLock { (self.configuration, self.zones, self.client) }
        if oldZones.version != newZones.version {
            logger.notice(
                "tz data version",
                metadata: ["old": "\(oldZones.version ?? "unknown")", "new": "\(newZones.version ?? "unknown")"])
        }
        // One shared client; a new one only when its settings changed (the root's factory decides).
        let (client, isNew) = self.lanes.client(for: next, current: oldClient, madeFor: previous)
        if isNew, let client { dispatcher.adopt(client) }
        // A shared ledger keys rows and leadership by identity: the new accounts' before their lanes.
        ledger.serve(identities: next.identities, maxClockSkew: next.maxClockSkewSeconds)
        let lanes = dispatcher.lanes
        for account in next.accounts {
            let change = self.lanes.settings(for: account, in: next, client: client, zones: newZones)
            if let lane = lanes.first(where: { $0.name == account.name }) {
                lane.reconfigure(change)
            } else {
                logger.notice("account added by reload", metadata: ["account": "\(account.name)"])
                dispatcher.add(self.lanes.lane(change))
            }
        }
        for lane in lanes where !next.accounts.contains(where: { $0.name == lane.name }) {
            logger.warning(
                "account removed by reload; its queued jobs stay queued until it returns",
                metadata: ["account": "\(lane.name)"])
            dispatcher.remove(account: lane.name)
        }
        intake.update(
            accounts: Set(next.accounts.map(\.name)), zones: newZones, maxQueuedJobs: next.maxQueuedJobs.value,
            rejectedRetentionDays: next.rejectedRetentionDays.value)
        await warnAboutHeldJobs(zones: newZones)
        state.configuration = next
        state.zones = newZones
        if let level = Logger.Level(rawValue: next.logLevel.value) { levels.level = level }
        lock.withLock {
            configuration = next
            zones = newZones
            self.client = client
            zonesStamp = Self.stamp(newZones.path)
        }
        for account in next.accounts where next.isDryRun(account) && !previous.isDryRun(account) {
            logger.warning(
                "dry-run after reload: refreshes for this account are planned and recorded but never sent",
                metadata: ["account": "\(account.name)"])
        }
    }
}

extension Reloader {
    /// Names every queued job whose zone the tz data now in use cannot load: those jobs are held
    /// (never sent with another zone) until tz data that has their zone comes back.
    func warnAboutHeldJobs(zones: ZoneInfoDirectory) async {
        guard let queued = try? await ledger.queuedJobs() else { return }
        let held = queued.filter { JobHold.reason(timeZone: $0.job.timeZone, zones: zones) != nil }
        guard !held.isEmpty else { return }
        let named = held.prefix(100).map { "\($0.id) (\($0.job.timeZone))" }.joined(separator: ", ")
        logger.warning(
            "queued jobs name time zones the tz data cannot load; they are held, never sent with another zone",
            metadata: [
                "count": "\(held.count)", "jobs": "\(named)\(held.count > 100 ? ", ..." : "")",
                "tzdata": "\(zones.version ?? "unknown")",
            ])
    }
}

/// SIGHUP reloads; every `tzCheckInterval` the tz data on disk is compared with the loaded one.
/// The signals are trapped by whoever makes the service (before READY=1), so none is missed
/// while the service starts.
public struct ReloadService: Service {
    let reloader: Reloader
    let signals: UnixSignalsSequence
    let tzCheckInterval: Duration

    public init(reloader: Reloader, signals: UnixSignalsSequence, tzCheckInterval: Duration = .seconds(3600)) {
        self.reloader = reloader
        self.signals = signals
        self.tzCheckInterval = tzCheckInterval
    }

    public func run() async throws {
        // A reload reads files and the ledger (blocking calls): on a thread of its own.
        try await withTaskExecutorPreference(BlockingExecutor("reload")) { try await loop() }
    }

    private func loop() async throws {
        let signals = self.signals
        let reloader = self.reloader
        let interval = tzCheckInterval
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await _ in signals { await reloader.reload() }
                }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: interval)
                        if Task.isCancelled { break }
                        await reloader.checkTZData()
                    }
                }
                await group.waitForAll()
            }
        }
    }
}
