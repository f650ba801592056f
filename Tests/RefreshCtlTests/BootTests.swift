import Foundation
import Glibc
import TestSupport
import Testing

@Suite("Boot under a real systemd", .serialized)
struct BootTests {
    /// The installed unit, started by a real systemd (PID 1 in private PID and mount namespaces on
    /// an overlay of the host's root): active (running) through READY=1, `refreshctl status`
    /// answers, reload works, stop is clean. Skipped, saying why, where that cannot be done. The
    /// time limit leaves room to wait for the package test's systemd (one boots at a time) and
    /// for a second boot when the first does not come up (systemd-root.sh).
    @Test(.enabled(if: BootProbe.reason == nil, Comment(rawValue: BootProbe.reason ?? "")), .timeLimit(.minutes(10)))
    func bootsStopsAndReloads() async throws {
        try await offPool {
            var root = URL(fileURLWithPath: #filePath)
            for _ in 0..<3 { root.deleteLastPathComponent() }
            let stage = FileManager.default.temporaryDirectory.appendingPathComponent(
                "refreshd-stage-\(UUID().uuidString)"
            ).path
            defer { try? FileManager.default.removeItem(atPath: stage) }
            let products = (refreshctlPath as NSString).deletingLastPathComponent
            let hostBefore = HostState.snapshot()
            defer { #expect(HostState.snapshot() == hostBefore, "the host's refreshd paths were touched") }
            let install = try runToEnd(
                "/usr/bin/make",
                ["-C", root.path, "--no-print-directory", "install-files", "DESTDIR=\(stage)", "BINARIES=\(products)"])
            #expect(install.status == 0, "\(install.output)")
            let boot = try runToEnd(root.appendingPathComponent("Tests/tools/boot-test.sh").path, [stage])
            #expect(boot.status != 77, "the probe passed but the boot test could not run: \(boot.output)")
            #expect(boot.status == 0, "\(boot.output)")
            #expect(boot.output.contains("refreshd.service: active") && boot.output.contains("SubState=running"))
            #expect(
                boot.output.contains("Type=notify") && boot.output.contains("StatusText=0 queued, 10/10 left today"))
            #expect(
                boot.output.contains("refreshd 0.1.0, running for")
                    && boot.output.contains("stopped: Result=success ExecMainStatus=0"))
        }
    }
}
