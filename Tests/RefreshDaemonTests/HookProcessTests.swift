import FakeSendGrid
import Foundation
import Glibc
import TestSupport
import Testing

@Suite("Event hooks with the real daemon", .serialized)
struct HookProcessTests {
    /// `[[hook]]` programs run on job events with the event as JSON on stdin and as environment
    /// variables (never the API key nor refreshd's credentials); a hook that hangs is killed with
    /// its process group at its timeout, and dispatch carries on meanwhile.
    @Test func sentFailedAndAHangingHook() async throws {
        let fake = FakeSendGrid(apiKey: fakeKey, zones: hostZones)
        let url = try await fake.start()
        defer { Task { await fake.stop() } }
        let directory = temporaryDirectory()
        let record = directory + "/record-hook"
        let hang = directory + "/hang-hook"
        try """
        #!/bin/sh
        {
          cat
          echo "ENV $REFRESHD_EVENT job=$REFRESHD_JOB_ID status=${REFRESHD_HTTP_STATUS:-none} key=${SENDGRID_API_KEY:-none} cred=${CREDENTIALS_DIRECTORY:-none} arg=$1"
        } >> \(directory)/events.log
        """.write(toFile: record, atomically: true, encoding: .utf8)
        try "#!/bin/sh\necho started >> \(directory)/hang.log\nsleep 307\necho finished >> \(directory)/hang.log\n"
            .write(toFile: hang, atomically: true, encoding: .utf8)
        chmod(record, 0o755)
        chmod(hang, 0o755)
        let config = try writeConfig(
            directory,
            """
            hook_max_concurrent = 2
            [sendgrid]
            base_url = "\(url)"
            [[hook]]
            on = ["sent", "failed"]
            exec = "\(record)"
            args = ["from-refreshd"]
            [[hook]]
            on = ["sent"]
            exec = "\(hang)"
            timeout_seconds = 2
            """)
        let daemon = try DaemonProcess(
            arguments: ["run", "--config", config],
            environment: daemonEnvironment(directory, extra: ["SENDGRID_API_KEY": fakeKey]))
        #expect(await daemon.eventuallyOutputs("refreshd started"), "\(daemon.output)")
        let incoming = directory + "/spool/incoming"
        fake.forget(segment: String(format: "0f8c5e8e-1111-4f4a-9a53-%012d", 2))
        try dropJob(incoming, 1)
        try dropJob(incoming, 2)
        try dropJob(incoming, 3)
        // All three are dispatched while the first sent event's hanging hook still runs.
        #expect(await eventually(timeout: 20) { fake.refreshes.count == 3 }, "\(daemon.output)")
        let log = directory + "/events.log"
        func lines() -> [String] {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }
        #expect(
            await eventually(timeout: 30) { lines().filter { $0.hasPrefix("ENV ") }.count == 3 },
            "\(lines())\n\(daemon.output)")
        let events = lines().filter { $0.hasPrefix("{") }.compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        #expect(events.compactMap { $0["event"] as? String }.sorted() == ["failed", "sent", "sent"], "\(lines())")
        let failed = events.first { $0["event"] as? String == "failed" }
        #expect(
            failed?["http_status"] as? NSNumber == 404
                && (failed?["job"] as? [String: Any])?["segment_id"] as? String
                    == String(format: "0f8c5e8e-1111-4f4a-9a53-%012d", 2)
        )
        #expect((failed?["reason"] as? String)?.contains("404") == true, "\(String(describing: failed))")
        for line in lines().filter({ $0.hasPrefix("ENV ") }) {
            #expect(
                line.contains("key=none cred=none arg=from-refreshd"),
                "the hook saw refreshd's secrets or no arguments: \(line)")
        }
        #expect(lines().contains { $0.hasPrefix("ENV sent job=1 status=202") })
        // The hanging hook: started, killed at 2 s with its sleep, never finished.
        #expect(await daemon.eventuallyOutputs("hook did not finish in time: killed"), "\(daemon.output)")
        #expect(
            await eventually(timeout: 10) { (try? runToEnd("/usr/bin/pgrep", ["-f", "sleep 307"]))?.status == 1 },
            "the hook's sleep outlived it")
        #expect(!((try? String(contentsOfFile: directory + "/hang.log", encoding: .utf8)) ?? "").contains("finished"))
        #expect(fake.violations.isEmpty)
        kill(daemon.process.processIdentifier, SIGTERM)
        #expect(daemon.waitForExit(timeout: 10) == 0)
        #expect(!daemon.output.contains(fakeKey))
    }
}
