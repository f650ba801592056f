/// A POSIX TZ string, as found in a TZif footer (RFC 8536 section 3.3, with the version 3
/// extensions: hours of a rule time may range over -167...167).
///
/// Offsets are stored as seconds east of UTC, the opposite sign of the string's.
public struct POSIXTimeZone: Sendable, Equatable {
    /// Standard time's designation and offset (seconds east of UTC).
    public let standard: Designated
    /// Daylight time and the rules that start and end it, if the zone observes it.
    public let daylight: Daylight?

    /// A designation with its offset.
    public struct Designated: Sendable, Equatable {
        public let abbreviation: String
        public let utcOffset: Int32
    }

    /// Daylight time: its designation and offset, and the rules that start and end it.
    public struct Daylight: Sendable, Equatable {
        public let abbreviation: String
        public let utcOffset: Int32
        /// When daylight time starts, in local standard time.
        public let start: Rule
        /// When daylight time ends, in local daylight time.
        public let end: Rule
    }

    /// A day of the year and a local time of that day.
    public struct Rule: Sendable, Equatable {
        /// How the day is named.
        public enum Day: Sendable, Equatable {
            /// `Jn`: day n (1...365) not counting February 29.
            case julianNoLeap(Int)
            /// `n`: day n (0...365) counting February 29.
            case zeroBased(Int)
            /// `Mm.w.d`: weekday d (0 = Sunday) of week w (1...5, 5 = last) of month m.
            case monthWeekDay(month: Int, week: Int, weekday: Int)
        }

        public let day: Day
        /// Seconds after local midnight of that day (may be negative or exceed a day).
        public let time: Int32
    }

    /// Parses a POSIX TZ string such as `CET-1CEST,M3.5.0,M10.5.0/3`.
    public init(_ string: String) throws(TZifError) {
        var parser = Parser(Array(string.utf8))
        let stdName = try parser.designation()
        let stdOffset = -(try parser.offset(maxHours: 24))
        standard = Designated(abbreviation: stdName, utcOffset: stdOffset)
        if parser.atEnd {
            daylight = nil
            return
        }
        let dstName = try parser.designation()
        var dstOffset = stdOffset + 3600
        if let next = parser.peek, next != UInt8(ascii: ",") {
            dstOffset = -(try parser.offset(maxHours: 24))
        }
        let start: Rule
        let end: Rule
        if parser.atEnd {
            // No rule given: POSIX leaves it to the implementation; glibc and tzcode use US rules.
            start = Rule(day: .monthWeekDay(month: 3, week: 2, weekday: 0), time: 7200)
            end = Rule(day: .monthWeekDay(month: 11, week: 1, weekday: 0), time: 7200)
        } else {
            try parser.expect(",")
            start = try parser.rule()
            try parser.expect(",")
            end = try parser.rule()
        }
        guard parser.atEnd else { throw TZifError("unexpected text after the rules") }
        daylight = Daylight(abbreviation: dstName, utcOffset: dstOffset, start: start, end: end)
    }

    /// A change of offset computed from the rules.
    public struct Transition: Sendable, Equatable {
        /// The instant, Unix seconds.
        public let at: Int64
        /// The offset in effect from that instant on.
        public let utcOffset: Int32
        public let isDST: Bool
    }

    /// The two transitions of a year (by UTC year of the rule dates), in ascending order; empty
    /// when the zone has no daylight time.
    public func transitions(inYear year: Int) -> [Transition] {
        guard let daylight else { return [] }
        let startLocal = Int64(daylight.start.dayNumber(inYear: year)) * 86400 + Int64(daylight.start.time)
        let endLocal = Int64(daylight.end.dayNumber(inYear: year)) * 86400 + Int64(daylight.end.time)
        let start = Transition(at: startLocal - Int64(standard.utcOffset), utcOffset: daylight.utcOffset, isDST: true)
        let end = Transition(at: endLocal - Int64(daylight.utcOffset), utcOffset: standard.utcOffset, isDST: false)
        return start.at <= end.at ? [start, end] : [end, start]
    }

    /// The offset (seconds east of UTC) and daylight flag in effect at an instant.
    public func offset(at instant: Int64) -> (utcOffset: Int32, isDST: Bool) {
        guard daylight != nil else { return (standard.utcOffset, false) }
        let year = CivilDate(dayNumber: floorDiv(instant, 86400)).year
        // The latest rule transition at or before the instant decides; look one year back so an
        // instant early in January sees the previous year's last transition.
        var latest: Transition?
        for y in (year - 1)...(year + 1) {
            for transition in transitions(inYear: y) where transition.at <= instant {
                if latest == nil || transition.at >= latest!.at { latest = transition }
            }
        }
        if let latest { return (latest.utcOffset, latest.isDST) }
        // Unreachable in practice: the previous year always has a transition at or before.
        return (standard.utcOffset, false)
    }
}

extension POSIXTimeZone.Rule {
    /// The day number (days since 1970-01-01) of the rule's date in a year.
    func dayNumber(inYear year: Int) -> Int64 {
        let jan1 = CivilDate(year: year, month: 1, day: 1).dayNumber
        switch day {
        case .julianNoLeap(let n):
            let leapShift = CivilDate.isLeapYear(year) && n >= 60 ? 1 : 0
            return jan1 + Int64(n - 1 + leapShift)
        case .zeroBased(let n):
            return jan1 + Int64(n)
        case .monthWeekDay(let month, let week, let weekday):
            let first = CivilDate(year: year, month: month, day: 1)
            let firstWeekday = first.weekday
            var dayOfMonth = 1 + (weekday - firstWeekday + 7) % 7 + 7 * (week - 1)
            let length = CivilDate.daysInMonth(year: year, month: month)
            while dayOfMonth > length { dayOfMonth -= 7 }
            return first.dayNumber + Int64(dayOfMonth - 1)
        }
    }
}

private struct Parser {
    let bytes: [UInt8]
    var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { index == bytes.count }
    var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

    mutating func expect(_ character: Character) throws(TZifError) {
        guard let peek, peek == character.asciiValue! else { throw TZifError("expected \"\(character)\"") }
        index += 1
    }

    mutating func designation() throws(TZifError) -> String {
        let begin = index
        if peek == UInt8(ascii: "<") {
            index += 1
            let inner = index
            while let c = peek, c != UInt8(ascii: ">") {
                guard isAlpha(c) || isDigit(c) || c == UInt8(ascii: "+") || c == UInt8(ascii: "-") else {
                    throw TZifError("invalid character in a quoted designation")
                }
                index += 1
            }
            guard peek == UInt8(ascii: ">") else { throw TZifError("unterminated quoted designation") }
            let name = String(decoding: bytes[inner..<index], as: UTF8.self)
            index += 1
            guard name.utf8.count >= 3 else { throw TZifError("a designation has fewer than 3 characters") }
            return name
        }
        while let c = peek, isAlpha(c) { index += 1 }
        guard index - begin >= 3 else { throw TZifError("a designation has fewer than 3 characters") }
        return String(decoding: bytes[begin..<index], as: UTF8.self)
    }

    /// `[+-]hh[:mm[:ss]]` in seconds, with the sign as written.
    mutating func offset(maxHours: Int) throws(TZifError) -> Int32 {
        var sign: Int32 = 1
        if peek == UInt8(ascii: "+") {
            index += 1
        } else if peek == UInt8(ascii: "-") {
            sign = -1
            index += 1
        }
        let hours = try number(maxDigits: 3)
        guard hours <= maxHours else { throw TZifError("an hour value exceeds \(maxHours)") }
        var seconds = hours * 3600
        if peek == UInt8(ascii: ":") {
            index += 1
            let minutes = try number(maxDigits: 2)
            guard minutes < 60 else { throw TZifError("a minute value exceeds 59") }
            seconds += minutes * 60
            if peek == UInt8(ascii: ":") {
                index += 1
                let secs = try number(maxDigits: 2)
                guard secs < 60 else { throw TZifError("a second value exceeds 59") }
                seconds += secs
            }
        }
        return sign * Int32(seconds)
    }

    mutating func rule() throws(TZifError) -> POSIXTimeZone.Rule {
        let day: POSIXTimeZone.Rule.Day
        if peek == UInt8(ascii: "J") {
            index += 1
            let n = try number(maxDigits: 3)
            guard (1...365).contains(n) else { throw TZifError("a Jn day is outside 1...365") }
            day = .julianNoLeap(n)
        } else if peek == UInt8(ascii: "M") {
            index += 1
            let month = try number(maxDigits: 2)
            try expect(".")
            let week = try number(maxDigits: 1)
            try expect(".")
            let weekday = try number(maxDigits: 1)
            guard (1...12).contains(month), (1...5).contains(week), (0...6).contains(weekday) else {
                throw TZifError("an Mm.w.d rule is out of range")
            }
            day = .monthWeekDay(month: month, week: week, weekday: weekday)
        } else {
            let n = try number(maxDigits: 3)
            guard (0...365).contains(n) else { throw TZifError("a day number is outside 0...365") }
            day = .zeroBased(n)
        }
        var time: Int32 = 7200
        if peek == UInt8(ascii: "/") {
            index += 1
            time = try offset(maxHours: 167)
        }
        return POSIXTimeZone.Rule(day: day, time: time)
    }

    mutating func number(maxDigits: Int) throws(TZifError) -> Int {
        var value = 0
        var digits = 0
        while let c = peek, isDigit(c) {
            guard digits < maxDigits else { throw TZifError("a number has too many digits") }
            value = value * 10 + Int(c - UInt8(ascii: "0"))
            digits += 1
            index += 1
        }
        guard digits > 0 else { throw TZifError("expected a number") }
        return value
    }

    private func isAlpha(_ c: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(c) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(c)
    }

    private func isDigit(_ c: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) }
}
