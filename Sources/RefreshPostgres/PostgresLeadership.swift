import Foundation
import Logging
import PostgresNIO
import RefreshStore

// Leadership and clocks (#14); the invariants are numbered in PostgresLedger.swift's notes:
//
//   R16 (one leader)  A host sends for an account only while it holds the account's session
//                     advisory lock (`'refreshd leader ' || identity`) on a connection of its own,
//                     and only within `lease` of the last time that connection answered. The
//                     connection asks the server to drop it once silent for `serverDropsAfter`
//                     (TCP keepalives and user timeout), longer than the lease: a leader cut off
//                     from the database stops before the server frees its lock for another host.
//                     Safety never rests on this: the reservation (R1) re-checks every rule.
//                     Taking over: the previous leader's session had ended before this host got the
//                     lock, and it sent only within `lease` of its last answer, which came before
//                     that end; so any request of its is over one request timeout after the
//                     takeover. Then (`takeoverMargin` later, on this host's monotonic clock) the
//                     new leader makes other hosts' `reserved` attempts of the account `uncertain`
//                     (R2, without waiting for their heartbeat's lease): they count, their jobs
//                     return to the queue, the pre-flight read settles whether SendGrid took them.
//                     The accounts led are the ones served now: a reload's new accounts are tried,
//                     the locks of those it removed are let go (`serve`).
//   R17 (clock)       Each answer of that connection carries the database's clock; a host whose
//                     clock differs from it by more than `maxClockSkew` gives up every account it
//                     leads and takes none, until it agrees again.

/// What leadership needs to know (the daemon's; nil in `PostgresLedger.init`: no leadership).
public struct LeadershipSettings: Sendable {
    /// How far this host's clock may be from the database's (the daemon: half the safety margin),
    /// at start (`PostgresLedger.serve` changes it).
    public var maxClockSkew: Double
    /// How often the leader connection is checked and free accounts are tried.
    public var interval: Duration
    /// How long a leader keeps sending after its connection last answered.
    public var lease: Duration
    /// How soon the server drops a silent leader connection (longer than `lease`).
    public var serverDropsAfter: Duration
    /// This host's wall clock (the daemon's), compared with the database's.
    public var wallClock: @Sendable () -> Date

    public init(
        maxClockSkew: Double, interval: Duration = .seconds(1), lease: Duration = .seconds(3),
        serverDropsAfter: Duration = .seconds(6), wallClock: @escaping @Sendable () -> Date = { Date() }
    ) {
        (self.maxClockSkew, self.interval, self.lease, self.serverDropsAfter) = (
            maxClockSkew, interval, lease, serverDropsAfter
        )
        self.wallClock = wallClock
    }
}

/// The leadership of one ledger: the identities it holds, when its connection last answered,
/// the clock skew measured.
final class LeadershipState: Sendable {
    struct State {
        var led: Set<String> = []
        var confirmedAt: ContinuousClock.Instant?
        var skew: Double?
        var refusal: String?
        var unreachable: String? = "not connected to the ledger database yet"
        /// Accounts led whose previous leader's reservations are still to be recovered, with when
        /// the lead was gained.
        var takeovers: [String: ContinuousClock.Instant] = [:]
        /// How far this host's clock may be from the database's now.
        var maxClockSkew: Double
    }

    /// Added to the request timeout before a previous leader's reservations are recovered.
    static let takeoverMargin: Duration = .seconds(5)

    let settings: LeadershipSettings
    let state: Locked<State>

    init(_ settings: LeadershipSettings) {
        self.settings = settings
        state = Locked(State(maxClockSkew: settings.maxClockSkew))
    }
}

extension PostgresLedger {
    public func dispatch(account: String) -> Dispatch {
        guard let leadership else { return .leads }
        let identity = stored(account)
        let lease = leadership.settings.lease
        return leadership.state.withLock { state in
            if let refusal = state.refusal { return .refused(refusal) }
            if let reason = state.unreachable { return .refused(reason) }
            guard state.led.contains(identity), let at = state.confirmedAt, ContinuousClock.now < at + lease else {
                return .standsBy("another host leads the account")
            }
            return .leads
        }
    }

    /// Starts the loop that holds the leader connection (R16, R17).
    func startLeading() {
        let task = Task { [weak self] in
            while !Task.isCancelled {
                guard let self else { return }
                await self.lead()
                try? await Task.sleep(for: self.leadership?.settings.interval ?? .seconds(1))
            }
        }
        tasks.withLock { $0.append(task) }
    }

    /// One leader connection's life: connect, then check it (and the clock) and try the free
    /// accounts every `interval` until it fails; every account is given up when it does.
    private func lead() async {
        guard let leadership else { return }
        let settings = leadership.settings
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(
                configuration: connectionConfiguration, id: 1, logger: logger)
        } catch {
            standDown(
                unreachable: "cannot reach the ledger database \(endpoint): \(PostgresLedgerConnection.explain(error))")
            return
        }
        defer { Task { try? await connection.close() } }
        do {
            // The server drops this connection once silent for serverDropsAfter (R16); a unix
            // socket ignores these.
            let drop = Int(settings.serverDropsAfter / .seconds(1))
            let idle = max(1, drop / 3)
            let probes = max(1, (drop - idle) / 2)
            try await run(connection, "SET tcp_keepalives_idle = \(unescaped: String(idle))")
            try await run(connection, "SET tcp_keepalives_interval = \(unescaped: String(2))")
            try await run(connection, "SET tcp_keepalives_count = \(unescaped: String(probes))")
            try await run(connection, "SET tcp_user_timeout = \(unescaped: String(drop * 1000))")
        } catch {
            standDown(unreachable: "the ledger database \(endpoint) did not take the leader connection's settings")
            return
        }
        while !Task.isCancelled {
            let sent = ContinuousClock.now
            let before = settings.wallClock().timeIntervalSince1970
            do {
                let databaseNow = try await rows(
                    connection, "SELECT extract(epoch FROM clock_timestamp())::float8", timeout: settings.lease
                ).first?[0].decode(Double.self)
                let after = settings.wallClock().timeIntervalSince1970
                let skew = databaseNow.map { (before + after) / 2 - $0 } ?? 0
                let maxClockSkew = leadership.state.withLock { $0.maxClockSkew }
                let refusal =
                    abs(skew) > maxClockSkew
                    ? "this host's clock is \(Self.seconds(skew)) s \(skew > 0 ? "ahead of" : "behind") the ledger "
                        + "database's (more than \(Self.seconds(maxClockSkew)) s): not sending until they agree"
                    : nil
                var led = leadership.state.withLock { $0.led }
                let wasLeading = led
                if refusal != nil, !led.isEmpty {
                    try await run(connection, "SELECT pg_advisory_unlock_all()", timeout: settings.lease)
                    led = []
                } else if refusal == nil {
                    // Accounts a reload took away are let go; those it added are tried.
                    let served = Set(identities.withLock { $0.byName.values })
                    let dropped = led.subtracting(served).sorted()
                    if !dropped.isEmpty {
                        try await run(
                            connection,
                            """
                            SELECT pg_advisory_unlock(\(unescaped: Self.leaderLockKey))
                            FROM unnest(\(dropped)::text[]) AS identity
                            """, timeout: settings.lease)
                        led.subtract(dropped)
                        for identity in dropped {
                            logger.notice(
                                "ledger: this host no longer leads the account (no longer in its configuration)",
                                metadata: ["identity": "\(identity)"])
                        }
                    }
                    let free = served.subtracting(led).sorted()
                    if !free.isEmpty {
                        let taken = try await rows(
                            connection,
                            """
                            SELECT identity FROM unnest(\(free)::text[]) AS identity
                            WHERE pg_try_advisory_lock(\(unescaped: Self.leaderLockKey))
                            """, timeout: settings.lease
                        ).map { try $0[0].decode(String.self) }
                        led.formUnion(taken)
                    }
                }
                let now = led
                let gained = now.subtracting(wasLeading)
                let due = leadership.state.withLock { state -> [String] in
                    for identity in gained { state.takeovers[identity] = sent }
                    for identity in state.takeovers.keys where !now.contains(identity) {
                        state.takeovers[identity] = nil
                    }
                    let wait = Duration.milliseconds(Int64(maxRequestSeconds * 1000)) + LeadershipState.takeoverMargin
                    return state.takeovers.filter { $0.value + wait <= sent }.map(\.key)
                }
                for identity in due.sorted() {
                    // On a pooled connection: its failure keeps the lead and is tried again next
                    // round (the old reservations count meanwhile, as in flight).
                    do {
                        try await recoverTakenOver(identity: identity)
                        leadership.state.withLock { $0.takeovers[identity] = nil }
                    } catch {
                        logger.warning(
                            "ledger: the previous leader's reservations are not recovered yet; trying again",
                            metadata: ["account": "\(local(identity))", "error": "\(error)"])
                    }
                }
                leadership.state.withLock {
                    $0.led = now
                    $0.confirmedAt = sent
                    $0.skew = skew
                    $0.refusal = refusal
                    $0.unreachable = nil
                }
                if now != wasLeading {
                    for gained in now.subtracting(wasLeading).sorted() {
                        logger.notice(
                            "ledger: this host now leads the account", metadata: ["account": "\(local(gained))"])
                    }
                    if let refusal, !wasLeading.isEmpty { logger.error("ledger: \(refusal)") }
                    changeHandler.withLock { $0 }?()
                }
            } catch {
                let wasLeading = leadership.state.withLock { $0.led }
                standDown(unreachable: "the ledger database \(endpoint) stopped answering the leader connection")
                if !wasLeading.isEmpty {
                    logger.error(
                        "ledger: lost the leader connection; not sending until it is back",
                        metadata: ["error": "\(error)"])
                }
                return
            }
            try? await Task.sleep(for: settings.interval)
        }
    }

    /// R16's takeover: other hosts' reservations of an account this host leads become
    /// `uncertain`; the lanes read their queues again (the jobs are queued once more).
    private func recoverTakenOver(identity: String) async throws {
        let now = leadership?.settings.wallClock() ?? Date()
        let recovered = try await transaction { connection in
            try await self.lockAccount(connection, identity: identity)
            let ids = try await self.rows(
                connection,
                """
                SELECT id FROM attempt WHERE account = \(identity) AND outcome = 'reserved' AND host_id <> \(self.hostID)
                """
            ).map { try $0[0].decode(Int64.self) }
            try await self.recover(
                connection, ids, now: now,
                reason: "the host that reserved it lost the lead while the request may have been in flight")
            return ids.count
        }
        if recovered > 0 {
            logger.notice(
                "ledger: the previous leader's reservations now count as uncertain",
                metadata: ["account": "\(local(identity))", "attempts": "\(recovered)"])
            noticeOutsideChange()
        }
    }

    /// Gives up every account at once (the connection failed); the server frees the locks.
    private func standDown(unreachable: String) {
        leadership?.state.withLock {
            $0.led = []
            $0.confirmedAt = nil
            $0.unreachable = unreachable
        }
        changeHandler.withLock { $0 }?()
    }

    /// The advisory lock key of the account whose identity is the column `identity` (R16).
    static let leaderLockKey = "hashtextextended('refreshd leader ' || identity, 0)"

    static func seconds(_ value: Double) -> String { String(format: "%.1f", abs(value)) }

    /// The hosts sharing the ledger, who leads each of this host's accounts, and this host's clock.
    public func cluster(now: Date) async throws -> ClusterView? {
        let identities = identities.withLock { $0.byName.values.sorted() }
        let t = now.timeIntervalSince1970
        let (hosts, leaders) = try await session { connection in
            let hosts = try await self.hosts(connection).map {
                ClusterView.Host(
                    hostID: $0.hostID, heartbeatAt: $0.heartbeatAt,
                    alive: $0.heartbeatAt.timeIntervalSince1970 > t - Self.leaseSeconds)
            }
            // A session advisory lock on a bigint key shows as classid (high 32 bits), objid (low).
            let leaders = try await self.rows(
                connection,
                """
                SELECT k.identity, a.application_name FROM (
                    SELECT identity, \(unescaped: Self.leaderLockKey) AS key
                    FROM unnest(\(identities)::text[]) AS identity) AS k
                JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                    AND l.classid = ((k.key >> 32) & 4294967295)::oid AND l.objid = (k.key & 4294967295)::oid
                JOIN pg_stat_activity a ON a.pid = l.pid
                """
            ).map { (try $0[0].decode(String.self), try $0[1].decode(String?.self) ?? "?") }
            return (hosts, leaders)
        }
        let state = leadership?.state.withLock { $0 }
        return ClusterView(
            hostID: hostID, hosts: hosts,
            leaders: Dictionary(leaders.map { (local($0.0), $0.1) }, uniquingKeysWith: { first, _ in first }),
            clockSkewSeconds: state?.skew, refusal: state?.refusal)
    }
}
