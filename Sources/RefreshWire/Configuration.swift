import Foundation
import RefreshCore

/// Where a configuration value came from, for `refreshd check-config`.
public enum ConfigSource: Sendable, Equatable, CustomStringConvertible {
    case builtIn
    case file(path: String, line: Int?)
    case environment(String)
    case commandLine(String)
    /// A systemd-provided directory or credential (`$STATE_DIRECTORY`, `$CREDENTIALS_DIRECTORY`).
    case systemd(String)

    public var description: String {
        switch self {
        case .builtIn: return "default"
        case .file(let path, let line): return line.map { "\(path):\($0)" } ?? path
        case .environment(let name): return "environment \(name)"
        case .commandLine(let flag): return "command line \(flag)"
        case .systemd(let what): return "systemd \(what)"
        }
    }
}

/// A value and where it came from.
public struct Setting<Value: Sendable>: Sendable {
    public var value: Value
    public var source: ConfigSource

    public init(_ value: Value, _ source: ConfigSource = .builtIn) {
        self.value = value
        self.source = source
    }
}

extension Setting: Equatable where Value: Equatable {}

/// A SendGrid API key. Its description is redacted, so string interpolation can never leak it.
public struct APIKey: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The key itself: only for the Authorization header.
    public let secret: String

    public init(_ secret: String) { self.secret = secret }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
}

/// One SendGrid account refreshd sends for.
public struct AccountConfiguration: Sendable, Equatable {
    /// The local label (logs, the API, job files).
    public var name: String
    /// The SendGrid account's stable identity as the operator names it (`id`): two keys of one
    /// SendGrid account share it. Nil: derived from the key (`identity`).
    public var id: String?
    public var apiKeyFile: String?
    public var apiKeyEnv: String?
    public var onBehalfOf: String?
    /// A per-account daily limit, lower than `[limits] account_daily`.
    public var accountDaily: Int?
    /// The key found (nil: this account runs dry).
    public var apiKey: APIKey?
    /// Where the key came from, or why there is none.
    public var apiKeySource: String

    public init(
        name: String, id: String? = nil, apiKeyFile: String? = nil, apiKeyEnv: String? = nil, onBehalfOf: String? = nil,
        accountDaily: Int? = nil,
        apiKey: APIKey? = nil, apiKeySource: String
    ) {
        self.name = name
        self.id = id
        self.apiKeyFile = apiKeyFile
        self.apiKeyEnv = apiKeyEnv
        self.onBehalfOf = onBehalfOf
        self.accountDaily = accountDaily
        self.apiKey = apiKey
        self.apiKeySource = apiKeySource
    }
}

extension AccountConfiguration {
    /// The SendGrid account this entry sends for, stable across hosts and restarts, never
    /// revealing the key: the configured `id`, else `key-` and the first 16 hex digits of
    /// SHA-256 over a fixed label, the key and `on_behalf_of` (a subuser is an account of its
    /// own), else (no key: nothing is ever sent) `local-` and the name. Two entries with one
    /// identity are one SendGrid account and are refused.
    public var identity: String {
        if let id { return id }
        guard let key = apiKey else { return "local-" + name }
        let material = "refreshd account identity 1\u{0}" + key.secret + "\u{0}" + (onBehalfOf ?? "")
        return "key-" + SHA256.hex(material.utf8).prefix(16)
    }

    /// What `id` may be: 1-128 letters, digits, '.', '_', ':' or '-'.
    public static func isValidID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 128
            && id.unicodeScalars.allSatisfy {
                $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "._:-".unicodeScalars.contains($0))
            }
    }
}

/// The daemon's effective configuration.
public struct DaemonConfiguration: Sendable {
    /// The config file read, if any.
    public var configPath: String?
    public var stateDir: Setting<String>
    public var spoolDir: Setting<String>
    public var socket: Setting<String>
    public var listen: Setting<String?>
    /// A file holding the token that state-changing routes need on the TCP listener.
    public var apiTokenFile: Setting<String?> = Setting(nil)
    public var dryRun: Setting<Bool>
    public var logLevel: Setting<String>
    public var retentionDays: Setting<Int>
    /// Above this many queued jobs, spool files wait in incoming/.
    public var maxQueuedJobs: Setting<Int>
    /// Days rejected spool files (and their reasons) are kept in rejected/; 0 keeps them.
    public var rejectedRetentionDays: Setting<Int> = Setting(30)
    /// Connections each control API listener holds at most; past it the oldest idle one is closed.
    public var apiMaxConnections: Setting<Int> = Setting(512)
    /// Seconds a control API connection may stay idle between requests.
    public var apiIdleTimeoutSeconds: Setting<Int> = Setting(60)
    /// Seconds a client has to send a whole request (head and body) once it starts, or after connecting.
    public var apiRequestTimeoutSeconds: Setting<Int> = Setting(10)
    /// The longest a long poll (`GET /v1/jobs/{id}?wait=`) is held before it answers.
    public var apiMaxWaitSeconds: Setting<Int> = Setting(300)
    /// Accept a plain http:// base_url to a host other than loopback (the key would travel in clear).
    public var allowInsecureHTTP: Setting<Bool> = Setting(false)
    public var sendGridBaseURL: Setting<String>
    public var requestTimeoutSeconds: Setting<Double>
    public var preflight: Setting<Bool>
    /// Seconds to establish a connection to SendGrid (no byte of the request is sent before).
    public var connectTimeoutSeconds: Setting<Double> = Setting(10)
    /// Requests that may have reached SendGrid without an answer (5xx, timeout, reset) before a
    /// job fails.
    public var maxAttempts: Setting<Int> = Setting(5)
    public var segmentDaily: Setting<Int>
    public var segmentIntervalSeconds: Setting<Int>
    public var accountDaily: Setting<Int>
    public var safetyMarginSeconds: Setting<Int>
    public var accounts: [AccountConfiguration]
    /// Programs run on events (`[[hook]]`), and how many may run at once.
    public var hooks: [HookConfiguration] = []
    public var hookMaxConcurrent: Setting<Int> = Setting(4)
    /// `[ledger]`: SQLite in the state directory, or PostgreSQL.
    public var ledger = LedgerConfiguration()

    /// Each account's SendGrid identity by local name (the loader refuses two names with one).
    public var identities: [String: String] {
        Dictionary(accounts.map { ($0.name, $0.identity) }, uniquingKeysWith: { first, _ in first })
    }

    /// How far a host's clock may be from a shared ledger's database before it sends nothing
    /// (R17): half the safety margin (README, "Clocks").
    public var maxClockSkewSeconds: Double { Double(safetyMarginSeconds.value) / 2 }

    /// The ledger file inside the state directory.
    public var ledgerPath: String { stateDir.value + "/ledger.sqlite" }

    /// The limits for one account, as the engine takes them.
    public func limits(for account: String) -> Limits {
        let perAccount = accounts.first { $0.name == account }?.accountDaily
        return Limits(
            segmentDaily: segmentDaily.value, segmentIntervalSeconds: Double(segmentIntervalSeconds.value),
            accountDaily: min(accountDaily.value, perAccount ?? Int.max),
            safetyMarginSeconds: Double(safetyMarginSeconds.value))
    }

    /// Whether an account only pretends to send (no key, or `dry_run`).
    public func isDryRun(_ account: AccountConfiguration) -> Bool { dryRun.value || account.apiKey == nil }

    /// SendGrid's documented limits: refreshd may lower them, never raise them.
    public enum SendGridLimits {
        public static let segmentDaily = 2
        public static let segmentIntervalSeconds = 3600
        public static let accountDaily = 10
    }
}

/// Why a configuration was refused: every problem found, each naming the key (and line).
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var problems: [String]

    public init(_ problems: [String]) { self.problems = problems }

    public var description: String {
        problems.count == 1
            ? "invalid configuration: " + problems[0]
            : "invalid configuration:\n" + problems.map { "  - " + $0 }.joined(separator: "\n")
    }
}

/// A program refreshd runs when an event happens (`[[hook]]`): never through a shell, with the
/// event as JSON on standard input and as environment variables, never the API key.
public struct HookConfiguration: Sendable, Equatable {
    /// Every event a hook may name.
    public static let events = [
        "sent", "coalesced", "failed", "expired", "cancelled", "account_paused", "ledger_unwritable",
    ]
    public var on: [String]
    /// An absolute path.
    public var exec: String
    public var args: [String]
    public var timeoutSeconds: Int

    public init(on: [String], exec: String, args: [String] = [], timeoutSeconds: Int = 10) {
        self.on = on
        self.exec = exec
        self.args = args
        self.timeoutSeconds = timeoutSeconds
    }
}
