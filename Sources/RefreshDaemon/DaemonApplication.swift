import Foundation
import Logging
import RefreshCore
import RefreshPostgres
import RefreshStore
import RefreshWire
import ServiceLifecycle
import TZData
import UnixSignals

/// The composition root: the one place where refreshd's pieces are wired together.
public enum DaemonApplication {
    /// refreshd's version (the `VERSION` file's, through the wire module both tools share).
    public static let version = RefreshdVersion.current

    /// Why the daemon could not start; `exitCode` follows sysexits (78 configuration, 74 ledger).
    public struct StartupError: Error, CustomStringConvertible {
        public let description: String
        public let exitCode: Int32
    }

    /// The daemon built and not yet running: its service group and the handles a test needs.
    public struct Daemon: Sendable {
        public let group: ServiceGroup
        public let state: ControlState
        public let dispatcher: DispatcherService
        public let reloader: Reloader
        public let intake: SpoolIntake
        public let ledger: any Ledger
        let work: APIWork
        let stateLock: StateDirectoryLock
        let logger: Logger

        /// Runs every service until SIGTERM or SIGINT, then lets the API's read threads go.
        public func run() async throws {
            // The lock is held until the process ends (the kernel drops it then).
            defer { withExtendedLifetime(stateLock) {} }
            try await group.run()
            await work.shutdown()
            logger.info("refreshd stopped")
        }

        /// Lets go of what `build` made when the daemon is not run (tests): the HTTP clients and
        /// the API's read threads. The ledger closes and the state lock drops with the last reference.
        public func discard() async {
            for client in dispatcher.allClients { await client.shutdown() }
            await work.shutdown()
            await (ledger as? PostgresLedger)?.shutdown()
        }
    }

    /// Builds the services for a configuration and runs them until SIGTERM or SIGINT.
    public static func run(
        configuration: DaemonConfiguration, logger: Logger, environment: [String: String], configPath: String? = nil,
        levels: LogLevelControl = LogLevelControl(.info)
    ) async throws {
        try await build(
            configuration: configuration, logger: logger, environment: environment, configPath: configPath,
            levels: levels
        ).run()
    }

    /// Wires refreshd's pieces for a configuration: the ledger opened (and recovered), the state
    /// directory locked, the spool prepared, every service made; nothing runs yet. The wall clock
    /// (`now`) and the clock the lanes sleep on are chosen here and nowhere else.
    public static func build(
        configuration: DaemonConfiguration, logger: Logger, environment: [String: String], configPath: String? = nil,
        levels: LogLevelControl = LogLevelControl(.info),
        now: @escaping @Sendable () -> Date = { Date() }, clock: any Clock<Duration> = ContinuousClock()
    ) async throws -> Daemon {
        let notifier = SystemdNotifier(environment: environment)
        // SIGHUP is trapped before anything runs: its default action would end us, and a reload
        // asked for as soon as READY=1 went out (or earlier) waits for the reload service in the
        // sequence's buffer instead of being lost.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        let zones: ZoneInfoDirectory
        do {
            zones = try ZoneInfoDirectory(path: ZoneInfoDirectory.defaultPath(environment: environment))
        } catch {
            throw StartupError(description: error.message, exitCode: 72)
        }
        do {
            try FileManager.default.createDirectory(
                atPath: configuration.stateDir.value, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o750])
        } catch {
            throw StartupError(
                description:
                    "cannot create the state directory \(configuration.stateDir.value): \(error.localizedDescription)",
                exitCode: 73)
        }
        // Before the ledger is opened (recovery and migrations write to it): one daemon per state
        // directory (a shared ledger also holds one process per host id itself, R12).
        let stateLock: StateDirectoryLock
        do {
            stateLock = try StateDirectoryLock.acquire(directory: configuration.stateDir.value, now: now())
        } catch let failure as StateDirectoryLock.Failure {
            throw StartupError(description: failure.description, exitCode: failure.heldByAnother ? 75 : 73)
        }
        let maxRequestSeconds = configuration.requestTimeoutSeconds.value + 60
        let ledger: any Ledger
        var shared: PostgresLedger?
        do {
            switch configuration.ledger.backend.value {
            case .sqlite:
                ledger = try SQLiteLedger(
                    path: configuration.ledgerPath, now: now(), maxRequestSeconds: maxRequestSeconds)
            case .postgresql:
                let postgres = try await PostgresLedger(
                    configuration: configuration.ledger, hostID: configuration.ledger.hostID.value,
                    identities: configuration.identities,
                    now: now(), maxRequestSeconds: maxRequestSeconds,
                    // One leader per account across hosts; a clock more than half the safety
                    // margin off the database's sends nothing (#14).
                    leadership: LeadershipSettings(
                        maxClockSkew: configuration.maxClockSkewSeconds, wallClock: now),
                    logger: logger)
                shared = postgres
                ledger = postgres
            }
        } catch let error as LedgerError where configuration.ledger.backend.value == .postgresql {
            // The database cannot be reached now: 74 (systemd restarts the unit). Another process
            // holds this host id: 75, as for the state directory. Refused (login, database,
            // privileges, a newer schema): the configuration or the setup is wrong, 78.
            let exitCode: Int32 = error.code == .unreachable ? 74 : error.code == .busy ? 75 : 78
            throw StartupError(description: "\(error)", exitCode: exitCode)
        } catch {
            throw StartupError(description: "\(error)", exitCode: 74)
        }
        let metrics = RefreshdMetrics()
        metrics.bootstrapMetricsSystem()
        // Hooks hear of jobs from the ledger's events and of account events from the lanes; they
        // are read at start (a reload keeps them).
        let hooks = HookService(
            hooks: configuration.hooks, maxConcurrent: configuration.hookMaxConcurrent.value, ledger: ledger, now: now,
            logger: logger)
        let lanes = LaneFactory(
            ledger: ledger, now: now, logger: logger, observer: DispatchObservers([metrics, hooks]))
        let dispatcher = lanes.dispatcher(for: configuration, zones: zones, clock: clock)
        let intake = SpoolIntake(
            spoolDirectory: configuration.spoolDir.value, ledger: ledger,
            accounts: Set(configuration.accounts.map(\.name)),
            zones: zones, maxQueuedJobs: configuration.maxQueuedJobs.value,
            rejectedRetentionDays: configuration.rejectedRetentionDays.value,
            now: now, logger: logger, onEnqueued: { dispatcher.wakeUp() })
        do {
            try intake.prepareDirectories()
        } catch {
            throw StartupError(
                description: "cannot prepare the spool directory \(configuration.spoolDir.value): \(error)",
                exitCode: 73)
        }
        let work = APIWork()
        let state = ControlState(
            ledger: ledger, zones: zones, configuration: configuration, version: version, startedAt: now(), now: now,
            metrics: metrics,
            lanes: { dispatcher.lanes.map(\.status) }, lane: { dispatcher.lane(named: $0)?.status },
            intake: { intake.status },
            wake: { dispatcher.wakeUp() }, reread: { dispatcher.rereadLedger() }, logger: logger, work: work)
        let ready: @Sendable () async -> Void = {
            // The status line goes with READY=1: the watchdog tick may have sent one before the
            // spool scan, and systemd keeps the last STATUS= it got.
            let status = await statusLine(state: state)
            notifier.send("READY=1\nSTATUS=" + status)
            logger.info(
                "refreshd started",
                metadata: [
                    "version": "\(version)", "tzdata": "\(zones.version ?? "unknown")", "tz_directory": "\(zones.path)",
                    "ledger": "\(ledger.location)", "executor": "\(GlobalExecutor.inUse)",
                    "accounts": "\(configuration.accounts.map(\.name).joined(separator: ","))",
                ])
        }
        let spool = SpoolIntakeService(intake: intake, rescanInterval: .seconds(60), logger: logger, onReady: ready)
        var apiToken: String?
        if let tokenFile = configuration.apiTokenFile.value {
            guard let text = try? String(contentsOfFile: tokenFile, encoding: .utf8),
                !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
            else {
                throw StartupError(description: "api_token_file: cannot read a token from \(tokenFile)", exitCode: 78)
            }
            apiToken = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let listeners: [any Service]
        do {
            try ControlAPIListeners.prepareSocket(configuration.socket.value)
            let limits = ControlAPIListeners.Limits(
                maxConnections: connectionCap(configuration: configuration, logger: logger),
                idleTimeout: .seconds(configuration.apiIdleTimeoutSeconds.value),
                requestTimeout: .seconds(configuration.apiRequestTimeoutSeconds.value))
            listeners = try ControlAPIListeners.make(
                state: state, socketPath: configuration.socket.value, listen: configuration.listen.value,
                apiToken: apiToken, limits: limits,
                logger: logger)
        } catch {
            throw StartupError(description: "control API: \(error)", exitCode: 73)
        }
        // A shared ledger: the lanes wake when another host changes it, and the host keeps its lease.
        var heartbeat: [any Service] = []
        if let shared {
            shared.onOutsideChange { dispatcher.wakeUp() }
            heartbeat = [
                LedgerHeartbeatService(
                    ledger: shared, interval: .seconds(PostgresLedger.leaseSeconds / 3), now: now, logger: logger)
            ]
        }
        let maintenance = LedgerMaintenanceService(
            ledger: ledger, retentionDays: configuration.retentionDays.value, interval: .seconds(3600), now: now,
            logger: logger)

        for account in configuration.accounts where configuration.isDryRun(account) {
            logger.warning(
                "dry-run: refreshes for this account are planned and recorded but never sent",
                metadata: [
                    "account": "\(account.name)",
                    "reason": "\(configuration.dryRun.value ? "dry_run = true" : "no API key found")",
                ])
        }
        let reloader = Reloader(
            explicitPath: configPath, environment: environment, configuration: configuration, zones: zones,
            client: dispatcher.client,
            dispatcher: dispatcher, intake: intake, state: state, ledger: ledger, levels: levels, notifier: notifier,
            lanes: lanes, now: now,
            logger: logger)
        // The tz data on disk is compared hourly ($REFRESHD_TZ_CHECK_SECONDS changes that, for tests).
        let tzCheck =
            environment["REFRESHD_TZ_CHECK_SECONDS"].flatMap(Double.init).map {
                Duration.milliseconds(Int64($0 * 1000))
            } ?? .seconds(3600)
        let reload = ReloadService(reloader: reloader, signals: hangups, tzCheckInterval: tzCheck)
        // Liveness: a loop beats at least every 60 s, plus a request in flight, plus slack.
        let tolerance =
            Duration.seconds(60) + .milliseconds(Int64(configuration.requestTimeoutSeconds.value * 1000)) + .seconds(30)
        let notify = SystemdNotifyService(
            notifier: notifier, watchdog: SystemdNotifier.watchdogInterval(environment: environment),
            liveness: Liveness(tolerance: tolerance),
            beats: { dispatcher.lanes.map(\.lastBeat) }, status: { await statusLine(state: state) }, logger: logger)
        // Shutdown runs in reverse: reload and notify stop (STOPPING=1), intake stops taking files,
        // the API closes, and the dispatcher last, letting a request in flight finish.
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: heartbeat + [dispatcher, hooks, maintenance] + listeners + [spool, notify, reload],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        return Daemon(
            group: group, state: state, dispatcher: dispatcher, reloader: reloader, intake: intake, ledger: ledger,
            work: work, stateLock: stateLock, logger: logger)
    }

    /// Raises the soft limit on open descriptors to the hard one (systemd's default soft limit is
    /// 1,024) and returns the connection cap per listener that fits in it with room to spare for
    /// the ledger, the spool, SendGrid and the journal: a flood of connections must never take the
    /// descriptors intake and the dispatcher need.
    static func connectionCap(configuration: DaemonConfiguration, logger: Logger) -> Int {
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        let listeners = configuration.listen.value == nil ? 1 : 2
        let reserve = 256
        let available = limit.rlim_cur >= UInt(Int.max) ? Int.max : Int(limit.rlim_cur)
        let fitting = max(16, (available - reserve) / listeners)
        let wanted = configuration.apiMaxConnections.value
        guard fitting < wanted else { return wanted }
        logger.warning(
            "the descriptor limit is too low for api_max_connections; the control API holds fewer connections",
            metadata: [
                "limit": "\(available)", "api_max_connections": "\(wanted)", "used": "\(fitting)",
                "fix": "raise LimitNOFILE",
            ])
        return fitting
    }

    /// "12 queued, next in 41 min, 7/10 left today" (systemd's STATUS= line).
    static func statusLine(state: ControlState) async -> String {
        let lanes = state.laneStatuses
        let queued = lanes.map(\.queued).reduce(0, +)
        let t = state.now()
        var parts = ["\(queued) queued"]
        if let next = lanes.compactMap(\.nextSendAt).min() {
            let seconds = Int(max(0, next.timeIntervalSince(t)))
            parts.append(
                seconds < 60
                    ? "next in \(seconds) s"
                    : seconds < 3600
                        ? "next in \(seconds / 60) min" : "next in \(seconds / 3600) h \(seconds % 3600 / 60) min")
        }
        let configuration = state.configuration
        // The ledger reads run on the API's read threads, never on a thread that serves requests.
        let (dailies, holds) =
            (try? await state.work.read { [configuration] () -> ([RuleBudget], [StoredHold]?) in
                var dailies: [RuleBudget] = []
                for account in configuration.accounts {
                    let budgets = try? await state.accountBudgets(account.name, includeBlocks: false, now: t)
                    if let daily = budgets?.first(where: { $0.rule == .accountDaily }) { dailies.append(daily) }
                }
                return (dailies, try? await state.ledger.activeHolds(account: nil))
            }) ?? ([], nil)
        let left = dailies.map(\.remaining).reduce(0, +)
        let limit = dailies.map(\.limit).reduce(0, +)
        parts.append("\(left)/\(limit) left today")
        let paused = lanes.filter { $0.paused != nil }.map(\.account)
        if !paused.isEmpty { parts.append("PAUSED: \(paused.joined(separator: ","))") }
        if let reason = state.ledger.unreachableReason {
            parts.append("LEDGER UNREACHABLE: nothing is sent (\(reason))")
        }
        // A shared ledger (#14): a host whose clock disagrees sends nothing; a standby names itself.
        let dispatch = configuration.accounts.map { ($0.name, state.ledger.dispatch(account: $0.name)) }
        if state.ledger.unreachableReason == nil, let refusal = dispatch.compactMap({ $0.1.refusal }).first {
            parts.append("NOT SENDING: \(refusal)")
        }
        let standby = dispatch.filter { if case .standsBy = $0.1 { return true } else { return false } }.map(\.0)
        if !standby.isEmpty { parts.append("standby for \(standby.joined(separator: ",")) (another host leads)") }
        if lanes.contains(where: \.waitingForLedger) {
            parts.append("LEDGER NOT WRITABLE: waiting to record an answer")
        }
        let held = lanes.map(\.held).reduce(0, +)
        if held > 0 {
            parts.append(
                "HELD: \(held) job\(held == 1 ? "" : "s") with a time zone the tz data lacks (refreshctl jobs)")
        }
        if let holds, !holds.isEmpty {
            let scopes = holds.map { hold in hold.segmentID.map { "\(hold.account)/\($0.prefix(8))" } ?? hold.account }
            parts.append("ON HOLD: \(scopes.joined(separator: ",")) (refreshctl release)")
        }
        if state.intakeState?.blocked != nil { parts.append("SPOOL INTAKE BLOCKED (see refreshctl status)") }
        return parts.joined(separator: ", ")
    }
}
