import Foundation
import RefreshCore
import RefreshPostgres
import RefreshStore
import RefreshWire
import TestSupport
import Testing

/// The ledger backends the conformance suite runs against.
enum Backend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgresql
    var testDescription: String { rawValue }
}

/// Where one test's ledger lives: a SQLite file of its own, or a database of its own in the test
/// process's PostgreSQL cluster (`PostgresCluster.shared()`). Opening the same place again is a
/// restart of the daemon (or, with another `host`, another host on the same ledger).
struct LedgerPlace: Sendable {
    let backend: Backend
    let location: String

    init(_ backend: Backend, location: String) {
        self.backend = backend
        self.location = location
    }

    /// A new place. The cluster's first start and `CREATE DATABASE` (psql) block: off the
    /// concurrency pool, which the ledgers' connections need.
    static func make(_ backend: Backend) async throws -> LedgerPlace {
        switch backend {
        case .sqlite: return LedgerPlace(backend, location: tempDirectory() + "/ledger.sqlite")
        case .postgresql:
            return LedgerPlace(backend, location: try await offPool { try PostgresCluster.shared().createDatabase() })
        }
    }

    /// Generous: the whole test suite shares two cores, and a CPU-bound test elsewhere can keep
    /// the connections' tasks waiting for seconds (the daemon's default is 10 s).
    static let operationTimeout: Duration = .seconds(60)

    func configuration() throws -> LedgerConfiguration {
        var configuration = LedgerConfiguration()
        configuration.backend = Setting(.postgresql)
        configuration.url = Setting(try PostgresCluster.shared().url(database: location))
        configuration.tls = Setting(.disable)
        configuration.poolSize = Setting(2)
        return configuration
    }

    func open(
        now: Date, host: String = "host-a", maxRequestSeconds: Double = 300, identities: [String: String] = [:],
        leadership: LeadershipSettings? = nil
    ) async throws -> any Ledger {
        switch backend {
        case .sqlite:
            return try SQLiteLedger(path: location, now: now, maxRequestSeconds: maxRequestSeconds)
        case .postgresql:
            return try await PostgresLedger(
                configuration: configuration(), hostID: host, identities: identities, now: now,
                maxRequestSeconds: maxRequestSeconds, operationTimeout: Self.operationTimeout,
                hostLockWait: .milliseconds(500), leadership: leadership)
        }
    }
}

/// Closes a ledger: a PostgreSQL ledger's connections (and host lock) go; a SQLite ledger closes
/// with its last reference.
func close(_ ledger: any Ledger) async {
    await (ledger as? PostgresLedger)?.shutdown()
}
