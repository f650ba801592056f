import Foundation

/// The states a job moves through.
///
/// queued -> sending -> sent | coalesced | failed | queued (requeued)
/// queued -> cancelled | expired
public enum JobState: String, Sendable, Codable, CaseIterable {
    case queued, sending, sent, coalesced, failed, cancelled, expired

    /// One line for help texts and documents.
    public var meaning: String {
        switch self {
        case .queued: return "waiting for its send"
        case .sending: return "its refresh is in flight"
        case .sent: return "its own refresh was accepted"
        case .coalesced: return "served by another job's refresh of the same segment"
        case .failed: return "refused by SendGrid, or given up"
        case .cancelled: return "cancelled by an operator"
        case .expired: return "its expires_at passed before the rules allowed a refresh"
        }
    }

    /// Whether the job is finished (eligible for retention once old).
    public var isFinished: Bool {
        switch self {
        case .queued, .sending: return false
        case .sent, .coalesced, .failed, .cancelled, .expired: return true
        }
    }
}
