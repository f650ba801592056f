import Foundation
import Logging
import RefreshStore
import ServiceLifecycle

/// Keeps the ledger tidy: marks queued jobs past `expires_at` as expired and prunes finished rows
/// older than `retention_days`, at start and then every `interval`.
struct LedgerMaintenanceService: Service {
    let ledger: any Ledger
    let retentionDays: Int
    let interval: Duration
    let now: @Sendable () -> Date
    let logger: Logger

    func run() async throws {
        // Expiring and pruning block on the ledger (SQLite): on a thread of their own.
        try await withTaskExecutorPreference(BlockingExecutor("maintenance")) { try await loop() }
    }

    private func loop() async throws {
        while !Task.isShuttingDownGracefully {
            await runOnce()
            do {
                try await cancelWhenGracefulShutdown { [interval] in try await Task.sleep(for: interval) }
            } catch {
                return  // cancelled: shutting down
            }
        }
    }

    func runOnce() async {
        do {
            let expired = try await ledger.expireJobs(now: now())
            for job in expired {
                logger.info(
                    "job expired before it could be sent",
                    metadata: ["job": "\(job.id)", "segment": "\(job.job.segmentID)"])
            }
            let pruned = try await ledger.prune(retentionDays: retentionDays, now: now())
            if pruned > 0 { logger.debug("pruned old ledger rows", metadata: ["rows": "\(pruned)"]) }
        } catch {
            logger.error("ledger maintenance failed", metadata: ["error": "\(error)"])
        }
    }
}
