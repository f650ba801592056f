import Foundation
import Glibc
import TestSupport
import Testing

/// Every family /metrics exports, with its Prometheus type (docs/metrics.md lists the same).
let metricFamilies: [String: String] = [
    "process_cpu_seconds_total": "counter", "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge", "process_open_fds": "gauge", "process_max_fds": "gauge",
    "process_start_time_seconds": "gauge",
    "refreshd_build_info": "gauge", "refreshd_jobs": "gauge", "refreshd_jobs_held": "gauge",
    "refreshd_attempts_total": "counter", "refreshd_sendgrid_request_seconds": "histogram",
    "refreshd_sendgrid_ratelimit_remaining": "gauge",
    "refreshd_account_budget_remaining": "gauge", "refreshd_account_budget_limit": "gauge",
    "refreshd_account_budget_resets_timestamp_seconds": "gauge", "refreshd_next_send_timestamp_seconds": "gauge",
    "refreshd_account_paused": "gauge", "refreshd_account_leader": "gauge", "refreshd_holds": "gauge",
    "refreshd_blocks": "gauge", "refreshd_ledger_up": "gauge", "refreshd_ledger_writable": "gauge",
    "refreshd_queue_oldest_job_created_timestamp_seconds": "gauge", "refreshd_tzdata_stale": "gauge",
    "refreshd_spool_backlog": "gauge", "refreshd_spool_intake_blocked": "gauge",
    "refreshd_spool_rejected_files": "gauge", "refreshd_spool_rejected_bytes": "gauge",
    "refreshd_spool_rejected_total": "counter", "refreshd_spool_taken_total": "counter",
    "refreshd_http_requests_total": "counter", "refreshd_http_request_duration_seconds": "histogram",
    "refreshd_http_request_errors_total": "counter", "refreshd_http_active_requests": "gauge",
    // Deprecated in 0.2.0, removed in 0.3.0.
    "refreshd_uptime_seconds": "gauge", "refreshd_next_send_seconds": "gauge",
]

/// Families that appear only once something happened (a real request to SendGrid, a quota header).
let eventualFamilies: Set = ["refreshd_sendgrid_request_seconds", "refreshd_sendgrid_ratelimit_remaining"]

/// The repository's root.
let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// promtool from Debian's prometheus package (CI installs it: scripts/install-deps).
let promtool = "/usr/bin/promtool"

/// The metric families an expression (PromQL) names.
func familiesNamed(in expression: String) -> Set<String> {
    Set(
        expression.matches(of: /\b((?:refreshd|process)_[a-z_]+)/).map { match -> String in
            var name = String(match.1)
            for suffix in ["_bucket", "_count", "_sum"]
            where name.hasSuffix(suffix) && !metricFamilies.keys.contains(name) {
                name.removeLast(suffix.count)
            }
            return name
        })
}

extension ViewsAgainstADaemon {
    @Suite("metrics as Prometheus users expect them", .serialized)
    struct MetricsTests {
        /// A scrape of a running refreshd: every documented family with its type, nothing else of
        /// ours, no segment id, promtool's lint clean; the absent-when-nothing gauges go away.
        @Test func scrape() async throws {
            try await offPool {
                let daemon = try populatedDaemon()
                defer { daemon.stop() }
                func scrape() throws -> String {
                    try spawnAndWait(
                        "/usr/bin/curl", ["-s", "--unix-socket", daemon.socket, "http://refreshd/metrics"]
                    )
                    .stdout
                }
                _ = try daemon.ctl(["status"])
                let text = try scrape()
                var types: [String: String] = [:]
                for match in text.matches(of: /# TYPE ([a-z_:]+) ([a-z]+)\n/) {
                    types[String(match.1)] = String(match.2)
                }
                for (name, type) in metricFamilies where !eventualFamilies.contains(name) {
                    #expect(types[name] == type, "\(name): \(types[name] ?? "absent"), want \(type)")
                }
                for name in types.keys {
                    #expect(metricFamilies[name] != nil, "\(name) is exported but not documented")
                }
                #expect(text.contains("refreshd_build_info{version=\"0.1.0\",tzdata="), "\(text)")
                #expect(text.contains(#"refreshd_attempts_total{account="default",outcome="rate_limited"} 0"#))
                #expect(text.contains(#"refreshd_attempts_total{account="default",outcome="dry_run"} 2"#))
                #expect(text.contains(#"refreshd_http_requests_total{route="/v1/status",method="GET",status="200"}"#))
                #expect(text.contains("# HELP refreshd_next_send_seconds DEPRECATED"))
                #expect(!text.contains(ViewsAgainstADaemon.TimelineCommandTests.santiago) && !text.contains("5a1e0000"))
                for line in text.split(separator: "\n") where line.hasPrefix("process_start_time_seconds ") {
                    let start = Double(line.split(separator: " ")[1]) ?? 0
                    #expect(abs(start - Date().timeIntervalSince1970) < 120, "\(line)")
                }

                #expect(FileManager.default.isExecutableFile(atPath: promtool), "apt-get install prometheus (promtool)")
                let file = daemon.directory + "/metrics.txt"
                try text.write(toFile: file, atomically: true, encoding: .utf8)
                let lint = try spawnAndWait(
                    "/bin/sh", ["-c", "\(promtool) check metrics < \(file)"], mergeOutput: true)
                #expect(lint.status == 0 && lint.stdout.isEmpty, "promtool check metrics: \(lint.stdout)")

                // Nothing queued: no next send, no oldest job (absent, not a sentinel).
                #expect(try daemon.ctl(["cancel", "--state", "queued", "--account", "default"]).status == 0)
                let empty = try scrape()
                #expect(!empty.contains("refreshd_next_send_timestamp_seconds{"), "\(empty)")
                #expect(!empty.contains("refreshd_queue_oldest_job_created_timestamp_seconds "), "\(empty)")
                #expect(empty.contains(#"refreshd_next_send_seconds{account="default"} -1"#))
            }
        }

        /// contrib/prometheus/alerts.yml: valid, each rule's test passes, and it names only exported families.
        @Test func alertRules() async throws {
            // promtool runs for seconds: off the two threads the other suites' async tests share.
            try await offPool { try checkAlertRules() }
        }

        func checkAlertRules() throws {
            let directory = repositoryRoot + "/contrib/prometheus"
            #expect(FileManager.default.isExecutableFile(atPath: promtool), "apt-get install prometheus (promtool)")
            let check = try spawnAndWait(promtool, ["check", "rules", directory + "/alerts.yml"], mergeOutput: true)
            #expect(check.status == 0 && check.stdout.contains("SUCCESS: 8 rules found"), "\(check.stdout)")
            let test = try spawnAndWait(promtool, ["test", "rules", directory + "/alerts.test.yml"], mergeOutput: true)
            #expect(test.status == 0 && test.stdout.contains("SUCCESS"), "\(test.stdout)")
            let rules = try String(contentsOfFile: directory + "/alerts.yml", encoding: .utf8)
            var alerts: [String] = []
            for line in rules.split(separator: "\n") {
                if let match = line.firstMatch(of: /^\s+- alert: (\w+)/) { alerts.append(String(match.1)) }
                if let match = line.firstMatch(of: /^\s+expr: (.*)$/) {
                    for name in familiesNamed(in: String(match.1)) {
                        #expect(metricFamilies[name] != nil, "alerts.yml names \(name), which refreshd does not export")
                    }
                }
            }
            // Every alert has a test.
            let tests = try String(contentsOfFile: directory + "/alerts.test.yml", encoding: .utf8)
            for alert in alerts { #expect(tests.contains("alertname: \(alert)"), "no test for \(alert)") }
        }

        /// contrib/grafana/refreshd.json: valid JSON whose queries name only exported families, and
        /// docs/metrics.md documents every family.
        @Test func dashboardAndDocs() throws {
            let data = try Data(contentsOf: URL(fileURLWithPath: repositoryRoot + "/contrib/grafana/refreshd.json"))
            let dashboard = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            let panels = dashboard["panels"] as? [[String: Any]] ?? []
            #expect(panels.count >= 8)
            var named = Set<String>()
            for panel in panels {
                for target in panel["targets"] as? [[String: Any]] ?? [] {
                    named.formUnion(familiesNamed(in: target["expr"] as? String ?? ""))
                }
            }
            for name in named { #expect(metricFamilies[name] != nil, "the dashboard names \(name)") }
            for wanted in [
                "refreshd_account_budget_remaining", "refreshd_attempts_total", "refreshd_jobs",
                "refreshd_queue_oldest_job_created_timestamp_seconds", "refreshd_next_send_timestamp_seconds",
            ] {
                #expect(named.contains(wanted), "the dashboard shows \(wanted)")
            }
            let docs = try String(contentsOfFile: repositoryRoot + "/docs/metrics.md", encoding: .utf8)
            for name in metricFamilies.keys { #expect(docs.contains("`\(name)`"), "docs/metrics.md: \(name)") }
        }
    }
}
