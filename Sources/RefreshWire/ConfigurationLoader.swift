import Foundation
import TOMLKit

/// Reads the configuration: built-in defaults, then the TOML file, then environment variables,
/// then command-line flags. Every key is optional; an unknown key or a bad value is an error
/// naming the key and its line. Keys are found in files and the environment, never logged.
public struct ConfigurationLoader {
    /// The default config file.
    public static let defaultPath = "/etc/refreshd/refreshd.toml"

    public var environment: [String: String]
    /// The effective user id (0 selects the system-wide default directories).
    public var userID: UInt32

    public init(environment: [String: String], userID: UInt32) {
        self.environment = environment
        self.userID = userID
    }

    /// Problems that do not stop the daemon (a key file readable by others).
    public private(set) var warnings: [String] = []

    /// Loads the configuration. `explicitPath` is `--config`; without it `REFRESHD_CONFIG`, then
    /// the default path, which may be absent (local defaults then).
    /// `resolvingKeys: false` skips reading API keys: `refreshctl enqueue` needs only the spool and
    /// the account names, and its users must not need read access to the key files.
    public mutating func load(explicitPath: String? = nil, resolvingKeys: Bool = true) throws -> DaemonConfiguration {
        warnings = []
        var path: String?
        var mustExist = true
        if let explicitPath {
            path = explicitPath
        } else if let fromEnvironment = environment["REFRESHD_CONFIG"], !fromEnvironment.isEmpty {
            path = fromEnvironment
        } else {
            path = Self.defaultPath
            mustExist = false
        }
        var text: String?
        if let candidate = path {
            if FileManager.default.fileExists(atPath: candidate) {
                guard let data = FileManager.default.contents(atPath: candidate) else {
                    throw ConfigurationError(["cannot read the config file \(candidate) (permission denied?)"])
                }
                guard let decoded = String(data: data, encoding: .utf8) else {
                    throw ConfigurationError(["the config file \(candidate) is not UTF-8 text"])
                }
                text = decoded
            } else if mustExist {
                throw ConfigurationError(["the config file \(candidate) does not exist"])
            } else {
                path = nil
            }
        }
        return try build(text: text, path: path, resolvingKeys: resolvingKeys)
    }

    /// Builds the configuration from a file's text (nil: no file).
    public mutating func build(text: String?, path: String?, resolvingKeys: Bool = true) throws -> DaemonConfiguration {
        var problems: [String] = []
        var config = defaults()
        config.configPath = path
        if let text, let path {
            let table: TOMLTable
            do {
                table = try TOMLTable(string: text)
            } catch let error as TOMLParseError {
                throw ConfigurationError(["\(path):\(error.source.begin.line): \(error.description)"])
            }
            var reader = TableReader(path: path, lines: TOMLLines(text), problems: [])
            reader.apply(table, to: &config)
            problems += reader.problems
        }
        applyEnvironment(to: &config, problems: &problems)
        validate(config, problems: &problems)
        guard problems.isEmpty else { throw ConfigurationError(problems) }
        if resolvingKeys { resolveKeys(&config, problems: &problems) }
        guard problems.isEmpty else { throw ConfigurationError(problems) }
        return config
    }

    // MARK: Defaults

    func defaults() -> DaemonConfiguration {
        let state: Setting<String>
        let spool: Setting<String>
        let socket: Setting<String>
        if let stateDirectory = environment["STATE_DIRECTORY"]?.split(separator: ":").first.map(String.init) {
            state = Setting(stateDirectory, .systemd("$STATE_DIRECTORY"))
            spool = Setting("/var/spool/refreshd")
            socket =
                environment["RUNTIME_DIRECTORY"]?.split(separator: ":").first.map {
                    Setting("\($0)/refreshd.sock", .systemd("$RUNTIME_DIRECTORY"))
                } ?? Setting("/run/refreshd/refreshd.sock")
        } else if userID == 0 {
            state = Setting("/var/lib/refreshd")
            spool = Setting("/var/spool/refreshd")
            socket = Setting("/run/refreshd/refreshd.sock")
        } else {
            let home = environment["HOME"] ?? NSHomeDirectory()
            let stateHome =
                environment["XDG_STATE_HOME"].flatMap { $0.hasPrefix("/") ? $0 : nil } ?? home + "/.local/state"
            state = Setting(
                stateHome + "/refreshd", .environment(environment["XDG_STATE_HOME"] != nil ? "XDG_STATE_HOME" : "HOME"))
            spool = Setting(stateHome + "/refreshd/spool", state.source)
            if let runtime = environment["XDG_RUNTIME_DIR"], runtime.hasPrefix("/") {
                socket = Setting(runtime + "/refreshd/refreshd.sock", .environment("XDG_RUNTIME_DIR"))
            } else {
                socket = Setting(stateHome + "/refreshd/refreshd.sock", state.source)
            }
        }
        return DaemonConfiguration(
            configPath: nil, stateDir: state, spoolDir: spool, socket: socket, listen: Setting(nil),
            dryRun: Setting(false),
            logLevel: Setting("info"), retentionDays: Setting(90), maxQueuedJobs: Setting(100_000),
            sendGridBaseURL: Setting("https://api.sendgrid.com"),
            requestTimeoutSeconds: Setting(30), preflight: Setting(true),
            segmentDaily: Setting(DaemonConfiguration.SendGridLimits.segmentDaily),
            segmentIntervalSeconds: Setting(DaemonConfiguration.SendGridLimits.segmentIntervalSeconds),
            accountDaily: Setting(DaemonConfiguration.SendGridLimits.accountDaily), safetyMarginSeconds: Setting(60),
            accounts: [AccountConfiguration(name: "default", apiKeySource: "none")])
    }

    // MARK: Environment

    func applyEnvironment(to config: inout DaemonConfiguration, problems: inout [String]) {
        func string(_ name: String) -> String? {
            guard let value = environment[name], !value.isEmpty else { return nil }
            return value
        }
        if let value = string("REFRESHD_STATE_DIR") {
            config.stateDir = Setting(value, .environment("REFRESHD_STATE_DIR"))
        }
        if let value = string("REFRESHD_SPOOL_DIR") {
            config.spoolDir = Setting(value, .environment("REFRESHD_SPOOL_DIR"))
        }
        if let value = string("REFRESHD_SOCKET") { config.socket = Setting(value, .environment("REFRESHD_SOCKET")) }
        if let value = string("REFRESHD_SENDGRID_BASE_URL") {
            config.sendGridBaseURL = Setting(value, .environment("REFRESHD_SENDGRID_BASE_URL"))
        }
        if let value = string("REFRESHD_LOG_LEVEL") {
            config.logLevel = Setting(value, .environment("REFRESHD_LOG_LEVEL"))
        }
        if let value = string("REFRESHD_DRY_RUN") {
            switch value.lowercased() {
            case "1", "true", "yes", "on": config.dryRun = Setting(true, .environment("REFRESHD_DRY_RUN"))
            case "0", "false", "no", "off": config.dryRun = Setting(false, .environment("REFRESHD_DRY_RUN"))
            default: problems.append("REFRESHD_DRY_RUN=\"\(value)\" is not a boolean (use true or false)")
            }
        }
    }

    // MARK: Validation

    func validate(_ config: DaemonConfiguration, problems: inout [String]) {
        func at(_ source: ConfigSource) -> String {
            switch source {
            case .file(let path, let line): return " (\(path)\(line.map { ":\($0)" } ?? ""))"
            case .environment(let name): return " (from \(name))"
            default: return ""
            }
        }
        for (key, setting) in [
            ("state_dir", config.stateDir), ("spool_dir", config.spoolDir), ("socket", config.socket),
        ] {
            if !setting.value.hasPrefix("/") {
                problems.append("\(key)\(at(setting.source)): \"\(setting.value)\" must be an absolute path")
            }
        }
        if config.socket.value.utf8.count > 107 {
            problems.append(
                "socket\(at(config.socket.source)): the path is longer than a unix socket allows (107 bytes)")
        }
        if let listen = config.listen.value, !Self.isLoopbackListen(listen) {
            problems.append(
                "listen\(at(config.listen.source)): \"\(listen)\" must be a loopback address and port such as \"127.0.0.1:8425\" "
                    + "(the API has no TLS; use the unix socket from other hosts' tooling)")
        }
        if !["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(config.logLevel.value) {
            problems.append(
                "log_level\(at(config.logLevel.source)): \"\(config.logLevel.value)\" is not one of trace, debug, info, notice, warning, error, critical"
            )
        }
        if !(1...3650).contains(config.retentionDays.value) {
            problems.append(
                "retention_days\(at(config.retentionDays.source)): \(config.retentionDays.value) is outside 1...3650")
        }
        if !(1...10_000_000).contains(config.maxQueuedJobs.value) {
            problems.append(
                "max_queued_jobs\(at(config.maxQueuedJobs.source)): \(config.maxQueuedJobs.value) is outside 1...10000000"
            )
        }
        if let url = URL(string: config.sendGridBaseURL.value), ["http", "https"].contains(url.scheme ?? ""),
            let host = url.host
        {
            if url.scheme == "http", !Self.isLoopbackHost(host), !config.allowInsecureHTTP.value {
                problems.append(
                    "sendgrid.base_url\(at(config.sendGridBaseURL.source)): \"\(config.sendGridBaseURL.value)\" is plain http to a host other than "
                        + "loopback: the API key would cross the network unencrypted; use https:// (or set [sendgrid] allow_insecure_http = true)"
                )
            }
        } else {
            problems.append(
                "sendgrid.base_url\(at(config.sendGridBaseURL.source)): \"\(config.sendGridBaseURL.value)\" is not an http(s) URL"
            )
        }
        for (key, setting, range) in [
            ("rejected_retention_days", config.rejectedRetentionDays, 0...3650),
            ("api_max_connections", config.apiMaxConnections, 16...100_000),
            ("api_idle_timeout_seconds", config.apiIdleTimeoutSeconds, 1...3600),
            ("api_request_timeout_seconds", config.apiRequestTimeoutSeconds, 1...300),
            ("api_max_wait_seconds", config.apiMaxWaitSeconds, 0...300),
            ("hook_max_concurrent", config.hookMaxConcurrent, 1...64),
        ] where !range.contains(setting.value) {
            problems.append(
                "\(key)\(at(setting.source)): \(setting.value) is outside \(range.lowerBound)...\(range.upperBound)")
        }
        if !(0.1...60).contains(config.connectTimeoutSeconds.value) {
            problems.append(
                "sendgrid.connect_timeout_seconds\(at(config.connectTimeoutSeconds.source)): \(config.connectTimeoutSeconds.value) is outside 0.1...60"
            )
        }
        if !(1...100).contains(config.maxAttempts.value) {
            problems.append(
                "sendgrid.max_attempts\(at(config.maxAttempts.source)): \(config.maxAttempts.value) is outside 1...100")
        }
        if !(0.1...300).contains(config.requestTimeoutSeconds.value) {
            problems.append(
                "sendgrid.request_timeout_seconds\(at(config.requestTimeoutSeconds.source)): \(config.requestTimeoutSeconds.value) is outside 0.1...300"
            )
        }
        let limits = DaemonConfiguration.SendGridLimits.self
        if config.segmentDaily.value > limits.segmentDaily || config.segmentDaily.value < 0 {
            problems.append(
                "limits.segment_daily\(at(config.segmentDaily.source)): \(config.segmentDaily.value) is above SendGrid's documented limit of "
                    + "\(limits.segmentDaily) per segment per day (or negative); limits may be lowered, never raised")
        }
        if config.segmentIntervalSeconds.value < limits.segmentIntervalSeconds
            || config.segmentIntervalSeconds.value > 86400
        {
            problems.append(
                "limits.segment_interval_seconds\(at(config.segmentIntervalSeconds.source)): \(config.segmentIntervalSeconds.value) is shorter "
                    + "than SendGrid's documented 3600 s between refreshes of a segment (or longer than a day); the interval may be "
                    + "lengthened, never shortened")
        }
        if config.accountDaily.value > limits.accountDaily || config.accountDaily.value < 0 {
            problems.append(
                "limits.account_daily\(at(config.accountDaily.source)): \(config.accountDaily.value) is above SendGrid's documented limit of "
                    + "\(limits.accountDaily) per account per day (or negative); limits may be lowered, never raised")
        }
        if !(0...3600).contains(config.safetyMarginSeconds.value) {
            problems.append(
                "limits.safety_margin_seconds\(at(config.safetyMarginSeconds.source)): \(config.safetyMarginSeconds.value) is outside 0...3600"
            )
        }
        let ledger = config.ledger
        if ledger.backend.value == .postgresql {
            if let url = ledger.url.value {
                do { _ = try PostgresEndpoint.parse(url) } catch {
                    problems.append("ledger.url\(at(ledger.url.source)): \(error.description)")
                }
            } else {
                problems.append(
                    "ledger.url: backend = \"postgresql\" needs the server's URL (postgres://user@host:5432/database)")
            }
        } else if ledger.url.value != nil {
            problems.append(
                "ledger.url\(at(ledger.url.source)): set, but the backend is sqlite (add backend = \"postgresql\")")
        }
        if !(1...64).contains(ledger.poolSize.value) {
            problems.append("ledger.pool_size\(at(ledger.poolSize.source)): \(ledger.poolSize.value) is outside 1...64")
        }
        if !ledger.hostID.value.isEmpty, !Self.isValidHostID(ledger.hostID.value) {
            problems.append(
                "ledger.host_id\(at(ledger.hostID.source)): \"\(ledger.hostID.value)\" must be 1-64 letters, digits, '.', '_' or '-'"
            )
        }
        var names = Set<String>()
        for account in config.accounts {
            if account.name.isEmpty || account.name.count > 64
                || !account.name.unicodeScalars.allSatisfy({
                    CharacterSet.alphanumerics.contains($0) || "._-".unicodeScalars.contains($0)
                })
            {
                problems.append("account.name: \"\(account.name)\" must be 1-64 letters, digits, '.', '_' or '-'")
            }
            if !names.insert(account.name).inserted {
                problems.append("account.name: \"\(account.name)\" is configured twice")
            }
            if let id = account.id, !AccountConfiguration.isValidID(id) {
                problems.append(
                    "account \"\(account.name)\" id: \"\(id)\" must be 1-128 letters, digits, '.', '_', ':' or '-' "
                        + "(the SendGrid account's own name for it, the same on every host)")
            }
            // Two entries naming one SendGrid account by `id` (two keys of one account, say) are
            // one account, refused like one key twice.
            if let id = account.id, let other = config.accounts.first(where: { $0.id == id }),
                other.name != account.name
            {
                problems.append(
                    "accounts \"\(other.name)\" and \"\(account.name)\" both have id \"\(id)\": that is one SendGrid "
                        + "account, whose daily budget each would spend as its own; keep one of them")
            }
            if let daily = account.accountDaily, daily > limits.accountDaily || daily < 0 {
                problems.append(
                    "account \"\(account.name)\" account_daily: \(daily) is above SendGrid's documented limit of \(limits.accountDaily) "
                        + "(or negative); limits may be lowered, never raised")
            }
        }
    }

    /// 127.0.0.0/8, ::1 or localhost.
    static func isLoopbackHost(_ host: String) -> Bool {
        let bare = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if bare == "localhost" || bare == "::1" { return true }
        let parts = bare.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    static func isLoopbackListen(_ listen: String) -> Bool {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
            (1...65535).contains(port)
        else {
            return false
        }
        return ["127.0.0.1", "[::1]", "localhost"].contains(String(listen[..<colon]))
    }

    // MARK: Keys

    mutating func resolveKeys(_ config: inout DaemonConfiguration, problems: inout [String]) {
        resolveLedger(&config.ledger, problems: &problems)
        // The API token guards writes on the TCP listener: like a key, it must not be world-readable.
        if let file = config.apiTokenFile.value,
            let attributes = try? FileManager.default.attributesOfItem(atPath: file),
            let mode = attributes[.posixPermissions] as? Int, mode & 0o004 != 0
        {
            warnings.append(
                "the API token file \(file) is readable by every user (mode \(String(mode, radix: 8))); run: chmod o-r \(file)"
            )
        }
        for index in config.accounts.indices {
            let account = config.accounts[index]
            let credentialName = account.name == "default" ? "sendgrid-api-key" : "sendgrid-api-key-\(account.name)"
            if let file = account.apiKeyFile {
                switch readKey(file: file) {
                case .success(let key):
                    config.accounts[index].apiKey = key
                    config.accounts[index].apiKeySource = "api_key_file \(file)"
                case .failure(let reason):
                    problems.append("account \"\(account.name)\" api_key_file: \(reason)")
                }
                continue
            }
            if let directory = environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty,
                FileManager.default.fileExists(atPath: directory + "/" + credentialName)
            {
                switch readKey(file: directory + "/" + credentialName, warnIfShared: false) {
                case .success(let key):
                    config.accounts[index].apiKey = key
                    config.accounts[index].apiKeySource = "systemd credential \(credentialName)"
                case .failure(let reason):
                    problems.append("account \"\(account.name)\" systemd credential \(credentialName): \(reason)")
                }
                continue
            }
            let variable = account.apiKeyEnv ?? (account.name == "default" ? "SENDGRID_API_KEY" : nil)
            if let variable, let value = environment[variable], !value.isEmpty {
                let trimmed = value.trimmingCharacters(in: .whitespacesAndNewlines)
                if trimmed.isEmpty || trimmed.contains(where: \.isWhitespace) {
                    problems.append(
                        "account \"\(account.name)\": the key in \(variable) is blank or contains whitespace")
                } else {
                    config.accounts[index].apiKey = APIKey(trimmed)
                    config.accounts[index].apiKeySource = "environment \(variable)"
                }
                continue
            }
            config.accounts[index].apiKeySource =
                "none found (dry-run): no api_key_file, no credential \(credentialName)"
                + (variable.map { ", no \($0)" } ?? "")
        }
        // Two accounts with one key (and the same on_behalf_of) are one SendGrid account: each
        // would believe it has the whole daily budget, and together they would cause 429s.
        for (index, account) in config.accounts.enumerated() {
            guard let key = account.apiKey else { continue }
            if let other = config.accounts[..<index].first(where: {
                $0.apiKey == key && $0.onBehalfOf == account.onBehalfOf
            }) {
                problems.append(
                    "accounts \"\(other.name)\" and \"\(account.name)\" resolve to the same SendGrid API key"
                        + (account.onBehalfOf.map { " and on_behalf_of \"\($0)\"" } ?? "")
                        + ": SendGrid counts them as one account, so each would spend the same daily budget; keep one of them "
                        + "(or give each its own key)")
            }
        }

    }

    enum KeyRead {
        case success(APIKey)
        case failure(String)
    }

    /// The ledger's password (password_file, else the systemd credential, else none: the server
    /// may not ask) and this host's id (host_id, else the machine id, else the host name).
    mutating func resolveLedger(_ ledger: inout LedgerConfiguration, problems: inout [String]) {
        if ledger.hostID.value.isEmpty {
            let machineID = (try? String(contentsOfFile: "/etc/machine-id", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines)
            if let machineID, Self.isValidHostID(machineID) {
                ledger.hostID = Setting(machineID, .systemd("machine id (/etc/machine-id)"))
            } else {
                let name = ProcessInfo.processInfo.hostName
                ledger.hostID = Setting(Self.isValidHostID(name) ? name : "localhost", .builtIn)
            }
        }
        guard ledger.backend.value == .postgresql else { return }
        let credential = "refreshd-ledger-password"
        if let file = ledger.passwordFile.value {
            switch readKey(file: file, kind: "password") {
            case .success(let password):
                ledger.password = password
                ledger.passwordSource = "password_file \(file)"
            case .failure(let reason): problems.append("ledger.password_file: \(reason)")
            }
        } else if let directory = environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty,
            FileManager.default.fileExists(atPath: directory + "/" + credential)
        {
            switch readKey(file: directory + "/" + credential, warnIfShared: false, kind: "password") {
            case .success(let password):
                ledger.password = password
                ledger.passwordSource = "systemd credential \(credential)"
            case .failure(let reason): problems.append("ledger: systemd credential \(credential): \(reason)")
            }
        } else {
            ledger.passwordSource = "none (no password_file, no credential \(credential))"
        }
    }

    /// 1-64 letters, digits, '.', '_' or '-'.
    static func isValidHostID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 64
            && id.unicodeScalars.allSatisfy {
                $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "._-".unicodeScalars.contains($0))
            }
    }

    mutating func readKey(file: String, warnIfShared: Bool = true, kind: String = "key") -> KeyRead {
        guard FileManager.default.fileExists(atPath: file) else { return .failure("\(file) does not exist") }
        guard let data = FileManager.default.contents(atPath: file) else {
            return .failure("cannot read \(file) (permission denied?)")
        }
        guard let text = String(data: data, encoding: .utf8) else { return .failure("\(file) is not text") }
        let key = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if key.isEmpty { return .failure("\(file) is empty") }
        if key.contains(where: \.isWhitespace) {
            return .failure("\(file) holds more than one word; it must hold only the \(kind)")
        }
        if warnIfShared, let attributes = try? FileManager.default.attributesOfItem(atPath: file),
            let mode = attributes[.posixPermissions] as? Int, mode & 0o004 != 0
        {
            warnings.append(
                "the \(kind) file \(file) is readable by every user (mode \(String(mode, radix: 8))); run: chmod o-r \(file)"
            )
        }
        return .success(APIKey(key))
    }
}

/// Reads the TOML tables into the configuration, collecting problems.
private struct TableReader {
    let path: String
    let lines: TOMLLines
    var problems: [String]

    func source(_ section: String?, _ key: String, index: Int? = nil) -> ConfigSource {
        .file(path: path, line: lines.line(of: key, in: section, index: index))
    }

    func place(_ section: String?, _ key: String, index: Int? = nil) -> String {
        let name = section.map { "\($0).\(key)" } ?? key
        guard let line = lines.line(of: key, in: section, index: index) else { return name }
        return "\(name) (\(path):\(line))"
    }

    mutating func apply(_ table: TOMLTable, to config: inout DaemonConfiguration) {
        let topKeys: Set<String> = [
            "state_dir", "spool_dir", "socket", "listen", "api_token_file", "dry_run", "log_level", "retention_days",
            "max_queued_jobs", "sendgrid",
            "limits", "account", "rejected_retention_days", "api_max_connections", "api_idle_timeout_seconds",
            "api_request_timeout_seconds",
            "api_max_wait_seconds", "hook", "hook_max_concurrent", "ledger",
        ]
        for key in table.keys where !topKeys.contains(key) { unknown(nil, key) }
        string(table, nil, "state_dir") { config.stateDir = $0 }
        string(table, nil, "spool_dir") { config.spoolDir = $0 }
        string(table, nil, "socket") { config.socket = $0 }
        string(table, nil, "listen") { config.listen = Setting($0.value, $0.source) }
        string(table, nil, "api_token_file") { config.apiTokenFile = Setting($0.value, $0.source) }
        bool(table, nil, "dry_run") { config.dryRun = $0 }
        string(table, nil, "log_level") { config.logLevel = $0 }
        int(table, nil, "retention_days") { config.retentionDays = $0 }
        int(table, nil, "max_queued_jobs") { config.maxQueuedJobs = $0 }
        int(table, nil, "rejected_retention_days") { config.rejectedRetentionDays = $0 }
        int(table, nil, "api_max_connections") { config.apiMaxConnections = $0 }
        int(table, nil, "api_idle_timeout_seconds") { config.apiIdleTimeoutSeconds = $0 }
        int(table, nil, "api_request_timeout_seconds") { config.apiRequestTimeoutSeconds = $0 }
        int(table, nil, "api_max_wait_seconds") { config.apiMaxWaitSeconds = $0 }
        int(table, nil, "hook_max_concurrent") { config.hookMaxConcurrent = $0 }
        if let value = table["hook"] {
            if let array = value.array {
                for (index, element) in array.enumerated() {
                    guard let entry = element.table else {
                        wrongType(nil, "hook", expected: "an array of tables [[hook]]", found: element)
                        continue
                    }
                    for key in entry.keys where !["on", "exec", "args", "timeout_seconds"].contains(key) {
                        unknown("hook", key, index: index)
                    }
                    var hook = HookConfiguration(on: [], exec: "")
                    string(entry, "hook", "exec", index: index) { hook.exec = $0.value }
                    strings(entry, "hook", "on", index: index) { hook.on = $0 }
                    strings(entry, "hook", "args", index: index) { hook.args = $0 }
                    int(entry, "hook", "timeout_seconds", index: index) { hook.timeoutSeconds = $0.value }
                    let at = place("hook", "exec", index: index)
                    if !hook.exec.hasPrefix("/") {
                        problems.append(
                            "hook #\(index + 1) (\(at)): exec must be an absolute path to a program (it is run directly, never through a shell)"
                        )
                    } else if !FileManager.default.isExecutableFile(atPath: hook.exec) {
                        problems.append("hook #\(index + 1) (\(at)): \(hook.exec) is not an executable file")
                    }
                    if hook.on.isEmpty {
                        problems.append(
                            "hook #\(index + 1) (\(path)): on is missing (events: \(HookConfiguration.events.joined(separator: ", ")))"
                        )
                    }
                    for event in hook.on where !HookConfiguration.events.contains(event) {
                        problems.append(
                            "hook #\(index + 1) (\(path)): unknown event \"\(event)\" (events: \(HookConfiguration.events.joined(separator: ", ")))"
                        )
                    }
                    if !(1...300).contains(hook.timeoutSeconds) {
                        problems.append(
                            "hook #\(index + 1) (\(path)): timeout_seconds \(hook.timeoutSeconds) is outside 1...300")
                    }
                    config.hooks.append(hook)
                }
            } else {
                wrongType(nil, "hook", expected: "an array of tables [[hook]]", found: value)
            }
        }
        if let value = table["ledger"] {
            if let ledger = value.table {
                for key in ledger.keys
                where !["backend", "url", "password_file", "tls", "pool_size", "host_id"].contains(key) {
                    unknown("ledger", key)
                }
                choice(ledger, "ledger", "backend", "a ledger backend") { config.ledger.backend = $0 }
                string(ledger, "ledger", "url") { config.ledger.url = Setting($0.value, $0.source) }
                string(ledger, "ledger", "password_file") { config.ledger.passwordFile = Setting($0.value, $0.source) }
                choice(ledger, "ledger", "tls", "a TLS mode") { config.ledger.tls = $0 }
                int(ledger, "ledger", "pool_size") { config.ledger.poolSize = $0 }
                string(ledger, "ledger", "host_id") { config.ledger.hostID = $0 }
            } else {
                wrongType(nil, "ledger", expected: "a table [ledger]", found: value)
            }
        }
        if let value = table["sendgrid"] {
            if let sendgrid = value.table {
                for key in sendgrid.keys
                where ![
                    "base_url", "request_timeout_seconds", "connect_timeout_seconds", "preflight", "max_attempts",
                    "allow_insecure_http",
                ].contains(key) {
                    unknown("sendgrid", key)
                }
                bool(sendgrid, "sendgrid", "allow_insecure_http") { config.allowInsecureHTTP = $0 }
                string(sendgrid, "sendgrid", "base_url") { config.sendGridBaseURL = $0 }
                number(sendgrid, "sendgrid", "request_timeout_seconds") { config.requestTimeoutSeconds = $0 }
                number(sendgrid, "sendgrid", "connect_timeout_seconds") { config.connectTimeoutSeconds = $0 }
                bool(sendgrid, "sendgrid", "preflight") { config.preflight = $0 }
                int(sendgrid, "sendgrid", "max_attempts") { config.maxAttempts = $0 }
            } else {
                wrongType(nil, "sendgrid", expected: "a table [sendgrid]", found: value)
            }
        }
        if let value = table["limits"] {
            if let limits = value.table {
                for key in limits.keys
                where !["segment_daily", "segment_interval_seconds", "account_daily", "safety_margin_seconds"].contains(
                    key)
                {
                    unknown("limits", key)
                }
                int(limits, "limits", "segment_daily") { config.segmentDaily = $0 }
                int(limits, "limits", "segment_interval_seconds") { config.segmentIntervalSeconds = $0 }
                int(limits, "limits", "account_daily") { config.accountDaily = $0 }
                int(limits, "limits", "safety_margin_seconds") { config.safetyMarginSeconds = $0 }
            } else {
                wrongType(nil, "limits", expected: "a table [limits]", found: value)
            }
        }
        if let value = table["account"] {
            guard let array = value.array else {
                wrongType(nil, "account", expected: "an array of tables [[account]]", found: value)
                return
            }
            var accounts: [AccountConfiguration] = []
            for (index, element) in array.enumerated() {
                guard let entry = element.table else {
                    wrongType(nil, "account", expected: "an array of tables [[account]]", found: element)
                    continue
                }
                for key in entry.keys
                where !["name", "id", "api_key_file", "api_key_env", "on_behalf_of", "account_daily"].contains(key) {
                    unknown("account", key, index: index)
                }
                var account = AccountConfiguration(name: "", apiKeySource: "none")
                var hasName = false
                string(entry, "account", "name", index: index) {
                    account.name = $0.value
                    hasName = true
                }
                if !hasName { problems.append("account #\(index + 1) (\(path)): name is missing") }
                string(entry, "account", "id", index: index) { account.id = $0.value }
                string(entry, "account", "api_key_file", index: index) { account.apiKeyFile = $0.value }
                string(entry, "account", "api_key_env", index: index) { account.apiKeyEnv = $0.value }
                string(entry, "account", "on_behalf_of", index: index) { account.onBehalfOf = $0.value }
                int(entry, "account", "account_daily", index: index) { account.accountDaily = $0.value }
                accounts.append(account)
            }
            if !accounts.isEmpty { config.accounts = accounts }
        }
    }

    mutating func unknown(_ section: String?, _ key: String, index: Int? = nil) {
        problems.append("\(place(section, key, index: index)): unknown key")
    }

    mutating func wrongType(
        _ section: String?, _ key: String, expected: String, found: TOMLValueConvertible, index: Int? = nil
    ) {
        problems.append("\(place(section, key, index: index)): expected \(expected), found \(found.type)")
    }

    /// A string that must name one of an enumeration's cases; a problem naming them otherwise.
    mutating func choice<Choice: RawRepresentable & CaseIterable>(
        _ table: TOMLTable, _ section: String, _ key: String, _ what: String, _ set: (Setting<Choice>) -> Void
    ) where Choice.RawValue == String {
        var found: Setting<String>?
        string(table, section, key) { found = $0 }
        guard let found else { return }
        if let value = Choice(rawValue: found.value) {
            set(Setting(value, found.source))
        } else {
            let names = Choice.allCases.map(\.rawValue)
            problems.append(
                "\(place(section, key)): \"\(found.value)\" is not \(what) (\(names.dropLast().joined(separator: ", ")) or \(names.last ?? ""))"
            )
        }
    }

    mutating func string(
        _ table: TOMLTable, _ section: String?, _ key: String, index: Int? = nil, _ set: (Setting<String>) -> Void
    ) {
        guard let value = table[key] else { return }
        guard let string = value.string else {
            return wrongType(section, key, expected: "a string", found: value, index: index)
        }
        set(Setting(string, source(section, key, index: index)))
    }

    mutating func strings(
        _ table: TOMLTable, _ section: String?, _ key: String, index: Int? = nil, _ set: ([String]) -> Void
    ) {
        guard let value = table[key] else { return }
        guard let array = value.array else {
            return wrongType(section, key, expected: "an array of strings", found: value, index: index)
        }
        var strings: [String] = []
        for element in array {
            guard let string = element.string else {
                return wrongType(section, key, expected: "an array of strings", found: value, index: index)
            }
            strings.append(string)
        }
        set(strings)
    }

    mutating func bool(
        _ table: TOMLTable, _ section: String?, _ key: String, index: Int? = nil, _ set: (Setting<Bool>) -> Void
    ) {
        guard let value = table[key] else { return }
        guard let bool = value.bool else {
            return wrongType(section, key, expected: "true or false", found: value, index: index)
        }
        set(Setting(bool, source(section, key, index: index)))
    }

    mutating func int(
        _ table: TOMLTable, _ section: String?, _ key: String, index: Int? = nil, _ set: (Setting<Int>) -> Void
    ) {
        guard let value = table[key] else { return }
        guard let int = value.int else {
            return wrongType(section, key, expected: "an integer", found: value, index: index)
        }
        set(Setting(int, source(section, key, index: index)))
    }

    mutating func number(
        _ table: TOMLTable, _ section: String?, _ key: String, index: Int? = nil, _ set: (Setting<Double>) -> Void
    ) {
        guard let value = table[key] else { return }
        guard let number = value.double ?? value.int.map(Double.init) else {
            return wrongType(section, key, expected: "a number", found: value, index: index)
        }
        set(Setting(number, source(section, key, index: index)))
    }
}

/// Finds the line of a key in TOML text (TOMLKit does not report value positions).
struct TOMLLines {
    /// (line number, section, index of the [[section]] occurrence, key)
    private var entries: [(line: Int, section: String?, index: Int, key: String)] = []

    init(_ text: String) {
        var section: String?
        var occurrences: [String: Int] = [:]
        var index = 0
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("[[") {
                let name = line.dropFirst(2).prefix { $0 != "]" }.trimmingCharacters(in: .whitespaces)
                entries.append((number + 1, nil, 0, name))
                section = name
                index = occurrences[name, default: -1] + 1
                occurrences[name] = index
            } else if line.hasPrefix("[") {
                section = line.dropFirst().prefix { $0 != "]" }.trimmingCharacters(in: .whitespaces)
                entries.append((number + 1, nil, 0, section!))
                index = 0
            } else if let equals = line.firstIndex(of: "="), !line.hasPrefix("#") {
                let key = line[..<equals].trimmingCharacters(in: .whitespaces).trimmingCharacters(
                    in: CharacterSet(charactersIn: "\"'"))
                entries.append((number + 1, section, index, key))
            }
        }
    }

    func line(of key: String, in section: String?, index: Int? = nil) -> Int? {
        entries.first { $0.key == key && $0.section == section && $0.index == (index ?? 0) }?.line
    }
}
