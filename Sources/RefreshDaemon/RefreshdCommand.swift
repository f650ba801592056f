import ArgumentParser
import Foundation
import Logging
import RefreshPostgres
import RefreshWire
import TZData

/// `refreshd`: the daemon's command line.
public struct RefreshdCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "refreshd",
        abstract: "Queue SendGrid segment refreshes and send each at the earliest instant SendGrid's limits allow.",
        discussion: """
            refreshd keeps a SQLite ledger of every job and every refresh, enforces SendGrid's limits (2 per segment \
            per local day, 1 per segment per hour, 10 per account per UTC day) before forwarding, and never causes \
            a 429 itself. Without an API key it runs in dry-run mode.

            Configuration: /etc/refreshd/refreshd.toml (or --config, or $REFRESHD_CONFIG); every key is optional.

            Exit codes:
              0   stopped cleanly (SIGTERM or SIGINT)
              1   runtime failure
              2   usage error
              72  the tz database cannot be read
              73  the state directory cannot be created
              74  the ledger cannot be opened (corrupt, unreadable); it is never overwritten
              75  another refreshd is running on the same state directory (it is named)
              78  the configuration is invalid
            """,
        version: DaemonApplication.version,
        subcommands: [Run.self, CheckConfig.self, Version.self],
        defaultSubcommand: Run.self
    )

    public init() {}

    /// Options shared by the subcommands.
    struct ConfigOptions: ParsableArguments {
        @Option(
            name: .long,
            help: ArgumentHelp(
                "The config file (default: $REFRESHD_CONFIG, else /etc/refreshd/refreshd.toml).", valueName: "file"))
        var config: String?
    }

    /// `refreshd run`.
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run the daemon (the default).")

        @OptionGroup var options: ConfigOptions

        func run() async throws {
            let environment = ProcessInfo.processInfo.environment
            var loader = ConfigurationLoader(environment: environment, userID: getuid())
            let configuration: DaemonConfiguration
            do {
                configuration = try loader.load(explicitPath: options.config)
            } catch {
                FileHandle.standardError.write(Data("refreshd: \(error)\n".utf8))
                throw ExitCode(78)
            }
            let level = Logger.Level(rawValue: configuration.logLevel.value) ?? .info
            let journald = environment["JOURNAL_STREAM"] != nil
            let levels = LogLevelControl(level)
            let logger = Logger(label: "refreshd") { label in
                JournalLogHandler(label: label, level: level, journald: journald, control: levels, clock: { Date() })
            }
            for warning in loader.warnings { logger.warning("\(warning)") }
            do {
                try await DaemonApplication.run(
                    configuration: configuration, logger: logger, environment: environment, configPath: options.config,
                    levels: levels)
            } catch let error as DaemonApplication.StartupError {
                logger.critical("refreshd cannot start: \(error.description)")
                throw ExitCode(error.exitCode)
            }
        }
    }

    /// `refreshd check-config`.
    struct CheckConfig: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check-config",
            abstract: "Print the effective configuration (secrets redacted) and where each value came from.",
            discussion: """
                With backend = "postgresql" it also logs in to the ledger's database once and says what it found \
                (the server's version, refreshd's schema version) or why it could not.
                Exits 0 when the configuration is valid (and the database answered), 78 with the reasons when \
                it is not (the database refusing the login, a missing database or privilege included), 74 when \
                the database cannot be reached.
                """)

        @OptionGroup var options: ConfigOptions

        func run() async throws {
            var loader = ConfigurationLoader(environment: ProcessInfo.processInfo.environment, userID: getuid())
            let configuration: DaemonConfiguration
            do {
                configuration = try loader.load(explicitPath: options.config)
            } catch {
                FileHandle.standardError.write(Data("refreshd: \(error)\n".utf8))
                throw ExitCode(78)
            }
            print(ConfigurationReport(configuration: configuration, warnings: loader.warnings).text, terminator: "")
            guard configuration.ledger.backend.value == .postgresql else { return }
            switch await PostgresLedgerConnection.probe(configuration.ledger) {
            case .success(let found):
                let schema =
                    found.schemaVersion.map { "schema version \($0)" }
                    ?? "no refreshd schema yet (created at first start)"
                print(
                    "# ledger: PostgreSQL \(found.serverVersion) at \(configuration.ledger.endpoint.map { "\($0)" } ?? ""), \(schema)"
                )
            case .failure(let failure):
                print("# ledger: \(failure.refused ? "REFUSED" : "UNREACHABLE"): \(failure.description)")
                FileHandle.standardError.write(Data("refreshd: the ledger's database: \(failure.description)\n".utf8))
                throw ExitCode(failure.refused ? 78 : 74)
            }
        }
    }

    /// `refreshd version`.
    struct Version: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print refreshd's version and the tz data version it reads.")

        func run() throws {
            let path = ZoneInfoDirectory.defaultPath(environment: ProcessInfo.processInfo.environment)
            let tzVersion = (try? ZoneInfoDirectory(path: path))?.version ?? "unreadable"
            print("refreshd \(DaemonApplication.version) (tz data \(tzVersion) from \(path))")
        }
    }
}

/// The text `refreshd check-config` prints.
public struct ConfigurationReport {
    let configuration: DaemonConfiguration
    let warnings: [String]

    public init(configuration: DaemonConfiguration, warnings: [String]) {
        self.configuration = configuration
        self.warnings = warnings
    }

    public var text: String {
        let c = configuration
        var lines: [String] = []
        lines.append(
            "# config file: \(c.configPath ?? "none found; built-in defaults (\(ConfigurationLoader.defaultPath) is absent)")"
        )
        func line<V>(_ key: String, _ setting: Setting<V>, _ render: (V) -> String) {
            let text = "\(key) = \(render(setting.value))"
            lines.append(
                text.padding(toLength: max(text.count, 52), withPad: " ", startingAt: 0) + "  # \(setting.source)")
        }
        let quoted: (String) -> String = { "\"\($0)\"" }
        line("state_dir", c.stateDir, quoted)
        line("spool_dir", c.spoolDir, quoted)
        line("socket", c.socket, quoted)
        line("listen", c.listen) { $0.map(quoted) ?? "(not set: unix socket only)" }
        line("api_token_file", c.apiTokenFile) { $0.map(quoted) ?? "(not set: the TCP listener refuses changes)" }
        line("dry_run", c.dryRun) { "\($0)" }
        line("log_level", c.logLevel, quoted)
        line("retention_days", c.retentionDays) { "\($0)" }
        line("max_queued_jobs", c.maxQueuedJobs) { "\($0)" }
        line("rejected_retention_days", c.rejectedRetentionDays) { "\($0)" }
        line("api_max_connections", c.apiMaxConnections) { "\($0)" }
        line("api_idle_timeout_seconds", c.apiIdleTimeoutSeconds) { "\($0)" }
        line("api_request_timeout_seconds", c.apiRequestTimeoutSeconds) { "\($0)" }
        line("api_max_wait_seconds", c.apiMaxWaitSeconds) { "\($0)" }
        line("hook_max_concurrent", c.hookMaxConcurrent) { "\($0)" }
        lines.append("[ledger]")
        line("backend", c.ledger.backend) { quoted($0.rawValue) }
        if c.ledger.backend.value == .sqlite {
            lines.append("# file: \(c.ledgerPath)")
        } else {
            line("url", c.ledger.url) { $0.map(quoted) ?? "(not set)" }
            line("password_file", c.ledger.passwordFile) { $0.map(quoted) ?? "(not set)" }
            lines.append(
                "# password: \(c.ledger.password == nil ? "not set" : "set (redacted)"), from \(c.ledger.passwordSource)"
            )
            line("tls", c.ledger.tls) { quoted($0.rawValue) }
            line("pool_size", c.ledger.poolSize) { "\($0)" }
        }
        line("host_id", c.ledger.hostID, quoted)
        lines.append("[sendgrid]")
        line("base_url", c.sendGridBaseURL, quoted)
        line("request_timeout_seconds", c.requestTimeoutSeconds) { "\($0)" }
        line("connect_timeout_seconds", c.connectTimeoutSeconds) { "\($0)" }
        line("preflight", c.preflight) { "\($0)" }
        line("max_attempts", c.maxAttempts) { "\($0)" }
        line("allow_insecure_http", c.allowInsecureHTTP) { "\($0)" }
        lines.append("[limits]")
        line("segment_daily", c.segmentDaily) { "\($0)" }
        line("segment_interval_seconds", c.segmentIntervalSeconds) { "\($0)" }
        line("account_daily", c.accountDaily) { "\($0)" }
        line("safety_margin_seconds", c.safetyMarginSeconds) { "\($0)" }
        for account in c.accounts {
            lines.append("[[account]]")
            lines.append("name = \"\(account.name)\"")
            if let id = account.id { lines.append("id = \"\(id)\"") }
            if let file = account.apiKeyFile { lines.append("api_key_file = \"\(file)\"") }
            if let env = account.apiKeyEnv { lines.append("api_key_env = \"\(env)\"") }
            if let behalf = account.onBehalfOf { lines.append("on_behalf_of = \"\(behalf)\"") }
            if let daily = account.accountDaily { lines.append("account_daily = \(daily)") }
            lines.append(
                "# api key: \(account.apiKey == nil ? "not set" : "set (redacted)"), from \(account.apiKeySource)")
            lines.append("# mode: \(c.isDryRun(account) ? "DRY-RUN (nothing is sent to SendGrid)" : "live")")
            lines.append(
                "# identity: \(account.identity) (\(account.id != nil ? "the configured id" : account.apiKey != nil ? "a digest of the key and on_behalf_of" : "no key: this host only"))"
            )
        }
        for hook in c.hooks {
            lines.append("[[hook]]")
            lines.append("on = [\(hook.on.map { "\"\($0)\"" }.joined(separator: ", "))]")
            lines.append("exec = \"\(hook.exec)\"")
            if !hook.args.isEmpty { lines.append("args = [\(hook.args.map { "\"\($0)\"" }.joined(separator: ", "))]") }
            lines.append("timeout_seconds = \(hook.timeoutSeconds)")
        }
        for warning in warnings { lines.append("# warning: \(warning)") }
        lines.append("# configuration is valid")
        return lines.joined(separator: "\n") + "\n"
    }
}

extension RefreshdCommand {
    /// Parses the process arguments and runs the command (async subcommands included), exiting
    /// with the command's code; usage errors exit 2.
    public static func runFromCommandLine() async {
        var arguments = Array(CommandLine.arguments.dropFirst())
        // `refreshd --config F` means `refreshd run --config F`: run is the default subcommand.
        // The parser's own requests (help, version, the manual generator's dump, shell completion)
        // are for refreshd itself, not for run.
        let ownRequests = [
            "-h", "--help", "--version", "--help-hidden", "--experimental-dump-help", "--generate-completion-script",
            "---completion",
        ]
        if let first = arguments.first, first.hasPrefix("-"),
            !ownRequests.contains(where: { first == $0 || first.hasPrefix($0 + "=") })
        {
            arguments.insert("run", at: 0)
        }
        do {
            var command = try parseAsRoot(arguments)
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}
