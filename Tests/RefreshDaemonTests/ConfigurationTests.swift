import Foundation
import Logging
import RefreshCore
import RefreshWire
import Testing

@testable import RefreshDaemon

func temporaryDirectory() -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("refreshd-daemon-\(UUID().uuidString)")
        .path
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// An obviously fake key: never a real SendGrid key in tests.
let fakeKey = "SG.fake-test-key-not-real.0123456789"

func load(_ text: String?, environment: [String: String] = [:], userID: UInt32 = 1000) throws -> (
    DaemonConfiguration, [String]
) {
    var loader = ConfigurationLoader(environment: ["HOME": "/home/op"].merging(environment) { $1 }, userID: userID)
    let configuration = try loader.build(text: text, path: text == nil ? nil : "/etc/refreshd/refreshd.toml")
    return (configuration, loader.warnings)
}

func problems(_ text: String, environment: [String: String] = [:]) -> [String] {
    do {
        _ = try load(text, environment: environment)
        return []
    } catch let error as ConfigurationError {
        return error.problems
    } catch {
        return ["\(error)"]
    }
}

@Suite("Configuration")
struct ConfigurationTests {
    /// Every key is read, with the line it came from.
    @Test func everyKey() throws {
        let directory = temporaryDirectory()
        try fakeKey.write(toFile: directory + "/key", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: directory + "/key")
        let text = """
            state_dir = "/srv/refreshd/state"
            spool_dir = "/srv/refreshd/spool"
            socket = "/srv/refreshd/refreshd.sock"
            listen = "127.0.0.1:8425"
            dry_run = true
            log_level = "debug"
            retention_days = 30

            [sendgrid]
            base_url = "http://127.0.0.1:9999"
            request_timeout_seconds = 12.5
            preflight = false

            [limits]
            segment_daily = 1
            segment_interval_seconds = 7200
            account_daily = 8
            safety_margin_seconds = 120

            [[account]]
            name = "default"
            api_key_file = "\(directory)/key"
            on_behalf_of = "sub-1"
            account_daily = 5

            [[account]]
            name = "eu"
            api_key_env = "EU_KEY"
            """
        let (c, warnings) = try load(text, environment: ["EU_KEY": fakeKey])
        #expect(warnings.isEmpty)
        #expect(c.stateDir == Setting("/srv/refreshd/state", .file(path: "/etc/refreshd/refreshd.toml", line: 1)))
        #expect(c.spoolDir.value == "/srv/refreshd/spool" && c.socket.value == "/srv/refreshd/refreshd.sock")
        #expect(
            c.listen.value == "127.0.0.1:8425" && c.dryRun.value && c.logLevel.value == "debug"
                && c.retentionDays.value == 30)
        #expect(
            c.sendGridBaseURL.value == "http://127.0.0.1:9999" && c.requestTimeoutSeconds.value == 12.5
                && !c.preflight.value)
        #expect(c.preflight.source == .file(path: "/etc/refreshd/refreshd.toml", line: 12))
        #expect(c.segmentDaily.value == 1 && c.segmentIntervalSeconds.value == 7200 && c.accountDaily.value == 8)
        #expect(c.safetyMarginSeconds.value == 120)
        #expect(c.accounts.map(\.name) == ["default", "eu"])
        #expect(c.accounts[0].apiKey == APIKey(fakeKey) && c.accounts[0].onBehalfOf == "sub-1")
        #expect(c.accounts[1].apiKey == APIKey(fakeKey) && c.accounts[1].apiKeySource == "environment EU_KEY")
        #expect(c.limits(for: "default").accountDaily == 5)
        #expect(c.limits(for: "eu").accountDaily == 8)
        #expect(c.ledgerPath == "/srv/refreshd/state/ledger.sqlite")
    }

    /// No file: local defaults for a normal user, for root, and under systemd.
    @Test func defaults() throws {
        let (user, _) = try load(nil, environment: ["XDG_RUNTIME_DIR": "/run/user/1000"])
        #expect(user.stateDir.value == "/home/op/.local/state/refreshd")
        #expect(user.spoolDir.value == "/home/op/.local/state/refreshd/spool")
        #expect(user.socket.value == "/run/user/1000/refreshd/refreshd.sock")
        #expect(user.accounts.map(\.name) == ["default"] && user.accounts[0].apiKey == nil)
        #expect(user.isDryRun(user.accounts[0]))
        #expect(user.limits(for: "default") == .init())
        let (xdg, _) = try load(nil, environment: ["XDG_STATE_HOME": "/data/state"])
        #expect(
            xdg.stateDir.value == "/data/state/refreshd" && xdg.socket.value == "/data/state/refreshd/refreshd.sock")
        let (root, _) = try load(nil, userID: 0)
        #expect(root.stateDir.value == "/var/lib/refreshd" && root.spoolDir.value == "/var/spool/refreshd")
        #expect(root.socket.value == "/run/refreshd/refreshd.sock")
        let (systemd, _) = try load(
            nil, environment: ["STATE_DIRECTORY": "/var/lib/refreshd", "RUNTIME_DIRECTORY": "/run/refreshd"],
            userID: 990)
        #expect(systemd.stateDir == Setting("/var/lib/refreshd", .systemd("$STATE_DIRECTORY")))
        #expect(
            systemd.socket.value == "/run/refreshd/refreshd.sock" && systemd.spoolDir.value == "/var/spool/refreshd")
    }

    /// Environment variables win over the file.
    @Test func environmentPrecedence() throws {
        let text = "state_dir = \"/from/file\"\ndry_run = false\n"
        let (c, _) = try load(
            text,
            environment: [
                "REFRESHD_STATE_DIR": "/from/env", "REFRESHD_DRY_RUN": "yes", "REFRESHD_SOCKET": "/tmp/r.sock",
                "REFRESHD_SPOOL_DIR": "/tmp/spool", "REFRESHD_SENDGRID_BASE_URL": "http://127.0.0.1:1",
                "SENDGRID_API_KEY": fakeKey,
            ])
        #expect(c.stateDir == Setting("/from/env", .environment("REFRESHD_STATE_DIR")))
        #expect(c.dryRun == Setting(true, .environment("REFRESHD_DRY_RUN")))
        #expect(
            c.socket.value == "/tmp/r.sock" && c.spoolDir.value == "/tmp/spool"
                && c.sendGridBaseURL.value == "http://127.0.0.1:1")
        #expect(c.accounts[0].apiKey == APIKey(fakeKey) && c.accounts[0].apiKeySource == "environment SENDGRID_API_KEY")
        #expect(
            problems("", environment: ["REFRESHD_DRY_RUN": "maybe"]) == [
                "REFRESHD_DRY_RUN=\"maybe\" is not a boolean (use true or false)"
            ])
    }

    /// Unknown keys are errors naming the key and its line, in every table.
    @Test func unknownKeys() {
        let found = problems(
            "state_dir = \"/a\"\nstate_dri = \"/b\"\n[limits]\nsegment_daly = 1\n[[account]]\nname = \"x\"\napi_key = \"k\"\n[extra]\n"
        )
        #expect(found.contains("state_dri (/etc/refreshd/refreshd.toml:2): unknown key"))
        #expect(found.contains("limits.segment_daly (/etc/refreshd/refreshd.toml:4): unknown key"))
        #expect(found.contains("account.api_key (/etc/refreshd/refreshd.toml:7): unknown key"))
        #expect(found.contains("extra (/etc/refreshd/refreshd.toml:8): unknown key"))
    }

    /// Wrong types name the key, line, what was expected and what was found.
    @Test func badTypes() {
        let found = problems(
            "dry_run = \"yes\"\nretention_days = 1.5\n[limits]\naccount_daily = \"ten\"\n[sendgrid]\npreflight = 1\n")
        #expect(found.contains("dry_run (/etc/refreshd/refreshd.toml:1): expected true or false, found string"))
        #expect(
            found.contains(
                "retention_days (/etc/refreshd/refreshd.toml:2): expected an integer, found floating-point number"))
        #expect(
            found.contains("limits.account_daily (/etc/refreshd/refreshd.toml:4): expected an integer, found string"))
        #expect(
            found.contains("sendgrid.preflight (/etc/refreshd/refreshd.toml:6): expected true or false, found integer"))
        #expect(
            problems("limits = 3\n") == [
                "limits (/etc/refreshd/refreshd.toml:1): expected a table [limits], found integer"
            ])
    }

    /// Invalid TOML is reported with its line.
    @Test func syntaxError() {
        let found = problems("state_dir = \"/a\"\nthis is not toml\n")
        #expect(found.count == 1 && found[0].hasPrefix("/etc/refreshd/refreshd.toml:2: "))
    }

    /// Limits may be lowered, never raised above SendGrid's documented values.
    @Test(arguments: [
        (
            "[limits]\nsegment_daily = 3",
            "limits.segment_daily (/etc/refreshd/refreshd.toml:2): 3 is above SendGrid's documented limit of 2"
        ),
        (
            "[limits]\naccount_daily = 11",
            "limits.account_daily (/etc/refreshd/refreshd.toml:2): 11 is above SendGrid's documented limit of 10"
        ),
        (
            "[limits]\nsegment_interval_seconds = 1800",
            "limits.segment_interval_seconds (/etc/refreshd/refreshd.toml:2): 1800 is shorter than SendGrid's documented 3600 s"
        ),
        (
            "[[account]]\nname = \"a\"\naccount_daily = 12",
            "account \"a\" account_daily: 12 is above SendGrid's documented limit of 10"
        ),
    ])
    func limitsAboveSendGrid(_ text: String, _ message: String) {
        let found = problems(text)
        #expect(found.count == 1 && found[0].hasPrefix(message), "\(found)")
        #expect(found.first?.contains("never raised") == true || found.first?.contains("never shortened") == true)
    }

    /// Other bad values: relative paths, non-loopback listen, bad URLs, levels, duplicate accounts.
    @Test func badValues() {
        #expect(problems("state_dir = \"relative\"").first?.contains("must be an absolute path") == true)
        #expect(problems("listen = \"0.0.0.0:8425\"").first?.contains("must be a loopback address") == true)
        #expect(problems("log_level = \"loud\"").first?.contains("is not one of trace") == true)
        #expect(problems("retention_days = 0").first?.contains("outside 1...3650") == true)
        #expect(problems("[sendgrid]\nbase_url = \"ftp://x\"").first?.contains("is not an http(s) URL") == true)
        #expect(
            problems("[[account]]\nname = \"a\"\n[[account]]\nname = \"a\"").contains(
                "account.name: \"a\" is configured twice"))
        #expect(
            problems("[[account]]\napi_key_env = \"X\"").contains(
                "account #1 (/etc/refreshd/refreshd.toml): name is missing"))
    }

    /// A missing key file is an error naming the file; a key file readable by others is a warning.
    @Test func keyFiles() throws {
        let directory = temporaryDirectory()
        #expect(
            problems("[[account]]\nname = \"default\"\napi_key_file = \"\(directory)/missing\"") == [
                "account \"default\" api_key_file: \(directory)/missing does not exist"
            ])
        try "".write(toFile: directory + "/empty", atomically: true, encoding: .utf8)
        #expect(
            problems("[[account]]\nname = \"default\"\napi_key_file = \"\(directory)/empty\"").first?.contains(
                "is empty") == true)
        try fakeKey.write(toFile: directory + "/shared", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: directory + "/shared")
        let (c, warnings) = try load("[[account]]\nname = \"default\"\napi_key_file = \"\(directory)/shared\"")
        #expect(c.accounts[0].apiKey == APIKey(fakeKey))
        #expect(
            warnings == [
                "the key file \(directory)/shared is readable by every user (mode 644); run: chmod o-r \(directory)/shared"
            ])
    }

    /// The systemd credential is used when no api_key_file is set.
    @Test func systemdCredential() throws {
        let directory = temporaryDirectory()
        try (fakeKey + "\n").write(toFile: directory + "/sendgrid-api-key", atomically: true, encoding: .utf8)
        let (c, _) = try load(
            nil, environment: ["CREDENTIALS_DIRECTORY": directory, "SENDGRID_API_KEY": "SG.other-fake"])
        #expect(c.accounts[0].apiKey == APIKey(fakeKey))
        #expect(c.accounts[0].apiKeySource == "systemd credential sendgrid-api-key")
    }

    /// Keys never appear in check-config output, error texts or descriptions.
    @Test func secretsStaySecret() throws {
        let (c, _) = try load(nil, environment: ["SENDGRID_API_KEY": fakeKey])
        let report = ConfigurationReport(configuration: c, warnings: []).text
        #expect(!report.contains(fakeKey))
        #expect(report.contains("# api key: set (redacted), from environment SENDGRID_API_KEY"))
        #expect("\(c.accounts[0].apiKey!)" == "<redacted>")
        #expect(!"\(c.accounts)".contains(fakeKey))
        let found = problems(
            "[[account]]\nname = \"default\"\napi_key_env = \"SENDGRID_API_KEY\"",
            environment: ["SENDGRID_API_KEY": fakeKey + " x"])
        #expect(found.count == 1 && !found[0].contains(fakeKey))
    }

    /// The shipped, commented config/refreshd.toml parses and states the defaults.
    @Test func shippedExampleIsTheDefaults() throws {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        let text = try String(contentsOfFile: root.path + "/config/refreshd.toml", encoding: .utf8)
        let (shipped, _) = try load(text, userID: 0)
        let (builtIn, _) = try load(nil, userID: 0)
        #expect(shipped.limits(for: "default") == builtIn.limits(for: "default"))
        #expect(
            shipped.stateDir.value == builtIn.stateDir.value
                && shipped.retentionDays.value == builtIn.retentionDays.value)
        // Every key of the contract is documented there, commented out with its default.
        for key in [
            "state_dir", "spool_dir", "socket", "listen", "dry_run", "log_level", "retention_days", "base_url",
            "request_timeout_seconds", "preflight", "segment_daily", "segment_interval_seconds", "account_daily",
            "safety_margin_seconds", "name", "api_key_file", "api_key_env", "on_behalf_of", "max_queued_jobs",
            "connect_timeout_seconds", "max_attempts", "api_token_file",
        ] {
            #expect(text.contains("#\(key) = "), "\(key) is not documented")
        }
        let uncommented = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.hasPrefix("#") && !$0.isEmpty && !$0.hasPrefix("[") }
        #expect(uncommented.isEmpty)
    }

    /// refreshd.toml(5) documents exactly the keys of the shipped example (every key the loader
    /// knows), each with its default or example value, and every environment override.
    @Test func manualPageListsEveryKey() throws {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        let example = try String(contentsOfFile: root.path + "/config/refreshd.toml", encoding: .utf8)
        let page = try String(contentsOfFile: root.path + "/docs/man/refreshd.toml.5", encoding: .utf8)
        // "#key = value" in the example; ".B key = value" in the page (roff escapes - and ").
        func entries(_ text: String, prefix: String) -> [String] {
            text.split(separator: "\n").compactMap { line -> String? in
                guard line.hasPrefix(prefix), let first = line.dropFirst(prefix.count).first, first.isLowercase else {
                    return nil
                }
                return String(line.dropFirst(prefix.count))
            }
        }
        let documented = Set(entries(example, prefix: "#").filter { $0.contains(" = ") })
        let paged = Set(
            entries(page, prefix: ".B ").filter { $0.contains(" = ") }.map {
                $0.replacingOccurrences(of: "\\(dq", with: "\"").replacingOccurrences(of: "\\-", with: "-")
            })
        #expect(documented.count >= 27)
        #expect(
            documented.subtracting(paged).isEmpty,
            "missing from refreshd.toml(5): \(documented.subtracting(paged).sorted())")
        #expect(
            paged.subtracting(documented).isEmpty,
            "not in config/refreshd.toml: \(paged.subtracting(documented).sorted())")
        let loader = try String(
            contentsOfFile: root.path + "/Sources/RefreshWire/ConfigurationLoader.swift", encoding: .utf8)
        let variables = Set(loader.matches(of: /"(REFRESHD_[A-Z_]+)"/).map { String($0.1) })
        #expect(variables.count >= 7)
        for variable in variables { #expect(page.contains(variable), "\(variable) is not in refreshd.toml(5)") }
    }

    /// An explicit config file that does not exist is an error; REFRESHD_CONFIG is honoured.
    @Test func explicitPaths() throws {
        var loader = ConfigurationLoader(environment: [:], userID: 1000)
        #expect { try loader.load(explicitPath: "/nonexistent/refreshd.toml") } throws: {
            "\($0)".contains("the config file /nonexistent/refreshd.toml does not exist")
        }
        let directory = temporaryDirectory()
        try "retention_days = 7\n".write(toFile: directory + "/r.toml", atomically: true, encoding: .utf8)
        var fromEnvironment = ConfigurationLoader(
            environment: ["REFRESHD_CONFIG": directory + "/r.toml", "HOME": "/home/op"], userID: 1000)
        let c = try fromEnvironment.load()
        #expect(c.retentionDays == Setting(7, .file(path: directory + "/r.toml", line: 1)))
    }
}

@Suite("Hardening: configuration and log lines")
struct HardeningConfigurationTests {
    /// A plain http:// base_url to a host other than loopback is refused (the key would cross the
    /// network in clear) unless allow_insecure_http is set; loopback stays allowed for tests.
    @Test func plainHTTPOnlyToLoopback() throws {
        let refused = problems("[sendgrid]\nbase_url = \"http://api.example.com\"\n")
        #expect(
            refused.count == 1 && refused[0].contains("plain http") && refused[0].contains("allow_insecure_http"),
            "\(refused)")
        #expect(problems("[sendgrid]\nbase_url = \"http://api.example.com\"\nallow_insecure_http = true\n").isEmpty)
        #expect(problems("[sendgrid]\nbase_url = \"http://127.0.0.2:9999\"\n").isEmpty)
        #expect(problems("[sendgrid]\nbase_url = \"http://[::1]:9999\"\n").isEmpty)
        #expect(problems("[sendgrid]\nbase_url = \"https://api.example.com\"\n").isEmpty)
    }

    /// The API token file is checked like a key file: readable by every user is a warning.
    @Test func worldReadableTokenFileWarns() throws {
        let directory = temporaryDirectory()
        try "token-0123456789".write(toFile: directory + "/token", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: directory + "/token")
        let (_, warnings) = try load("api_token_file = \"\(directory)/token\"\n")
        #expect(warnings.contains { $0.contains("API token file") && $0.contains("chmod o-r") }, "\(warnings)")
        try FileManager.default.setAttributes([.posixPermissions: 0o640], ofItemAtPath: directory + "/token")
        #expect(try load("api_token_file = \"\(directory)/token\"\n").1.isEmpty)
    }

    /// [[hook]]: an absolute executable, known events, a timeout in 1...300; each problem named.
    @Test func hooksAreValidated() throws {
        let (c, _) = try load(
            "hook_max_concurrent = 3\n[[hook]]\non = [\"sent\", \"failed\"]\nexec = \"/bin/true\"\nargs = [\"a\"]\n")
        #expect(
            c.hooks == [HookConfiguration(on: ["sent", "failed"], exec: "/bin/true", args: ["a"], timeoutSeconds: 10)]
                && c.hookMaxConcurrent.value == 3)
        let found = problems(
            "[[hook]]\non = [\"sent\"]\nexec = \"notify.sh\"\n[[hook]]\non = [\"shipped\"]\nexec = \"/bin/true\"\ntimeout_seconds = 0\n[[hook]]\nexec = \"/nonexistent/hook\"\n"
        )
        #expect(found.contains { $0.contains("exec must be an absolute path") }, "\(found)")
        #expect(
            found.contains { $0.contains("unknown event \"shipped\"") }
                && found.contains { $0.contains("timeout_seconds 0 is outside 1...300") })
        #expect(
            found.contains { $0.contains("/nonexistent/hook is not an executable file") }
                && found.contains { $0.contains("on is missing") })
        #expect(problems("hook_max_concurrent = 0\n").first?.contains("hook_max_concurrent") == true)
    }

    /// Two accounts resolving to one key (and one on_behalf_of) are refused with both names and
    /// never the key; the same key for different subusers is fine.
    @Test func oneKeyTwoAccountsIsRefused() throws {
        let directory = temporaryDirectory()
        try fakeKey.write(toFile: directory + "/key", atomically: true, encoding: .utf8)
        let text = """
            [[account]]
            name = "default"
            [[account]]
            name = "marketing"
            api_key_file = "\(directory)/key"
            [[account]]
            name = "emea"
            api_key_file = "\(directory)/key"
            on_behalf_of = "emea-sub"
            """
        let found = problems(text, environment: ["SENDGRID_API_KEY": fakeKey])
        #expect(found.count == 1, "\(found)")
        #expect(
            found.first?.contains("accounts \"default\" and \"marketing\" resolve to the same SendGrid API key")
                == true, "\(found)")
        #expect(!found.joined().contains(fakeKey))
        #expect(problems(text, environment: ["SENDGRID_API_KEY": "SG.another-key"]).isEmpty)
    }

    /// An account's identity: the configured id, else a digest of the key and on_behalf_of that
    /// never shows the key (the same on every host with that key), else local to this host. Two
    /// entries naming one id are refused, with both names.
    @Test func accountIdentity() throws {
        let (c, _) = try load(
            """
            [[account]]
            name = "default"
            [[account]]
            name = "emea"
            api_key_env = "SENDGRID_API_KEY"
            on_behalf_of = "emea-sub"
            [[account]]
            name = "named"
            id = "acme-main:42"
            [[account]]
            name = "dry"
            api_key_env = "NO_SUCH_VARIABLE"
            """, environment: ["SENDGRID_API_KEY": fakeKey])
        let identities = c.accounts.map(\.identity)
        // The digest as Python's hashlib computes it over the same bytes (label, key, subuser).
        let expected = { (behalf: String) in
            "key-" + SHA256.hex(Array("refreshd account identity 1\u{0}\(fakeKey)\u{0}\(behalf)".utf8)).prefix(16)
        }
        #expect(identities == [expected(""), expected("emea-sub"), "acme-main:42", "local-dry"])
        #expect(identities[0] != identities[1] && identities.allSatisfy { !$0.contains(fakeKey) })
        let report = ConfigurationReport(configuration: c, warnings: []).text
        #expect(report.contains("# identity: \(identities[0]) (a digest of the key and on_behalf_of)"))
        #expect(
            report.contains("id = \"acme-main:42\"\n")
                && report.contains("# identity: local-dry (no key: this host only)"))
        #expect(!report.contains(fakeKey))
        // Two keys of one SendGrid account, named by one id: refused.
        let found = problems(
            "[[account]]\nname = \"a\"\nid = \"acme\"\n[[account]]\nname = \"b\"\nid = \"acme\"\n"
                + "[[account]]\nname = \"c\"\nid = \"has space\"")
        #expect(found.count == 2, "\(found)")
        #expect(found.contains { $0.contains("accounts \"a\" and \"b\" both have id \"acme\"") }, "\(found)")
        #expect(found.contains { $0.contains("account \"c\" id: \"has space\" must be") }, "\(found)")
    }

    /// SHA-256 against FIPS 180-4's examples and Python's hashlib (lengths around the padding
    /// boundaries: 55, 56, 64 bytes).
    @Test func sha256MatchesTheStandard() {
        #expect(SHA256.hex([UInt8]()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex("abc".utf8) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            SHA256.hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // python3 -c "import hashlib; print(hashlib.sha256(b'x' * n).hexdigest())"
        let python: [Int: String] = [
            55: "d5e285683cd4efc02d021a5c62014694958901005d6f71e89e0989fac77e4072",
            56: "04c26261370ee7541549d16dee320c723e3fd14671e66a099afe0a377c16888e",
            63: "75220b47218278e656f2013bb8f0c455a25eaf01e86c64924e9d48d89776d6f2",
            64: "7ce100971f64e7001e8fe5a51973ecdfe1ced42befe7ee8d5fd6219506b5393c",
            65: "9537c5fdf120482f7d58d25e9ed583f52c02b4e304ea814db1633ad565aed7e9",
            1000: "44f8354494a5ba03ba1792a8d3e9c534c47a9181980fde7a3f44b06ef2ae7c7f",
        ]
        for (length, digest) in python {
            #expect(SHA256.hex(String(repeating: "x", count: length).utf8) == digest, "\(length)")
        }
    }

    /// The new keys are read and bounded.
    @Test func hardeningKeys() throws {
        let (c, _) = try load(
            "rejected_retention_days = 7\napi_max_connections = 64\napi_idle_timeout_seconds = 30\napi_request_timeout_seconds = 5\n"
        )
        #expect(c.rejectedRetentionDays.value == 7 && c.apiMaxConnections.value == 64)
        #expect(c.apiIdleTimeoutSeconds.value == 30 && c.apiRequestTimeoutSeconds.value == 5)
        #expect(problems("api_max_connections = 1\n").first?.contains("outside 16...100000") == true)
    }

    /// NUL, ESC and CR from a submitter never reach the journal raw: one record stays one line,
    /// and no "<0>" can start a forged record.
    @Test func controlCharactersAreEscapedInLogLines() {
        let sink = LogSink.memory()
        var logger = Logger(label: "test") { _ in
            JournalLogHandler(label: "test", level: .debug, journald: true, sink: sink, clock: { Date() })
        }
        logger[metadataKey: "file"] = "job\u{0}.json"
        logger.warning(
            "job file rejected: \u{1b}[2J", metadata: ["reason": "zone \"\r\n<0>forged\u{1b}]0;title\u{7}\""])
        let text = sink.text
        #expect(text.split(separator: "\n").count == 1, "\(text)")
        #expect(!text.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" }, "\(text.debugDescription)")
        #expect(text.contains("\\x1b[2J") && text.contains("\\r\\n<0>forged") && text.contains("job\\x00.json"))
        #expect(LogText.escaped([0x61, 0xff, 0x62]) == "a\\xffb")
    }
}
