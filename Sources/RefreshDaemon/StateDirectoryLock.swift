import Foundation
import Glibc
import RefreshCore

/// An exclusive lock on the state directory, held for the daemon's whole life.
///
/// Taken before the ledger is opened (and so before it is migrated or recovered): a second
/// `refreshd run` on the same state directory (a `sudo refreshd` typed by hand, a new binary
/// started before the old one stopped) must never turn the live daemon's in-flight reservation
/// into `uncertain` or requeue its jobs. The lock is `flock(2)` on `<state_dir>/refreshd.lock`:
/// the kernel drops it when the process ends, however it ends (`kill -9` included), so a stale
/// lock file never blocks a restart. The file holds the holder's pid and start time, to name it.
public final class StateDirectoryLock: @unchecked Sendable {
    /// The lock file.
    public let path: String
    private let descriptor: Int32

    /// Why the lock could not be taken.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        /// Another process holds the lock (as opposed to the file being unusable).
        public let heldByAnother: Bool
    }

    private init(path: String, descriptor: Int32) {
        self.path = path
        self.descriptor = descriptor
    }

    /// Takes the lock on `directory` without waiting, recording this process as its holder.
    public static func acquire(directory: String, now: Date) throws -> StateDirectoryLock {
        let path = directory + "/refreshd.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o640)
        guard fd >= 0 else {
            throw Failure(
                description: "cannot open the lock file \(path): \(String(cString: strerror(errno)))",
                heldByAnother: false)
        }
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            if code == EINTR { continue }
            let holder = holderDescription(fd: fd)
            close(fd)
            if code == EWOULDBLOCK {
                throw Failure(
                    description: "another refreshd (\(holder)) is running on the state directory \(directory); "
                        + "stop it first (systemctl stop refreshd) or give this one another state_dir",
                    heldByAnother: true)
            }
            throw Failure(description: "cannot lock \(path): \(String(cString: strerror(code)))", heldByAnother: false)
        }
        let record = "pid=\(getpid()) started_at=\(Timestamp.rfc3339(now))\n"
        if ftruncate(fd, 0) == 0 {
            _ = record.withCString { pwrite(fd, $0, strlen($0), 0) }
        }
        return StateDirectoryLock(path: path, descriptor: fd)
    }

    /// What the lock file says of its holder ("pid=123 started_at=..."), or a plain "unknown pid".
    static func holderDescription(fd: Int32) -> String {
        var buffer = [UInt8](repeating: 0, count: 200)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return "unknown pid" }
        let text = String(decoding: buffer[..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let safe = text.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value < 0x7f }
        return safe && !text.isEmpty ? text : "unknown pid"
    }

    deinit { close(descriptor) }
}
