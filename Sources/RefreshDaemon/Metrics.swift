import Foundation
import Prometheus
import RefreshCore
import RefreshStore

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

    /// The scrape: gauges refreshed from the state, then everything rendered.
    func render(state: ControlState) -> String {
        let t = state.now()
        let counts = (try? state.ledger.jobCounts()) ?? [:]
        for jobState in JobState.allCases {
            registry.makeGauge(
                descriptor: Self.name("jobs", "", "Jobs in the ledger by state"), labels: [("state", jobState.rawValue)]
            )
            .set(Double(counts[jobState] ?? 0))
        }
        let configuration = state.configuration
        let lanes = state.laneStatuses
        for account in configuration.accounts {
            let budgets = (try? state.accountBudgets(account.name, includeBlocks: false, now: t)) ?? []
            registry.makeGauge(
                descriptor: Self.name("account_budget_remaining", "", "Requests left today (UTC) for the account"),
                labels: [("account", account.name)]
            )
            .set(Double(budgets.first { $0.rule == .accountDaily }?.remaining ?? 0))
            let lane = lanes.first { $0.account == account.name }
            let until: Double = lane?.nextSendAt.map { max(0, $0.timeIntervalSince(t)) } ?? -1
            registry.makeGauge(
                descriptor: Self.name("next_send", "seconds", "Seconds until the next send (-1: none planned)"),
                labels: [("account", account.name)]
            )
            .set(until)
            registry.makeGauge(
                descriptor: Self.name("account_paused", "", "1 while the account is paused (401, 403)"),
                labels: [("account", account.name)]
            )
            .set(lane?.paused == nil ? 0.0 : 1.0)
            let holds = (try? state.ledger.activeHolds(account: account.name)) ?? []
            for scope in ["account", "segment"] {
                registry.makeGauge(
                    descriptor: Self.name("holds", "", "Operator holds in force (refreshctl hold), by scope"),
                    labels: [("account", account.name), ("scope", scope)]
                ).set(Double(holds.filter { ($0.segmentID == nil) == (scope == "account") }.count))
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
        registry.makeGauge(descriptor: Self.name("uptime", "seconds", "Seconds since refreshd started")).set(
            t.timeIntervalSince(state.startedAt))
        return registry.emitToString()
    }
}
