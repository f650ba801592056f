import FakeSendGrid
import Foundation
import Glibc
import TestSupport
import Testing

/// The Debian package built by `make deb`, and whether this machine can install it into a booted
/// toolchain-free root.
enum PackageUnderTest {
    static let repository: URL = {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        return root
    }()

    static let version =
        ((try? String(contentsOf: repository.appendingPathComponent("VERSION"), encoding: .utf8)) ?? "")
        .trimmingCharacters(in: .whitespacesAndNewlines)

    static let path: String = {
        var arch = "amd64"
        if let output = try? runToEnd("/usr/bin/dpkg", ["--print-architecture"]), output.status == 0 {
            arch = output.output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return repository.appendingPathComponent(".build/deb/refreshd_\(version)_\(arch).deb").path
    }()

    /// Why the test cannot run here, or nil. CI sets REFRESHD_REQUIRE_PACKAGE=1 after `make deb`,
    /// so a missing package fails there instead of skipping.
    static let reason: String? = {
        if let reason = BootProbe.reason { return reason }
        if !FileManager.default.fileExists(atPath: path),
            ProcessInfo.processInfo.environment["REFRESHD_REQUIRE_PACKAGE"] != "1"
        {
            return "no package at \(path): `make deb` builds it (CI does, before swift test)"
        }
        return nil
    }()
}

@Suite("The Debian package on a host without Swift", .serialized)
struct PackageInstallTests {
    /// `apt install` of the package into a booted root without the Swift toolchain (systemd as
    /// PID 1 on an overlay of the host: Tests/tools/package-test.sh), then what an operator does:
    /// key and config, start, a spool job sent to the fake SendGrid, `man`, bash completion, an
    /// upgrade to a higher version with a job waiting (sent exactly once, after the upgrade), remove
    /// (state kept) and purge (user, ledger, spool gone).
    @Test(
        .enabled(if: PackageUnderTest.reason == nil, Comment(rawValue: PackageUnderTest.reason ?? "")),
        .timeLimit(.minutes(12)))
    func installsUpgradesAndPurges() async throws {
        try await offPool {
            #expect(
                FileManager.default.fileExists(atPath: PackageUnderTest.path),
                "no package at \(PackageUnderTest.path): run make deb")
            let hostBefore = HostState.snapshot()
            defer { #expect(HostState.snapshot() == hostBefore, "the host's refreshd paths were touched") }
            let work = FileManager.default.temporaryDirectory.appendingPathComponent(
                "refreshd-package-\(UUID().uuidString)"
            ).path
            defer { try? FileManager.default.removeItem(atPath: work) }
            try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)

            // The upgrade: the same package under a higher version.
            let newVersion = PackageUnderTest.version + "+upgradetest1"
            let unpacked = work + "/new"
            let newDeb = work + "/refreshd_\(newVersion).deb"
            #expect(try runToEnd("/usr/bin/dpkg-deb", ["-R", PackageUnderTest.path, unpacked]).status == 0)
            let controlPath = unpacked + "/DEBIAN/control"
            let control = try String(contentsOfFile: controlPath, encoding: .utf8)
            try control.replacingOccurrences(
                of: "Version: \(PackageUnderTest.version)\n", with: "Version: \(newVersion)\n"
            )
            .write(toFile: controlPath, atomically: true, encoding: .utf8)
            let build = try runToEnd("/usr/bin/dpkg-deb", ["--root-owner-group", "-Zgzip", "-b", unpacked, newDeb])
            #expect(build.status == 0, "\(build.output)")

            let fake = FakeSendGrid(apiKey: fakeKey, zones: hostZones)
            let url = try await fake.start()
            defer { Task { await fake.stop() } }
            let segment1 = UUID().uuidString.lowercased()
            let segment2 = UUID().uuidString.lowercased()
            let script = PackageUnderTest.repository.appendingPathComponent("Tests/tools/package-test.sh").path
            let result = try runToEnd(script, [PackageUnderTest.path, newDeb, url, fakeKey, segment1, segment2])
            let output = result.output
            // Kept for people (and CI logs): what the operator's steps printed.
            try? output.write(
                toFile: (PackageUnderTest.path as NSString).deletingLastPathComponent + "/package-test.log",
                atomically: true, encoding: .utf8)
            #expect(result.status != 77, "the probe passed but the package test could not run: \(output)")
            #expect(result.status == 0, "\(output)")
            func line(_ prefix: String) -> String {
                output.split(whereSeparator: \.isNewline).first { $0.hasPrefix(prefix) }.map(String.init)
                    ?? "(no line \(prefix))"
            }
            // Installed without a toolchain; not started without a key, and it says how.
            #expect(!output.contains("FAIL: a Swift toolchain is visible"), "\(output)")
            #expect(
                output.contains("refreshd: no SendGrid API key yet: put it in /etc/refreshd/sendgrid-api-key"),
                "\(output)")
            #expect(line("active without a key:") == "active without a key: inactive")
            #expect(line("installed binaries:") == "installed binaries: 0 Swift libraries linked")
            #expect(line("refreshctl --version:") == "refreshctl --version: \(PackageUnderTest.version)")
            #expect(line("user:") == "user: refreshd:/var/lib/refreshd")
            #expect(line("incoming:") == "incoming: 2770 refreshd:refreshd")
            #expect(line("config:") == "config: 640 root:refreshd")
            // Started with the key credential: READY, status answers, a spool job reaches SendGrid.
            #expect(line("refreshd.service:") == "refreshd.service: active")
            #expect(output.contains("Type=notify") && output.contains("SubState=running"), "\(output)")
            #expect(output.contains("refreshd \(PackageUnderTest.version), running for"), "\(output)")
            #expect(line("job 1:").hasPrefix("job 1: sent "), "\(output)")
            // Manual pages and completion.
            #expect(output.contains("REFRESHCTL(1)"), "\(output)")
            #expect(output.contains("completion: America/Santiago"), "\(output)")
            // The upgrade keeps the config edit, the ledger and the waiting job, restarts the daemon.
            #expect(line("job 2 before:").hasPrefix("job 2 before: queued "), "\(output)")
            #expect(line("version after:") == "version after: \(newVersion)")
            #expect(line("after upgrade:") == "after upgrade: active, restarted: yes")
            #expect(line("config kept:") == "config kept: 1")
            #expect(line("job 1 after:").hasPrefix("job 1 after: sent "), "\(output)")
            #expect(line("job 2 after:").hasPrefix("job 2 after: queued "), "\(output)")
            #expect(line("job 2 then:").hasPrefix("job 2 then: sent "), "\(output)")
            #expect(line("removed:") == "removed: binary gone, ledger kept, spool kept, active inactive")
            #expect(line("purged:") == "purged: user gone, group gone, ledger gone, spool gone, config gone")
            // Each job reached SendGrid exactly once, within the rules.
            #expect(fake.refreshes.filter { $0.segment == segment1 }.count == 1, "\(fake.refreshes)")
            #expect(fake.refreshes.filter { $0.segment == segment2 }.count == 1, "\(fake.refreshes)")
            #expect(fake.violations.isEmpty, "\(fake.violations)")
        }
    }
}
