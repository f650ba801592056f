import ArgumentParser
import Foundation
import Glibc
import RefreshWire

/// `refreshctl ui`: where the status page is, or the page served on a loopback port through the
/// socket (for a daemon without a TCP listener, or a user who may not reach it).
struct UICommand: ParsableCommand, SinkRunnable {
    static let configuration = CommandConfiguration(
        commandName: "ui",
        abstract: "The status page (budget gauges, timeline, queue): its URL, or served here through the socket.",
        discussion: """
            Without --port: prints the page's URL on refreshd's loopback listener (`listen` in refreshd.toml); \
            fails with a hint when there is none. With --port: serves the page on 127.0.0.1:PORT, fetched through \
            refreshd's unix socket for each request (read-only: GET / and /ui only), until interrupted; --port 0 \
            picks a free port and prints it.

            Examples:
              refreshctl ui
              refreshctl ui --port 8426     # then open http://127.0.0.1:8426/ui
            """)

    @Option(help: "Serve the page on 127.0.0.1:<port> through refreshd's socket (0: any free port).")
    var port: Int?

    @OptionGroup var options: DaemonOptions

    func validate() throws {
        if let port, !(0...65535).contains(port) { throw ValidationError("--port is 0 to 65535") }
    }

    mutating func run(output: OutputSink) throws {
        let client = try options.client()
        guard let port else {
            let status = try client.call(.status).decode(StatusAnswer.self)
            guard let listen = status.listen, !listen.isEmpty else {
                throw CommandFailure(
                    "refreshd has no loopback listener (set listen = \"127.0.0.1:8425\" in refreshd.toml), "
                        + "or serve the page from here: refreshctl ui --port 8426", exit: .error)
            }
            if options.json {
                output.line("{\"url\":\"http://\(listen)/ui\"}")
            } else {
                output.line("http://\(listen)/ui")
            }
            return
        }
        try PageServer(client: client).serve(port: port)
    }
}

/// A small loopback HTTP server that answers GET /ui (and /) with the page fetched through the
/// socket, one connection at a time.
struct PageServer {
    let client: ControlClient

    func serve(port: Int) throws {
        // Interrupting stops it, whatever signal mask the parent left.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &signals, nil)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else {
            throw CommandFailure("cannot open a socket: \(String(cString: strerror(errno)))", exit: .error)
        }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw CommandFailure("cannot listen on 127.0.0.1:\(port): \(reason)", exit: .error)
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        let chosen = Int(UInt16(bigEndian: actual.sin_port))
        let banner =
            "serving the status page at http://127.0.0.1:\(chosen)/ui through \(client.socket) (Ctrl-C to stop)\n"
        FileHandle.standardOutput.write(Data(banner.utf8))
        while true {
            let connection = accept(fd, nil, nil)
            guard connection >= 0 else {
                if errno == EINTR { continue }
                throw CommandFailure("accept failed: \(String(cString: strerror(errno)))", exit: .error)
            }
            answer(connection)
            close(connection)
        }
    }

    /// Reads one request head and answers it.
    func answer(_ connection: Int32) {
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var head = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 4096)
        while head.count < 16384, !head.suffix(4).elementsEqual("\r\n\r\n".utf8) {
            let n = recv(connection, &chunk, chunk.count, 0)
            guard n > 0 else { break }
            head += chunk[0..<n]
            if String(decoding: head, as: UTF8.self).contains("\r\n\r\n") { break }
        }
        let line = String(decoding: head, as: UTF8.self).split(separator: "\r\n").first ?? ""
        let parts = line.split(separator: " ")
        let method = parts.first.map(String.init) ?? ""
        let path = parts.count > 1 ? String(parts[1].split(separator: "?").first ?? "") : ""
        let status: String
        let type: String
        let body: String
        if method != "GET" && method != "HEAD" {
            (status, type, body) = ("405 Method Not Allowed", "text/plain", "only GET: the page is read-only\n")
        } else if path != "/ui" && path != "/" {
            (status, type, body) = ("404 Not Found", "text/plain", "only /ui is served here\n")
        } else {
            do {
                (status, type, body) = ("200 OK", "text/html; charset=utf-8", try client.call(.page).body)
            } catch let failure as CommandFailure {
                (status, type, body) = ("502 Bad Gateway", "text/plain", failure.message + "\n")
            } catch {
                (status, type, body) = ("502 Bad Gateway", "text/plain", "\(error)\n")
            }
        }
        var response =
            "HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.utf8.count)\r\n"
            + "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
        if method != "HEAD" { response += body }
        let bytes = Array(response.utf8)
        let total = bytes.count
        var sent = 0
        while sent < total {
            let n = bytes.withUnsafeBytes {
                send(connection, $0.baseAddress! + sent, total - sent, Int32(MSG_NOSIGNAL))
            }
            guard n > 0 else { return }
            sent += n
        }
    }
}
