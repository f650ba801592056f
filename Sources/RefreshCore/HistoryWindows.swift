import Foundation

/// How far back the rules look (I1-I5 in `RuleEngine`'s design notes): the history a decision
/// needs is every stored attempt and block inside these windows, and nothing outside them changes
/// a decision. Defined once; the ledger's history query, the control API's account snapshots and
/// the lanes read with them.
///
/// The windows only shrink as time passes (each start moves forward with `now`), so a read made at
/// `t0` holds everything a decision at any `t >= t0` needs, as long as nothing was written since.
public enum HistoryWindows {
    /// A segment's attempts that started within four days before now matter to I1/I2: a refresh
    /// counts at most about 26 h past its finish, and requests up to 48 h around it name the zones
    /// its count may follow.
    public static let segmentLookback: TimeInterval = 4 * 86400

    /// The first start instant of a segment's attempts that matter (I1, I2).
    public static func segmentSince(_ now: Date) -> TimeInterval {
        now.timeIntervalSince1970 - segmentLookback
    }

    /// The first start instant of an account's attempts that matter (I3): the start of the
    /// previous UTC day, since a request counts until the end of the UTC day of its finish and a
    /// finish can trail its start by a request timeout.
    public static func accountSince(_ now: Date) -> TimeInterval {
        (now.timeIntervalSince1970 / 86400).rounded(.down) * 86400 - 86400
    }

    /// Blocks whose end is later than this still matter (I5, with the margin after it).
    public static func blocksSince(_ now: Date) -> TimeInterval {
        now.timeIntervalSince1970 - 86400
    }
}
