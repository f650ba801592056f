import Foundation
import Logging
import RefreshPostgres
import RefreshStore
import ServiceLifecycle

/// Keeps this host's lease in a shared ledger and recovers what silent hosts left reserved
/// (`PostgresLedger.heartbeat`, R2), every `interval`; says once when the database goes away and
/// once when it is back.
struct LedgerHeartbeatService: Service {
    let ledger: PostgresLedger
    let interval: Duration
    let now: @Sendable () -> Date
    let logger: Logger

    func run() async throws {
        var unreachable: String?
        while !Task.isShuttingDownGracefully {
            do {
                let recovered = try await ledger.heartbeat(now: now())
                if recovered > 0 {
                    logger.warning(
                        "a host of the shared ledger went silent with requests in flight; they count as uncertain",
                        metadata: ["attempts": "\(recovered)"])
                }
                if let was = unreachable {
                    logger.notice("the ledger database answers again", metadata: ["was": "\(was)"])
                    unreachable = nil
                }
            } catch {
                let reason = "\(error)"
                if unreachable == nil {
                    logger.error(
                        "LEDGER UNREACHABLE: nothing is sent until the database answers again",
                        metadata: ["reason": "\(reason)"])
                }
                unreachable = reason
            }
            do {
                try await cancelWhenGracefulShutdown { [interval] in try await Task.sleep(for: interval) }
            } catch {
                break
            }
        }
        await ledger.shutdown()
    }
}
