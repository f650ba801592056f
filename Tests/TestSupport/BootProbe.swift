import Foundation
import Glibc

/// Whether this machine can boot systemd as PID 1 in private namespaces on an overlay root (root,
/// systemd installed, unshare, overlayfs): probed by doing it, minus the boot.
public enum BootProbe {
    public static let reason: String? = {
        guard getuid() == 0 else { return "the boot test needs root (namespaces, overlayfs, pivot_root)" }
        guard FileManager.default.isExecutableFile(atPath: "/lib/systemd/systemd") else {
            return "systemd is not installed here"
        }
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
        return probe.terminationStatus == 0
            ? nil : "private mount namespaces with an overlay root are not permitted here"
    }()
}

/// The host's default refreshd paths, as a listing of names, sizes and modification times: no test
/// may read or write them (the boot test hides them in its overlay).
public enum HostState {
    public static let paths = ["/var/lib/refreshd", "/var/spool/refreshd", "/etc/refreshd", "/run/refreshd"]

    public static func snapshot() -> [String] {
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

/// Runs a program to its end; its status and its standard output and error, interleaved
/// (posix_spawn: see `spawnAndWait`).
public func runToEnd(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let result = try spawnAndWait(executable, arguments, mergeOutput: true)
    return (result.status, result.stdout)
}
