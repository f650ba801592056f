/// What the plan (GET /v1/plan, a job's forecast) expects to become of a queued job: the `fate`
/// field's values, the one list the daemon writes, refreshctl reads and the document enumerates.
public enum PlanFate: String, Sendable, Codable, CaseIterable {
    /// It leads a send at `at`.
    case send
    /// It rides with another job's send (`leader`).
    case coalesce
    /// Its expires_at comes before any send the rules allow.
    case expire
    /// No send within the plan's horizon.
    case never
    /// Its account is paused (a 401/403, or an operator's hold on the account).
    case paused
    /// Its account is not configured.
    case unknownAccount = "unknown_account"
    /// Held: an operator's hold, or a zone the tz data cannot load (`reason` says which).
    case held

    /// Whether no send is expected for the job.
    public var isStuck: Bool {
        switch self {
        case .send, .coalesce: return false
        case .expire, .never, .paused, .unknownAccount, .held: return true
        }
    }
}
