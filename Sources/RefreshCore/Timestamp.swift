import TZData

/// RFC 3339 text for instants, without Foundation's formatters (which read their own tz copy).
public enum Timestamp {
    /// `2026-11-25T07:00:00Z` for a Unix time in seconds.
    public static func rfc3339(_ seconds: Int64) -> String {
        let day = floorDiv(seconds, 86400)
        let secondOfDay = seconds - day * 86400
        let h = secondOfDay / 3600
        let m = secondOfDay % 3600 / 60
        let s = secondOfDay % 60
        return "\(CivilDate(dayNumber: day))T\(pad(h)):\(pad(m)):\(pad(s))Z"
    }

    /// Local wall-clock text with its offset, such as `2026-11-25T00:00:00-07:00`.
    public static func rfc3339(_ seconds: Int64, offset: Int32) -> String {
        let local = seconds + Int64(offset)
        let utc = rfc3339(local)
        let sign = offset < 0 ? "-" : "+"
        let magnitude = Int64(abs(Int(offset)))
        var suffix = "\(sign)\(pad(magnitude / 3600)):\(pad(magnitude % 3600 / 60))"
        if magnitude % 60 != 0 { suffix += ":\(pad(magnitude % 60))" }
        return String(utc.dropLast()) + suffix
    }

    private static func pad(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }
}
