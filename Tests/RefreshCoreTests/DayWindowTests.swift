import RefreshCore
import TZData
import Testing

/// Local day windows on DST edges and odd zones. Expected values come from Python's zoneinfo
/// (`Tests/tools/zoneinfo_days.py`) over tz data 2026f; past dates do not change between releases.
@Suite("Day windows")
struct DayWindowTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let zone: String
        let date: String
        let start: Int64
        let end: Int64
        let status: DayWindow.Status

        init(_ zone: String, _ date: String, start: Int64, end: Int64, _ status: DayWindow.Status) {
            self.zone = zone
            self.date = date
            self.start = start
            self.end = end
            self.status = status
        }

        var testDescription: String { "\(zone) \(date)" }
    }

    static let cases: [Case] = [
        // 00:00 does not exist (clocks go 24:00 -> 01:00): the day starts at 01:00, 23 h long.
        Case("America/Santiago", "2024-09-07", start: 1725681600, end: 1725768000, .ok),  // 86400 s
        Case("America/Santiago", "2024-09-08", start: 1725768000, end: 1725850800, .lateStart),  // 82800 s
        // Clocks go 24:00 -> 23:00: the day before is 25 h.
        Case("America/Santiago", "2024-04-06", start: 1712372400, end: 1712462400, .ok),  // 90000 s
        Case("America/Santiago", "2024-04-07", start: 1712462400, end: 1712548800, .ok),  // 86400 s
        Case("America/Havana", "2024-03-10", start: 1710046800, end: 1710129600, .lateStart),  // 82800 s
        Case("America/Havana", "2024-11-03", start: 1730606400, end: 1730696400, .ok),  // 90000 s
        Case("Atlantic/Azores", "2024-03-31", start: 1711846800, end: 1711929600, .lateStart),  // 82800 s
        // Midnight happens twice (01:00 -> 00:00): the day starts at the first, 25 h long.
        Case("Atlantic/Azores", "2024-10-27", start: 1729987200, end: 1730077200, .ok),  // 90000 s
        Case("Asia/Beirut", "2024-03-31", start: 1711836000, end: 1711918800, .lateStart),  // 82800 s
        Case("Asia/Beirut", "2024-10-27", start: 1729980000, end: 1730066400, .ok),  // 86400 s
        Case("Africa/Cairo", "2024-04-26", start: 1714082400, end: 1714165200, .lateStart),  // 82800 s
        Case("Africa/Cairo", "2024-10-31", start: 1730322000, end: 1730412000, .ok),  // 90000 s
        Case("Africa/Cairo", "2024-11-01", start: 1730412000, end: 1730498400, .ok),  // 86400 s
        // Samoa skipped 2011-12-30 entirely: an empty window at the next date's start.
        Case("Pacific/Apia", "2011-12-29", start: 1325152800, end: 1325239200, .ok),  // 86400 s
        Case("Pacific/Apia", "2011-12-30", start: 1325239200, end: 1325239200, .skipped),  // 0 s
        Case("Pacific/Apia", "2011-12-31", start: 1325239200, end: 1325325600, .ok),  // 86400 s
        // 30-minute DST: 24.5 h and 23.5 h days.
        Case("Australia/Lord_Howe", "2024-04-07", start: 1712408400, end: 1712496600, .ok),  // 88200 s
        Case("Australia/Lord_Howe", "2024-10-06", start: 1728135000, end: 1728219600, .ok),  // 84600 s
        Case("Asia/Kathmandu", "2024-06-01", start: 1717179300, end: 1717265700, .ok),  // +05:45
        Case("Pacific/Kiritimati", "2024-06-01", start: 1717149600, end: 1717236000, .ok),  // +14
        Case("Pacific/Kiritimati", "1994-12-31", start: 788868000, end: 788868000, .skipped),  // -10 -> +14
        Case("Pacific/Pago_Pago", "2024-06-01", start: 1717239600, end: 1717326000, .ok),  // -11
        Case("America/St_Johns", "2024-03-10", start: 1710041400, end: 1710124200, .ok),  // -03:30, 23 h
        Case("America/St_Johns", "2024-11-03", start: 1730601000, end: 1730691000, .ok),  // 25 h
        // Morocco leaves +01 for +00 during Ramadan.
        Case("Africa/Casablanca", "2024-03-10", start: 1710025200, end: 1710115200, .ok),  // 90000 s
        Case("Africa/Casablanca", "2024-04-14", start: 1713052800, end: 1713135600, .ok),  // 82800 s
        Case("Africa/Casablanca", "2026-02-15", start: 1771110000, end: 1771200000, .ok),  // 90000 s
        Case("Africa/Casablanca", "2026-03-22", start: 1774137600, end: 1774220400, .ok),  // 82800 s
        Case("UTC", "2024-02-29", start: 1709164800, end: 1709251200, .ok),
        // Permanent -07 from 2026-11 in tz 2026f; Foundation's frozen 2025b says 1795334400.
        Case("America/Vancouver", "2026-11-23", start: 1795417200, end: 1795503600, .ok),
        Case("Europe/London", "2024-03-31", start: 1711843200, end: 1711926000, .ok),  // 82800 s
        Case("America/New_York", "2024-11-03", start: 1730606400, end: 1730696400, .ok),  // 90000 s
    ]

    /// Each date's window and status match the definition (first instant at or after 00:00).
    @Test(arguments: cases)
    func window(_ c: Case) {
        let window = rules(c.zone).dayWindow(for: date(c.date))
        #expect(window.start == c.start)
        #expect(window.end == c.end)
        #expect(window.status == c.status)
    }

    /// Every instant of a non-empty window maps back to that window: first, last and middle second.
    @Test(arguments: cases.filter { $0.status != .skipped })
    func containing(_ c: Case) {
        let zone = rules(c.zone)
        for t in [c.start, c.end - 1, (c.start + c.end) / 2] {
            #expect(zone.dayWindow(containing: t).date == date(c.date))
        }
        #expect(zone.dayWindow(containing: c.end).date > date(c.date))
        #expect(zone.dayWindow(containing: c.start - 1).date < date(c.date))
    }

    /// Consecutive windows tile time: each ends where the next starts, over years of every odd zone.
    @Test(arguments: ["America/Santiago", "Pacific/Apia", "Australia/Lord_Howe", "Africa/Casablanca", "America/Havana"])
    func windowsTile(_ zone: String) {
        let rules = rules(zone)
        var day = date("2008-01-01")
        var previous = rules.dayWindow(for: day)
        for _ in 0..<(365 * 20) {
            day = day.next
            let window = rules.dayWindow(for: day)
            #expect(window.start == previous.end)
            #expect(window.seconds >= 0 && window.seconds <= 26 * 3600)
            previous = window
        }
    }

    /// The UTC day for the account rule is midnight to midnight.
    @Test func utcDay() {
        let day = ZoneRules.utcDay(containing: 1_764_115_199)
        #expect(day.start == 1_764_028_800 && day.end == 1_764_115_200)
        #expect(ZoneRules.utcDay(containing: -1).start == -86400)
    }
}
