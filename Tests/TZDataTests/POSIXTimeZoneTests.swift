import TZData
import Testing

@Suite("POSIX TZ footer")
struct POSIXTimeZoneTests {
    /// Footers of real zones parse to the right offsets (seconds east of UTC, sign flipped).
    @Test(arguments: [
        ("UTC0", 0, nil as Int32?),
        ("CET-1CEST,M3.5.0,M10.5.0/3", 3600, 7200 as Int32?),
        ("<+0545>-5:45", 20700, nil),
        ("<-03>3<-02>,M3.5.0/-2,M10.5.0/-1", -10800, -7200),  // America/Nuuk: negative rule times
        ("EST5EDT,0/0,J365/25", -18000, -14400),  // all-year DST (version 3 hours beyond 24)
        ("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37800, 39600),  // Lord Howe: 30-minute DST
        ("IST-2IDT,M3.4.4/26,M10.5.0", 7200, 10800),  // Jerusalem: hour 26
        ("NZST-12NZDT,M9.5.0,M4.1.0/3", 43200, 46800),
        ("AAA3BBB", -10800, -7200),  // DST with default offset and US rules
    ])
    func parses(_ text: String, _ standard: Int32, _ daylight: Int32?) throws {
        let zone = try POSIXTimeZone(text)
        #expect(zone.standard.utcOffset == standard)
        #expect(zone.daylight?.utcOffset == daylight)
    }

    /// Malformed strings are refused with a reason.
    @Test(arguments: [
        "", "U", "UTC", "<+05", "CET-1CEST,M13.1.0,M10.5.0", "CET-1CEST,M3.5.7,M10.5.0", "CET-1CEST,J0,J365", "X-25",
        "CET-1CEST,M3.5.0", "CET-1 junk",
    ])
    func refuses(_ text: String) {
        #expect(throws: TZifError.self) { try POSIXTimeZone(text) }
    }

    /// Rule dates: last Sunday, Jn skipping Feb 29, zero-based n counting it.
    @Test func transitionsOfAYear() throws {
        let paris = try POSIXTimeZone("CET-1CEST,M3.5.0,M10.5.0/3")
        // 2024-03-31 01:00Z and 2024-10-27 01:00Z.
        #expect(paris.transitions(inYear: 2024).map(\.at) == [1_711_846_800, 1_729_990_800])
        let julian = try POSIXTimeZone("AAA0BBB,J60/0,J61/0")  // March 1 in every year
        #expect(julian.transitions(inYear: 2024).first?.at == 1_709_251_200)  // 2024-03-01
        let zeroBased = try POSIXTimeZone("AAA0BBB,59/0,60/0")  // Feb 29 in leap years
        #expect(zeroBased.transitions(inYear: 2024).first?.at == 1_709_164_800)  // 2024-02-29
        // Southern hemisphere: DST spans the new year.
        let auckland = try POSIXTimeZone("NZST-12NZDT,M9.5.0,M4.1.0/3")
        #expect(auckland.offset(at: 1_704_067_200).utcOffset == 46800)  // January: NZDT
        #expect(auckland.offset(at: 1_719_792_000).utcOffset == 43200)  // July: NZST
    }

    /// All-year DST stays DST through the year boundary.
    @Test func allYearDaylight() throws {
        let zone = try POSIXTimeZone("EST5EDT,0/0,J365/25")
        for t: Int64 in [1_704_067_200, 1_719_792_000, 1_735_689_599, 1_735_689_600] {
            #expect(zone.offset(at: t).utcOffset == -14400)
        }
    }
}
