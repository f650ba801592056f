import Foundation
import Glibc
import TestSupport
import Testing

/// A TCP port on 127.0.0.1 that nobody listens on right now.
func freeLoopbackPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    _ = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Debian's Chromium, headless (CI installs it: scripts/install-deps).
let chromium = "/usr/bin/chromium"

/// Runs headless Chromium on `url` with `arguments` (--dump-dom, --screenshot=...), bounded by a timeout.
func headlessChromium(_ url: String, _ arguments: [String], home: String) throws -> (status: Int32, stdout: String) {
    #expect(
        FileManager.default.isExecutableFile(atPath: chromium),
        "the status page is tested in Debian's chromium: apt-get install chromium (scripts/install-deps)")
    // At the lowest CPU priority: a browser starting takes both cores for seconds, and the suites
    // running beside this one measure time (watchdog, lock, connection tests).
    let result = try spawnAndWait(
        "/usr/bin/nice",
        [
            "-n", "19", "/usr/bin/timeout", "120", chromium, "--headless", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--hide-scrollbars",
            "--user-data-dir=\(home)/chromium",
        ] + arguments + [url],
        environment: ["HOME": home, "PATH": "/usr/bin:/bin"])
    return (result.status, result.stdout)
}

extension ViewsAgainstADaemon {
    /// The status page (GET /ui) in a real browser: headless Chromium loads it from a running refreshd
    /// with refreshes, planned sends and a hold; the DOM it built holds the rows and the sends; a
    /// screenshot is written to .build/ui-screenshot.png (docs/ui.png is one of these).
    @Suite("status page in Chromium", .serialized)
    struct StatusPageTests {
        static let kathmandu = "2d0e0000-cccc-4c4c-9c9c-000000000003"

        @Test func pageInChromium() async throws {
            try await offPool {
                let port = freeLoopbackPort()
                let daemon = try populatedDaemon(extra: "listen = \"127.0.0.1:\(port)\"")
                defer { daemon.stop() }
                let hold = try daemon.ctl([
                    "hold", "--account", "default", "--segment", Self.kathmandu, "--reason", "campaign <freeze>",
                ])
                #expect(hold.status == 0, "\(hold.stderr)")
                let queued = try refreshctl([
                    "enqueue", "--segment", Self.kathmandu, "--time-zone", "Asia/Kathmandu", "--config",
                    daemon.directory + "/refreshd.toml",
                ])
                #expect(queued.status == 0, "\(queued.stderr)")

                // refreshctl ui names the listener's URL.
                let url = try daemon.ctl(["ui"])
                #expect(url.status == 0 && url.stdout == "http://127.0.0.1:\(port)/ui\n", "\(url)")

                let dom = try headlessChromium("http://127.0.0.1:\(port)/ui", ["--dump-dom"], home: daemon.directory)
                #expect(dom.status == 0)
                let html = dom.stdout
                // The browser's DOM: an SVG timeline with the account's row and one row per segment, each
                // with its zone, the planned sends inside their rows, the gauge, the tables.
                #expect(
                    html.contains("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\""),
                    "\(html.prefix(2000))")
                let rows = html.matches(
                    of:
                        /<g class="row segment" data-account="default" data-segment="([0-9a-f-]+)" data-zones="([^"]*)">/
                )
                let zones = Dictionary(rows.map { (String($0.1), String($0.2)) }, uniquingKeysWith: { a, _ in a })
                #expect(
                    zones == [
                        ViewsAgainstADaemon.TimelineCommandTests.santiago: "America/Santiago",
                        ViewsAgainstADaemon.TimelineCommandTests.lordHowe: "Australia/Lord_Howe",
                        Self.kathmandu: "Asia/Kathmandu",
                    ], "\(zones)")
                #expect(html.contains("<g class=\"row account\" data-account=\"default\" data-zones=\"UTC\">"))
                for segment in [
                    ViewsAgainstADaemon.TimelineCommandTests.santiago,
                    ViewsAgainstADaemon.TimelineCommandTests.lordHowe,
                ] {
                    // The row's planned send (one job, an hour after its dry-run refresh) and the refresh.
                    guard let start = html.range(of: "data-segment=\"\(segment)\"") else {
                        Issue.record("no row for \(segment)")
                        continue
                    }
                    // The row's elements, up to the next row.
                    let after = html[start.upperBound...]
                    let rowText = String(after[..<(after.range(of: "<g class=\"row")?.lowerBound ?? after.endIndex)])
                    #expect(rowText.contains("<g class=\"send\"") && rowText.contains("data-jobs=\"1\""), "\(rowText)")
                    #expect(rowText.contains("<circle class=\"refresh dry_run\""), "\(rowText)")
                    #expect(rowText.contains("<line class=\"midnight\""), "\(rowText)")
                }
                // The held segment: a hold span, no send; the reason escaped, not markup.
                #expect(html.contains("<rect class=\"span hold\""))
                #expect(html.contains("campaign &lt;freeze&gt;") && !html.contains("campaign <freeze>"))
                #expect(
                    html.contains("<figure class=\"gauge\" data-account=\"default\" data-used=\"2\""),
                    "\(html.prefix(3000))")
                #expect(html.matches(of: /<tr class="job">/).count == 3)
                #expect(html.matches(of: /<tr class="refresh">/).count == 2)
                #expect(!html.contains("<script"))

                // The screenshot (kept by CI; docs/ui.png is one).
                var root = URL(fileURLWithPath: #filePath)
                for _ in 0..<3 { root.deleteLastPathComponent() }
                let png = root.appendingPathComponent(".build/ui-screenshot.png").path
                try? FileManager.default.removeItem(atPath: png)
                let shot = try headlessChromium(
                    "http://127.0.0.1:\(port)/ui", ["--window-size=1280,1100", "--screenshot=\(png)"],
                    home: daemon.directory)
                #expect(shot.status == 0)
                let bytes = FileManager.default.contents(atPath: png) ?? Data()
                #expect(bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]), "a PNG")
                // A blank page compresses to a few KiB; the drawn one is tens of KiB.
                #expect(bytes.count > 40_000, "\(bytes.count) bytes")
                if ProcessInfo.processInfo.environment["REFRESHD_UPDATE_SCREENSHOT"] == "1" {
                    try? FileManager.default.removeItem(at: root.appendingPathComponent("docs/ui.png"))
                    try FileManager.default.copyItem(
                        atPath: png, toPath: root.appendingPathComponent("docs/ui.png").path)
                }
            }
        }

        /// refreshctl ui --port serves the same page through the socket; only GET /ui; a daemon without
        /// a listener gets the hint.
        @Test func servedThroughTheSocket() async throws {
            try await offPool {
                let daemon = try populatedDaemon()
                defer { daemon.stop() }
                let none = try daemon.ctl(["ui"])
                #expect(none.status == 1 && none.stderr.contains("refreshctl ui --port"), "\(none)")

                let server = Process()
                server.executableURL = URL(fileURLWithPath: refreshctlPath)
                server.arguments = ["ui", "--port", "0", "--socket", daemon.socket]
                let pipe = Pipe()
                server.standardOutput = pipe
                try server.run()
                defer {
                    server.terminate()
                    server.waitUntilExit()
                }
                // "serving the status page at http://127.0.0.1:PORT/ui through ..."
                var banner = Data()
                while !banner.contains(UInt8(ascii: "\n")) {
                    let chunk = pipe.fileHandleForReading.availableData
                    if chunk.isEmpty { break }
                    banner += chunk
                }
                let text = String(decoding: banner, as: UTF8.self)
                guard let match = text.firstMatch(of: /http:\/\/127\.0\.0\.1:(\d+)\/ui/) else {
                    Issue.record("no URL in \(text)")
                    return
                }
                let page = try spawnAndWait("/usr/bin/curl", ["-s", "-i", "http://127.0.0.1:\(match.1)/ui"])
                #expect(page.stdout.hasPrefix("HTTP/1.1 200 OK"), "\(page.stdout.prefix(300))")
                #expect(page.stdout.contains("data-segment=\"\(ViewsAgainstADaemon.TimelineCommandTests.lordHowe)\""))
                let other = try spawnAndWait("/usr/bin/curl", ["-s", "-i", "http://127.0.0.1:\(match.1)/v1/jobs"])
                #expect(other.stdout.hasPrefix("HTTP/1.1 404"), "\(other.stdout)")
                let post = try spawnAndWait(
                    "/usr/bin/curl", ["-s", "-i", "-X", "POST", "http://127.0.0.1:\(match.1)/ui"])
                #expect(post.stdout.hasPrefix("HTTP/1.1 405"), "\(post.stdout)")
            }
        }
    }
}
