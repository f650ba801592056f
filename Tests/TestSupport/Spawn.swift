import Foundation
import Glibc

/// Runs a program to its end with posix_spawn, without Foundation's `Process`.
///
/// Swift 6.3.1's `Process.run()` on Linux over-reads a `dirent` while it lists /proc/self/fd
/// (swift-corelibs-foundation #5472, fixed after this toolchain) and crashes the test process
/// now and then when many children are spawned. The short-lived children of the tests (refreshctl,
/// make, scripts) go through this instead; standard output and error are read together (poll), so
/// neither pipe can fill up and stall the child.
public func spawnAndWait(
    _ executable: String, _ arguments: [String], environment: [String: String]? = nil, mergeOutput: Bool = false
)
    throws -> (status: Int32, stdout: String, stderr: String)
{
    var outPipe: [Int32] = [0, 0]
    var errPipe: [Int32] = [0, 0]
    guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else { throw POSIXError(.EMFILE) }
    for descriptor in outPipe + errPipe { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
    posix_spawn_file_actions_adddup2(&actions, mergeOutput ? outPipe[1] : errPipe[1], 2)
    // The child gets no other descriptor of the test process: one opened without close-on-exec by
    // another test (a script being written) would otherwise stay open in a long-lived child
    // (tmux's server, Chromium) and make exec of that script fail with ETXTBSY.
    _ = addCloseFrom?(&actions, 3)
    let variables = environment ?? ProcessInfo.processInfo.environment
    let argv = ([executable] + arguments).map { strdup($0) } + [nil]
    let envp = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        for pointer in argv { free(pointer) }
        for pointer in envp { free(pointer) }
    }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, executable, &actions, nil, argv, envp)
    close(outPipe[1])
    close(errPipe[1])
    guard spawned == 0 else {
        close(outPipe[0])
        close(errPipe[0])
        throw POSIXError(POSIXErrorCode(rawValue: spawned) ?? .ENOENT)
    }
    var collected: [Int32: [UInt8]] = [outPipe[0]: [], errPipe[0]: []]
    var open = [outPipe[0], errPipe[0]]
    var chunk = [UInt8](repeating: 0, count: 65536)
    while !open.isEmpty {
        var descriptors = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        let ready = poll(&descriptors, nfds_t(descriptors.count), -1)
        if ready < 0 {
            if errno == EINTR { continue }
            break
        }
        for descriptor in descriptors where descriptor.revents != 0 {
            let count = read(descriptor.fd, &chunk, chunk.count)
            if count > 0 {
                collected[descriptor.fd]! += chunk[0..<count]
            } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                close(descriptor.fd)
                open.removeAll { $0 == descriptor.fd }
            }
        }
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0, errno == EINTR {}
    let exitCode = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (
        exitCode, String(decoding: collected[outPipe[0]]!, as: UTF8.self),
        String(decoding: collected[errPipe[0]]!, as: UTF8.self)
    )
}

/// glibc's posix_spawn_file_actions_addclosefrom_np (2.34+), which Swift's Glibc module does not
/// export: looked up once; nil where the C library lacks it.
private let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np")
    else { return nil }
    return unsafeBitCast(
        symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
}()
