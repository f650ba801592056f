import TestSupport
import Foundation
import Glibc
import Testing

/// Whether this machine can boot systemd as PID 1 in private namespaces on an overlay root (root,
/// systemd installed, unshare, overlayfs): probed by doing it, minus the boot.
enum BootProbe {
    static let reason: String? = {
        guard getuid() == 0 else { return "the boot test needs root (namespaces, overlayfs, pivot_root)" }
        guard FileManager.default.isExecutableFile(atPath: "/lib/systemd/systemd") else { return "systemd is not installed here" }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") else { return "unshare is missing" }
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        probe.arguments = [
            "--fork", "--pid", "--mount", "--propagation", "private", "--", "bash", "-c",
            "d=$(mktemp -d) && mount -t tmpfs t $d && mkdir $d/u $d/w $d/r && mount -t overlay o -o lowerdir=/,upperdir=$d/u,workdir=$d/w $d/r",
        ]
        probe.standardOutput = FileHandle.nullDevice
        probe.standardError = FileHandle.nullDevice
        do { try probe.run() } catch { return "unshare cannot run: \(error)" }
        probe.waitUntilExit()
        return probe.terminationStatus == 0 ? nil : "private mount namespaces with an overlay root are not permitted here"
    }()
}

/// The host's default refreshd paths, as a listing of names, sizes and modification times: no test
/// may read or write them (the boot test hides them in its overlay).
enum HostState {
    static let paths = ["/var/lib/refreshd", "/var/spool/refreshd", "/etc/refreshd", "/run/refreshd"]

    static func snapshot() -> [String] {
        var lines: [String] = []
        for path in paths {
            guard let walker = FileManager.default.enumerator(atPath: path) else {
                lines.append("\(path): absent")
                continue
            }
            while let name = walker.nextObject() as? String {
                var info = stat()
                if lstat(path + "/" + name, &info) == 0 {
                    lines.append("\(path)/\(name) \(info.st_size) \(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec)")
                }
            }
        }
        return lines
    }
}

@Suite("Boot under a real systemd", .serialized)
struct BootTests {
    /// The installed unit, started by a real systemd (PID 1 in private PID and mount namespaces on
    /// an overlay of the host's root): active (running) through READY=1, `refreshctl status`
    /// answers, reload works, stop is clean. Skipped, saying why, where that cannot be done.
    @Test(.enabled(if: BootProbe.reason == nil, Comment(rawValue: BootProbe.reason ?? "")), .timeLimit(.minutes(3)))
    func bootsStopsAndReloads() async throws {
        try await offPool {
            var root = URL(fileURLWithPath: #filePath)
            for _ in 0..<3 { root.deleteLastPathComponent() }
            let stage = FileManager.default.temporaryDirectory.appendingPathComponent("refreshd-stage-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: stage) }
            let products = (refreshctlPath as NSString).deletingLastPathComponent
            let hostBefore = HostState.snapshot()
            defer { #expect(HostState.snapshot() == hostBefore, "the host's refreshd paths were touched") }
            let install = try run("/usr/bin/make", ["-C", root.path, "--no-print-directory", "install-files", "DESTDIR=\(stage)", "BINARIES=\(products)"])
            #expect(install.status == 0, "\(install.output)")
            let boot = try run(root.appendingPathComponent("Tests/tools/boot-test.sh").path, [stage])
            #expect(boot.status != 77, "the probe passed but the boot test could not run: \(boot.output)")
            #expect(boot.status == 0, "\(boot.output)")
            #expect(boot.output.contains("refreshd.service: active") && boot.output.contains("SubState=running"))
            #expect(boot.output.contains("Type=notify") && boot.output.contains("StatusText=0 queued, 10/10 left today"))
            #expect(boot.output.contains("refreshd 0.1.0, running for") && boot.output.contains("stopped: Result=success ExecMainStatus=0"))
        }
    }

    private func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
