import TZData

/// A local calendar day of one zone as a half-open interval of instants, `[start, end)`.
///
/// Definition (the one SendGrid's "reset at midnight in the user's time zone" needs): the start
/// of local date D is the first instant whose local wall time is at or after D 00:00; the end is
/// the start of D + 1. So a day whose midnight falls in a DST gap starts when the gap ends
/// (`lateStart`), a repeated midnight starts the day at its first occurrence, and a date the zone
/// skipped entirely (Pacific/Apia 2011-12-30) is empty (`skipped`). Never `start + 86400`.
public struct DayWindow: Sendable, Equatable, CustomStringConvertible {
    /// The local date.
    public let date: CivilDate
    /// First instant of the day, Unix seconds.
    public let start: Int64
    /// First instant of the next day, Unix seconds.
    public let end: Int64
    /// How the day starts.
    public let status: Status

    /// How a day starts.
    public enum Status: String, Sendable, Equatable {
        /// At local 00:00.
        case ok
        /// 00:00 did not exist (a gap); the day starts when the gap ends.
        case lateStart = "late_start"
        /// The whole date was skipped; the window is empty.
        case skipped
    }

    /// Length in seconds (0 for a skipped date, 23 or 25 hours around many DST changes).
    public var seconds: Int64 { end - start }

    /// Whether an instant lies inside the window.
    public func contains(_ t: Int64) -> Bool { start <= t && t < end }

    public var description: String { "\(date) [\(start), \(end)) \(status.rawValue)" }
}

extension ZoneRules {
    /// Largest magnitude of any UT offset the search allows for (real ones stay within 26 h).
    private static let searchSlack: Int64 = 30 * 3600

    /// The first instant whose local wall time is at or after `date` 00:00.
    public func dayStart(_ date: CivilDate) -> Int64 {
        let midnight = date.dayNumber * 86400  // local wall seconds of date 00:00
        let low = midnight - Self.searchSlack
        let high = midnight + Self.searchSlack
        // Periods of constant offset in [low, high]; in each, wall time t + offset rises with t,
        // so the first instant reaching `midnight` is max(periodStart, midnight - offset). The
        // first period (in time order) where that instant falls inside the period wins.
        var periodStart = low
        var offset = Int64(utcOffset(at: low))
        for change in offsetChanges(in: (low + 1)...high) {
            let candidate = max(periodStart, midnight - offset)
            if candidate < change.at { return candidate }
            periodStart = change.at
            offset = Int64(change.after)
        }
        return max(periodStart, midnight - offset)
    }

    /// The window of a local date.
    public func dayWindow(for date: CivilDate) -> DayWindow {
        let start = dayStart(date)
        let end = dayStart(date.next)
        let status: DayWindow.Status
        if end <= start {
            status = .skipped
        } else if start + Int64(utcOffset(at: start)) == date.dayNumber * 86400 {
            status = .ok
        } else {
            status = .lateStart
        }
        // A skipped date is reported as the empty window at the next date's start.
        return DayWindow(date: date, start: min(start, end), end: end, status: status)
    }

    /// The window of the local day that contains an instant (never a skipped one).
    public func dayWindow(containing t: Int64) -> DayWindow {
        let wallDay = floorDiv(t + Int64(utcOffset(at: t)), 86400)
        var date = CivilDate(dayNumber: wallDay)
        // Wall time can run backwards across midnight, so the wall date is only a first guess.
        while dayStart(date) > t { date = CivilDate(dayNumber: date.dayNumber - 1) }
        while dayStart(date.next) <= t { date = date.next }
        return dayWindow(for: date)
    }

    /// The UTC day containing an instant (SendGrid's account-wide reset).
    public static func utcDay(containing t: Int64) -> DayWindow {
        let day = floorDiv(t, 86400)
        return DayWindow(date: CivilDate(dayNumber: day), start: day * 86400, end: (day + 1) * 86400, status: .ok)
    }
}

@inlinable
func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
    let q = a / b
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
}
