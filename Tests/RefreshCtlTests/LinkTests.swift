import Foundation
import TestSupport
import Testing

/// refreshctl is a client: it links the wire module (configuration, bodies, routes) and an HTTP
/// client, never the daemon's stack. The symbols of the built executable say which modules went
/// into it (Swift mangles a module's name into each of its symbols: `$s4GRDB...`).
@Suite("refreshctl's link")
struct LinkTests {
    /// How many symbols of each module the executable defines or references.
    static func symbolCounts(_ modules: [String]) throws -> [String: Int] {
        let script = """
            nm -P "$0" > "$1" || exit 3
            for m in "$@"; do
              [ "$m" = "$1" ] && continue
              printf '%s %s\\n' "$m" "$(grep -cE "^\\\\\\$s[0-9]+${m}[0-9A-Z_]" "$1")"
            done
            """
        let table = FileManager.default.temporaryDirectory.appendingPathComponent("refreshctl-nm-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: table) }
        let result = try spawnAndWait("/bin/sh", ["-c", script, refreshctlPath, table] + modules)
        #expect(result.status == 0, "\(result.stderr)")
        var counts: [String: Int] = [:]
        for line in result.stdout.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let count = Int(parts[1]) { counts[String(parts[0])] = count }
        }
        return counts
    }

    @Test("no GRDB, Hummingbird, Prometheus, ledger or daemon code in refreshctl")
    func noDaemonStack() throws {
        let counts = try Self.symbolCounts([
            "GRDB", "Hummingbird", "HummingbirdCore", "Prometheus", "RefreshStore", "RefreshDaemon", "RefreshWire",
            "RefreshCtlKit",
        ])
        // The control: the modules refreshctl does link are seen, so a zero below means absent.
        #expect((counts["RefreshWire"] ?? 0) > 0, "\(counts)")
        #expect((counts["RefreshCtlKit"] ?? 0) > 0, "\(counts)")
        for module in ["GRDB", "Hummingbird", "HummingbirdCore", "Prometheus", "RefreshStore", "RefreshDaemon"] {
            #expect(counts[module] == 0, "refreshctl links \(module): \(counts)")
        }
        let ldd = try spawnAndWait("/usr/bin/ldd", [refreshctlPath])
        #expect(ldd.status == 0)
        #expect(ldd.stdout.contains("libc.so"), "\(ldd.stdout)")
        #expect(!ldd.stdout.contains("libsqlite3"), "\(ldd.stdout)")
    }
}
