import Foundation
import Prometheus
import RefreshCore
import RefreshStore
import TZData

import enum CoreMetrics.MetricsSystem

/// What the dispatcher reports as it works (metrics, for now).
public protocol DispatchObserver: Sendable {
    /// An attempt finished with `outcome`; `latency` is the SendGrid request's duration (nil when
    /// no request was made).
    func attemptFinished(account: String, outcome: AttemptOutcome, latency: Duration?)
    /// SendGrid's X-RateLimit headers on an accepted refresh described the account's daily quota.
    func quotaReported(account: String, limit: Int, remaining: Int)
    func accountPaused(account: String, reason: String)
    func ledgerUnwritable(account: String, error: String)
}

extension DispatchObserver {
    public func quotaReported(account: String, limit: Int, remaining: Int) {}
    /// The account was paused (401, 403): nothing is sent for it until a reload.
    public func accountPaused(account: String, reason: String) {}
    /// An answer cannot be written to the ledger (full disk, read-only): nothing more is sent for
    /// the account until it is.
    public func ledgerUnwritable(account: String, error: String) {}
}

/// Several observers as one (the metrics and the hooks).
public struct DispatchObservers: DispatchObserver {
    let observers: [any DispatchObserver]

    public init(_ observers: [any DispatchObserver]) { self.observers = observers }

    public func attemptFinished(account: String, outcome: AttemptOutcome, latency: Duration?) {
        for observer in observers { observer.attemptFinished(account: account, outcome: outcome, latency: latency) }
    }

    public func quotaReported(account: String, limit: Int, remaining: Int) {
        for observer in observers { observer.quotaReported(account: account, limit: limit, remaining: remaining) }
    }

    public func accountPaused(account: String, reason: String) {
        for observer in observers { observer.accountPaused(account: account, reason: reason) }
    }

    public func ledgerUnwritable(account: String, error: String) {
        for observer in observers { observer.ledgerUnwritable(account: account, error: error) }
    }
}

/// refreshd's metrics in Prometheus text format (swift-prometheus). Counters are kept as events
/// happen; gauges (jobs by state, budget remaining, seconds until the next send, spool) are read
/// when scraped. Labels are bounded: account names and fixed vocabularies only, never segment
/// ids, never secrets.
public final class RefreshdMetrics: DispatchObserver, @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    private let lock = NSLock()
    private var attempts: [String: Counter] = [:]
    private var latency: [String: DurationHistogram] = [:]
    private var lastRejected = 0
    private var lastTaken = 0
    static let latencyBuckets: [Duration] = [
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5),
        .seconds(5), .seconds(10), .seconds(30),
    ]

    public init() {}

    static func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "refreshd", metricName: metric, unitName: unit, helpText: help)
    }

    public func attemptFinished(account: String, outcome: AttemptOutcome, latency duration: Duration?) {
        let key = account + "\u{1F}" + outcome.rawValue
        let (counter, histogram) = lock.withLock { () -> (Counter, DurationHistogram?) in
            let counter =
                attempts[key]
                ?? registry.makeCounter(
                    descriptor: Self.name("attempts", "total", "Refresh attempts by outcome"),
                    labels: [("account", account), ("outcome", outcome.rawValue)])
            attempts[key] = counter
            guard duration != nil else { return (counter, nil) }
            let histogram =
                latency[account]
                ?? registry.makeDurationHistogram(
                    descriptor: Self.name("sendgrid_request", "seconds", "Duration of refresh requests to SendGrid"),
                    labels: [("account", account)],
                    buckets: Self.latencyBuckets)
            latency[account] = histogram
            return (counter, histogram)
        }
        counter.increment()
        if let duration, let histogram { histogram.record(duration) }
    }

    public func quotaReported(account: String, limit: Int, remaining: Int) {
        registry.makeGauge(
            descriptor: Self.name(
                "sendgrid_ratelimit_remaining", "",
                "X-RateLimit-Remaining on the last accepted refresh (when it described the daily quota)"),
            labels: [("account", account)]
        ).set(Double(remaining))
    }

    /// Gauges whose series come and go (absent when there is nothing to say), by name and account.
    private var transient: [String: Gauge] = [:]
    private var buildInfo: (tzdata: String, gauge: Gauge)?

    /// Sets a gauge that exists only while `value` is non-nil.
    private func optionalGauge(_ descriptor: MetricNameDescriptor, account: String?, _ value: Double?) {
        let key = descriptor.metricName + "\u{1F}" + (account ?? "")
        let labels = account.map { [("account", $0)] } ?? []
        lock.withLock {
            if let value {
                let gauge = transient[key] ?? registry.makeGauge(descriptor: descriptor, labels: labels)
                transient[key] = gauge
                gauge.set(value)
            } else if let gauge = transient.removeValue(forKey: key) {
                registry.unregisterGauge(gauge)
            }
        }
    }

    /// The scrape: gauges refreshed from the state, then everything rendered, then the process'
    /// own metrics (`process_*`, as the Prometheus client libraries write them).
    func render(state: ControlState) async -> String {
        let t = state.now()
        var counts: [JobState: Int]?
        var oldest: Date?
        do {
            counts = try await state.ledger.jobCounts()
            oldest = try await state.ledger.oldestQueuedAt()
        } catch {
            counts = nil
        }
        registry.makeGauge(descriptor: Self.name("ledger_up", "", "1 when the ledger answered this scrape's reads"))
            .set(counts == nil ? 0.0 : 1.0)
        for jobState in JobState.allCases {
            registry.makeGauge(
                descriptor: Self.name("jobs", "", "Jobs in the ledger by state"), labels: [("state", jobState.rawValue)]
            )
            .set(Double(counts?[jobState] ?? 0))
        }
        optionalGauge(
            Self.name(
                "queue_oldest_job_created_timestamp", "seconds",
                "When the oldest queued job was submitted, Unix seconds (absent: none queued)"),
            account: nil, oldest?.timeIntervalSince1970)
        let tzdata = state.zones.version ?? "unknown"
        lock.withLock {
            guard buildInfo?.tzdata != tzdata else { return }
            if let old = buildInfo?.gauge { registry.unregisterGauge(old) }
            let gauge = registry.makeGauge(
                descriptor: Self.name("build", "info", "refreshd's version and the tz data it uses (always 1)"),
                labels: [("version", state.version), ("tzdata", tzdata)])
            gauge.set(1.0)
            buildInfo = (tzdata, gauge)
        }
        let hostVersion = (try? ZoneInfoDirectory(path: state.zones.path))?.version
        registry.makeGauge(
            descriptor: Self.name(
                "tzdata_stale", "",
                "1 when the host's tz database is another version than the one in use (a reload failed)")
        ).set(hostVersion != nil && hostVersion != state.zones.version ? 1.0 : 0.0)
        let configuration = state.configuration
        let lanes = state.laneStatuses
        // A shared ledger (#14): this host's clock against the database's, and the hosts alive.
        let cluster = counts == nil ? nil : try? await state.ledger.cluster(now: t)
        optionalGauge(
            Self.name(
                "clock_skew", "seconds",
                "This host's clock minus the ledger database's (absent: one host, or not measured)"),
            account: nil, cluster?.clockSkewSeconds)
        if let view = cluster {
            registry.makeGauge(
                descriptor: Self.name(
                    "clock_refused", "", "1 while this host sends nothing: its clock disagrees with the database's")
            ).set(view.refusal == nil ? 0.0 : 1.0)
            registry.makeGauge(
                descriptor: Self.name("cluster_hosts_alive", "", "Hosts sharing the ledger whose heartbeat is current")
            ).set(Double(view.hosts.filter(\.alive).count))
        }
        for account in configuration.accounts {
            let labels = [("account", account.name)]
            // Every outcome's counter exists from the start at 0, so increase() sees a first 429.
            for outcome in AttemptOutcome.allCases where outcome != .reserved {
                _ = registry.makeCounter(
                    descriptor: Self.name("attempts", "total", "Refresh attempts by outcome"),
                    labels: [("account", account.name), ("outcome", outcome.rawValue)])
            }
            let budgets = (try? await state.accountBudgets(account.name, includeBlocks: false, now: t)) ?? []
            let daily = budgets.first { $0.rule == .accountDaily }
            registry.makeGauge(
                descriptor: Self.name("account_budget_remaining", "", "Requests left today (UTC) for the account"),
                labels: labels
            )
            .set(Double(daily?.remaining ?? 0))
            registry.makeGauge(
                descriptor: Self.name("account_budget_limit", "", "Requests the account may make per UTC day"),
                labels: labels
            )
            .set(Double(daily?.limit ?? configuration.limits(for: account.name).accountDaily))
            optionalGauge(
                Self.name(
                    "account_budget_resets_timestamp", "seconds",
                    "When the account's day (UTC) resets, with the safety margin, Unix seconds"),
                account: account.name, daily?.resetsAt?.timeIntervalSince1970)
            let lane = lanes.first { $0.account == account.name }
            optionalGauge(
                Self.name(
                    "next_send_timestamp", "seconds", "When the next refresh is planned, Unix seconds (absent: none)"),
                account: account.name, lane?.nextSendAt?.timeIntervalSince1970)
            // Deprecated in 0.2.0, removed in 0.3.0 (CHANGELOG): next_send_timestamp_seconds replaces it.
            let until: Double = lane?.nextSendAt.map { max(0, $0.timeIntervalSince(t)) } ?? -1
            registry.makeGauge(
                descriptor: Self.name(
                    "next_send", "seconds",
                    "DEPRECATED, use refreshd_next_send_timestamp_seconds: seconds until the next send (-1: none)"),
                labels: labels
            )
            .set(until)
            registry.makeGauge(
                descriptor: Self.name("account_paused", "", "1 while the account is paused (401, 403)"),
                labels: labels
            )
            .set(lane?.paused == nil ? 0.0 : 1.0)
            registry.makeGauge(
                descriptor: Self.name(
                    "account_leader", "", "1 while this process dispatches the account (one host: always)"),
                labels: labels
            )
            .set(lane != nil && state.ledger.dispatch(account: account.name) == .leads ? 1.0 : 0.0)
            registry.makeGauge(
                descriptor: Self.name(
                    "ledger_writable", "", "0 while an answer for the account cannot be written to the ledger"),
                labels: labels
            )
            .set(lane?.waitingForLedger == true ? 0.0 : 1.0)
            let holds = (try? await state.ledger.activeHolds(account: account.name)) ?? []
            let blocks = (try? await state.ledger.activeBlocks(account: account.name, now: t)) ?? []
            for scope in ["account", "segment"] {
                registry.makeGauge(
                    descriptor: Self.name("holds", "", "Operator holds in force (refreshctl hold), by scope"),
                    labels: [("account", account.name), ("scope", scope)]
                ).set(Double(holds.filter { ($0.segmentID == nil) == (scope == "account") }.count))
                registry.makeGauge(
                    descriptor: Self.name("blocks", "", "Blocks learned from SendGrid's 429s in force, by scope"),
                    labels: [("account", account.name), ("scope", scope)]
                ).set(Double(blocks.filter { ($0.segmentID == nil) == (scope == "account") }.count))
            }
            registry.makeGauge(
                descriptor: Self.name("jobs_held", "", "Queued jobs held back instead of sent, by reason"),
                labels: [("account", account.name), ("reason", "unknown_time_zone")]
            ).set(Double(lane?.held ?? 0))
        }
        if let intake = state.intakeState {
            // Intake counts since start; the counters follow them.
            let (rejected, taken) = lock.withLock { () -> (Int, Int) in
                defer { (lastRejected, lastTaken) = (intake.rejected, intake.taken) }
                return (max(0, intake.rejected - lastRejected), max(0, intake.taken - lastTaken))
            }
            registry.makeCounter(
                descriptor: Self.name("spool_rejected", "total", "Spool files rejected (moved to rejected/)")
            ).increment(by: Int64(rejected))
            registry.makeCounter(descriptor: Self.name("spool_taken", "total", "Spool files taken into the ledger"))
                .increment(by: Int64(taken))
            registry.makeGauge(descriptor: Self.name("spool_backlog", "", "Files waiting in incoming/")).set(
                Double(intake.backlog))
            registry.makeGauge(
                descriptor: Self.name(
                    "spool_intake_blocked", "", "1 while spool intake is blocked (see refreshctl status)")
            )
            .set(intake.blocked == nil ? 0.0 : 1.0)
            registry.makeGauge(
                descriptor: Self.name("spool_rejected_files", "", "Files kept in rejected/ (with their .error files)")
            )
            .set(Double(intake.rejectedFiles))
            registry.makeGauge(descriptor: Self.name("spool_rejected", "bytes", "Bytes kept in rejected/")).set(
                Double(intake.rejectedBytes))
        }
        // Deprecated in 0.2.0, removed in 0.3.0: process_start_time_seconds replaces it.
        registry.makeGauge(
            descriptor: Self.name(
                "uptime", "seconds", "DEPRECATED, use process_start_time_seconds: seconds since start")
        ).set(t.timeIntervalSince(state.startedAt))
        return Self.withHelp(registry.emitToString()) + ProcessMetrics.text()
    }

    /// HELP lines for the families swift-metrics creates (it has no help text; the registry refuses
    /// two texts for one name, so they are added to the output).
    static let helpTexts = [
        "refreshd_http_requests_total": "Control API requests by route, method and status",
        "refreshd_http_request_duration_seconds": "Control API request durations by route, method and status",
        "refreshd_http_request_errors_total": "Control API requests that failed with an error, by route and status",
        "refreshd_http_active_requests": "Control API requests in progress, by method",
    ]

    static func withHelp(_ text: String) -> String {
        var out = text
        for (name, help) in helpTexts where !out.contains("# HELP \(name) ") {
            out = out.replacingOccurrences(of: "# TYPE \(name) ", with: "# HELP \(name) \(help)\n# TYPE \(name) ")
        }
        return out
    }
}

extension RefreshdMetrics {
    /// Points swift-metrics (Hummingbird's MetricsMiddleware: requests, durations, errors of the
    /// control API) at this registry, under Prometheus-style names. The composition root calls it
    /// once per process; later calls do nothing.
    public func bootstrapMetricsSystem() {
        Self.bootstrapLock.withLock {
            guard !Self.bootstrapped else { return }
            Self.bootstrapped = true
            var factory = PrometheusMetricsFactory(registry: registry)
            factory.nameAndLabelSanitizer = { name, labels in
                let names = [
                    "hb.requests": "refreshd_http_requests_total",
                    "http.server.request.duration": "refreshd_http_request_duration_seconds",
                    "hb.request.errors": "refreshd_http_request_errors_total",
                    "http.server.active_requests": "refreshd_http_active_requests",
                ]
                let labelNames = [
                    "http.route": "route", "http.request.method": "method", "http.response.status_code": "status",
                    "error.type": "status",
                ]
                let renamed = names[name] ?? name.replacingOccurrences(of: ".", with: "_")
                return (
                    renamed,
                    labels.map { (labelNames[$0.0] ?? $0.0.replacingOccurrences(of: ".", with: "_"), $0.1) }
                )
            }
            MetricsSystem.bootstrap(factory)
        }
    }

    private static let bootstrapLock = NSLock()
    nonisolated(unsafe) private static var bootstrapped = false
}

/// The process' own metrics under the names every Prometheus client library uses, read from
/// /proc/self (Linux).
enum ProcessMetrics {
    static func text() -> String {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        var out = ""
        func add(_ name: String, _ type: String, _ help: String, _ value: Double) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"
        }
        // /proc/self/stat: the fields after the command's closing parenthesis, from field 3 (state).
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        {
            let fields = stat[stat.index(after: close)...].split(separator: " ").map(String.init)
            func field(_ number: Int) -> Double { Double(fields[number - 3]) ?? 0 }
            if fields.count >= 22 {
                add(
                    "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
                    (field(14) + field(15)) / ticks)
                add("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", field(23))
                add("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", field(24) * pageSize)
                if let boot = bootTime() {
                    add(
                        "process_start_time_seconds", "gauge",
                        "Start time of the process since unix epoch in seconds.", boot + field(22) / ticks)
                }
            }
        }
        if let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            add("process_open_fds", "gauge", "Number of open file descriptors.", Double(fds.count))
        }
        var limit = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            add("process_max_fds", "gauge", "Maximum number of open file descriptors.", Double(limit.rlim_cur))
        }
        return out
    }

    /// The boot time (`btime` in /proc/stat), Unix seconds.
    static func bootTime() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst(6).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}
