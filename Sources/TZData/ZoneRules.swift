/// The UT offsets of one named zone over all time: the TZif transitions, then the POSIX footer.
///
/// A value type, pure: it answers "what offset is in effect at instant t" and "where does the
/// offset change between a and b" from parsed data, never from Foundation's own tz copy.
public struct ZoneRules: Sendable, Equatable {
    /// The zone or link name it was loaded under, such as "America/Chicago".
    public let name: String
    private let times: [Int64]
    private let offsets: [Int32]
    private let initialOffset: Int32
    private let footer: POSIXTimeZone?

    /// A change of offset at an instant.
    public struct OffsetChange: Sendable, Equatable {
        /// The instant of the change, Unix seconds.
        public let at: Int64
        /// The offset in effect just before, seconds east of UTC.
        public let before: Int32
        /// The offset in effect from `at` on.
        public let after: Int32

        public init(at: Int64, before: Int32, after: Int32) {
            self.at = at
            self.before = before
            self.after = after
        }
    }

    /// Builds rules from a parsed TZif file.
    public init(name: String, tzif: TZif) {
        self.name = name
        self.times = tzif.transitionTimes
        self.offsets = tzif.transitionTypes.map { tzif.types[$0].utcOffset }
        self.initialOffset = tzif.types[0].utcOffset
        self.footer = tzif.footer
    }

    /// Rules with one fixed offset (UTC is `fixed(name: "UTC", offset: 0)`).
    public static func fixed(name: String, offset: Int32) -> ZoneRules {
        ZoneRules(name: name, times: [], offsets: [], initialOffset: offset, footer: nil)
    }

    private init(name: String, times: [Int64], offsets: [Int32], initialOffset: Int32, footer: POSIXTimeZone?) {
        self.name = name
        self.times = times
        self.offsets = offsets
        self.initialOffset = initialOffset
        self.footer = footer
    }

    /// Whether the footer governs instants after `times.last` (or all instants when there are no
    /// transitions).
    private func footerGoverns(_ t: Int64) -> Bool {
        guard footer != nil else { return false }
        guard let last = times.last else { return true }
        return t > last
    }

    /// The offset in effect at an instant, seconds east of UTC.
    public func utcOffset(at t: Int64) -> Int32 {
        if let footer, footerGoverns(t) { return footer.offset(at: t).utcOffset }
        guard let first = times.first, t >= first else { return initialOffset }
        // Last index with times[i] <= t.
        var low = 0
        var high = times.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if times[mid] <= t { low = mid } else { high = mid - 1 }
        }
        return offsets[low]
    }

    /// Every change of offset with `range.lowerBound <= at <= range.upperBound`, ascending.
    /// Transitions that change only the abbreviation or the DST flag are left out.
    public func offsetChanges(in range: ClosedRange<Int64>) -> [OffsetChange] {
        var changes: [OffsetChange] = []
        if !times.isEmpty, range.lowerBound <= times[times.count - 1] {
            var i = firstIndex(atOrAfter: range.lowerBound)
            while i < times.count, times[i] <= range.upperBound {
                let before = i == 0 ? initialOffset : offsets[i - 1]
                if before != offsets[i] {
                    changes.append(OffsetChange(at: times[i], before: before, after: offsets[i]))
                }
                i += 1
            }
        }
        // Where the footer takes over from the last transition its offset may differ from that
        // transition's type (RFC 8536 asks for consistency, but files from older zic versions,
        // e.g. America/Ojinaga built slim by glibc 2.36's zic, break it): that is a change too.
        if let footer, let last = times.last, range.contains(last + 1) {
            let after = footer.offset(at: last + 1).utcOffset
            if after != offsets[offsets.count - 1] {
                changes.append(OffsetChange(at: last + 1, before: offsets[offsets.count - 1], after: after))
            }
        }
        if let footer, footer.daylight != nil {
            let footerStart = times.last ?? Int64.min
            if range.upperBound > footerStart {
                let from = max(range.lowerBound, footerStart == Int64.min ? range.lowerBound : footerStart + 1)
                let firstYear = CivilDate(dayNumber: floorDiv(from, 86400)).year - 1
                let lastYear = CivilDate(dayNumber: floorDiv(range.upperBound, 86400)).year + 1
                for year in firstYear...lastYear {
                    for transition in footer.transitions(inYear: year)
                    where transition.at >= from && transition.at <= range.upperBound {
                        let before = utcOffset(at: transition.at - 1)
                        if before != transition.utcOffset {
                            changes.append(OffsetChange(at: transition.at, before: before, after: transition.utcOffset))
                        }
                    }
                }
            }
        }
        return changes
    }

    private func firstIndex(atOrAfter t: Int64) -> Int {
        var low = 0
        var high = times.count
        while low < high {
            let mid = (low + high) / 2
            if times[mid] < t { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
