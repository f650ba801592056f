import Foundation
import Logging
import RefreshDaemon
import RefreshWire
import Testing

/// `DaemonApplication.build` wires the daemon without running it; the reload path makes lanes and
/// clients through the same `LaneFactory` the start used.
@Suite("The composition root")
struct CompositionRootTests {
    /// A configuration file in a fresh directory (state, spool and socket inside it).
    final class Setup {
        let directory: String
        let configPath: String
        init() throws {
            directory = "/tmp/rd-root-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            configPath = directory + "/refreshd.toml"
        }
        deinit { try? FileManager.default.removeItem(atPath: directory) }

        /// Accounts with a key file (live: a client is made, never used), one without (dry-run).
        func write(live: [String], dry: [String] = [], requestTimeout: Int = 30) throws {
            var text = """
                state_dir = "\(directory)/state"
                spool_dir = "\(directory)/spool"
                socket = "\(directory)/s.sock"
                [sendgrid]
                base_url = "http://127.0.0.1:9"
                request_timeout_seconds = \(requestTimeout)

                """
            for name in live {
                // A key of its own per account (two accounts on one key are refused).
                try "SG.not-a-real-key-\(name)".write(
                    toFile: "\(directory)/key-\(name)", atomically: true, encoding: .utf8)
                chmod("\(directory)/key-\(name)", 0o600)
                text += "[[account]]\nname = \"\(name)\"\napi_key_file = \"\(directory)/key-\(name)\"\n"
            }
            for name in dry { text += "[[account]]\nname = \"\(name)\"\n" }
            try text.write(toFile: configPath, atomically: true, encoding: .utf8)
        }

        /// Builds the daemon (never run), hands it to `body`, then lets it go whatever `body` did.
        func withDaemon(_ body: (DaemonApplication.Daemon) async throws -> Void) async throws {
            var loader = ConfigurationLoader(environment: [:], userID: getuid())
            let configuration = try loader.load(explicitPath: configPath)
            var logger = Logger(label: "root-test")
            logger.logLevel = .critical
            let daemon = try await DaemonApplication.build(
                configuration: configuration, logger: logger, environment: [:], configPath: configPath)
            do { try await body(daemon) } catch {
                await daemon.discard()
                throw error
            }
            await daemon.discard()
        }
    }

    @Test func reloadAddsAndStopsLanesBuiltByTheRootsFactory() async throws {
        let setup = try Setup()
        try setup.write(live: ["a"])
        try await setup.withDaemon { daemon in
            #expect(daemon.dispatcher.lanes.map(\.name) == ["a"])
            let first = try #require(daemon.dispatcher.client)

            // Same SendGrid settings: the one client stays; the new account gets a lane.
            try setup.write(live: ["a", "b"], dry: ["c"])
            #expect(await daemon.reloader.reload())
            #expect(daemon.dispatcher.lanes.map(\.name) == ["a", "b", "c"])
            #expect(daemon.state.configuration.accounts.map(\.name) == ["a", "b", "c"])
            #expect(daemon.dispatcher.client === first)
            #expect(daemon.dispatcher.allClients.count == 1)

            // A changed timeout: a new client, adopted so it is shut down with the first.
            try setup.write(live: ["b"], dry: ["c"], requestTimeout: 10)
            #expect(await daemon.reloader.reload())
            #expect(daemon.dispatcher.lanes.map(\.name) == ["b", "c"])
            #expect(daemon.dispatcher.allClients.count == 2)

            // A configuration that does not load is refused; nothing changes.
            try "[[account]]\nname = 3\n".write(toFile: setup.configPath, atomically: true, encoding: .utf8)
            #expect(await !daemon.reloader.reload())
            #expect(daemon.dispatcher.lanes.map(\.name) == ["b", "c"])
            #expect(daemon.state.configuration.accounts.map(\.name) == ["b", "c"])
        }
    }

    /// Every account dry: no client at all, at the start or after a reload.
    @Test func dryRunMakesNoClient() async throws {
        let setup = try Setup()
        try setup.write(live: [], dry: ["x"])
        try await setup.withDaemon { daemon in
            #expect(daemon.dispatcher.client == nil)
            try setup.write(live: [], dry: ["x", "y"])
            #expect(await daemon.reloader.reload())
            #expect(daemon.dispatcher.client == nil && daemon.dispatcher.allClients.isEmpty)
            #expect(daemon.dispatcher.lanes.map(\.name) == ["x", "y"])
        }
    }
}
