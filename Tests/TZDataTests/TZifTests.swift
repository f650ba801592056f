import Foundation
import TZData
import Testing

/// Builds TZif bytes by hand, to test the parser on versions and shapes the host may not have.
struct TZifBuilder {
    var version: UInt8 = 0x32
    var transitions: [(Int64, UInt8)] = []
    var types: [(Int32, Bool, String)] = [(0, false, "UTC")]
    var footer = "UTC0"
    var leapSeconds: [(Int64, Int32)] = []
    /// A "slim" file leaves the version 1 block empty.
    var slim = false

    func bytes() -> [UInt8] {
        var chars: [UInt8] = []
        var designationIndex: [Int] = []
        for type in types {
            designationIndex.append(chars.count)
            chars += Array(type.2.utf8) + [0]
        }
        func block(timeSize: Int, empty: Bool) -> [UInt8] {
            let times = empty ? [] : transitions
            let leaps = empty ? [] : leapSeconds
            let typeList = empty ? [(Int32(0), false, "")] : types
            let charList: [UInt8] = empty ? [0] : chars
            var out: [UInt8] = Array("TZif".utf8) + [version] + Array(repeating: 0, count: 15)
            for count in [typeList.count, typeList.count, leaps.count, times.count, typeList.count, charList.count] {
                out += be(UInt64(count), 4)
            }
            for (time, _) in times { out += be(UInt64(bitPattern: time), timeSize) }
            for (_, index) in times { out.append(index) }
            for (i, type) in typeList.enumerated() {
                out +=
                    be(UInt64(UInt32(bitPattern: type.0)), 4) + [
                        type.1 ? 1 : 0, UInt8(empty ? 0 : designationIndex[i]),
                    ]
            }
            out += charList
            for (time, correction) in leaps {
                out += be(UInt64(bitPattern: time), timeSize) + be(UInt64(UInt32(bitPattern: correction)), 4)
            }
            out += Array(repeating: 0, count: typeList.count * 2)
            return out
        }
        if version == 0 { return block(timeSize: 4, empty: false) }
        return block(timeSize: 4, empty: slim) + block(timeSize: 8, empty: false) + Array("\n\(footer)\n".utf8)
    }

    private func be(_ value: UInt64, _ size: Int) -> [UInt8] {
        (0..<size).reversed().map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
    }
}

@Suite("TZif parsing")
struct TZifTests {
    /// A version 2 file: 64-bit transitions, types, designations and the footer are all read.
    @Test func readsVersion2() throws {
        var builder = TZifBuilder()
        builder.types = [(-28800, false, "PST"), (-25200, true, "PDT")]
        builder.transitions = [(1_710_064_800, 1), (1_730_624_400, 0)]
        builder.footer = "PST8PDT,M3.2.0,M11.1.0"
        let tzif = try TZif(bytes: builder.bytes())
        #expect(tzif.version == 2)
        #expect(tzif.transitionTimes == [1_710_064_800, 1_730_624_400])
        #expect(tzif.transitionTypes == [1, 0])
        #expect(tzif.types.map(\.abbreviation) == ["PST", "PDT"])
        #expect(tzif.types[1].isDST && tzif.types[1].utcOffset == -25200)
        #expect(tzif.footer?.standard.utcOffset == -28800)
        #expect(tzif.footer?.daylight?.utcOffset == -25200)
    }

    /// Versions 1, 3 and 4 are accepted; a version 1 file has no footer.
    @Test(arguments: [UInt8(0), 0x33, 0x34])
    func readsOtherVersions(_ version: UInt8) throws {
        var builder = TZifBuilder()
        builder.version = version
        builder.types = [(3600, false, "CET")]
        builder.footer = "CET-1"
        let tzif = try TZif(bytes: builder.bytes())
        #expect(tzif.version == (version == 0 ? 1 : Int(version - 0x30)))
        #expect(tzif.footer == (version == 0 ? nil : try POSIXTimeZone("CET-1")))
        #expect(ZoneRules(name: "X", tzif: tzif).utcOffset(at: 0) == 3600)
    }

    /// Leap second records (the right/ files) are skipped, not misread as data.
    @Test func skipsLeapSeconds() throws {
        var builder = TZifBuilder()
        builder.leapSeconds = [(78_796_800, 1), (94_694_401, 2)]
        builder.transitions = [(100, 0)]
        let tzif = try TZif(bytes: builder.bytes())
        #expect(tzif.transitionTimes == [100])
        #expect(tzif.footer == (try POSIXTimeZone("UTC0")))
    }

    /// A slim file's empty version 1 block does not matter: the footer decides current years.
    @Test func slimFileUsesFooter() throws {
        var builder = TZifBuilder()
        builder.slim = true
        builder.types = [(-18000, false, "EST"), (-14400, true, "EDT")]
        builder.transitions = [(1_173_596_400, 1)]  // 2007-03-11, then the footer rules
        builder.footer = "EST5EDT,M3.2.0,M11.1.0"
        let rules = ZoneRules(name: "Slim/NewYork", tzif: try TZif(bytes: builder.bytes()))
        #expect(rules.utcOffset(at: 1_730_613_599) == -14400)  // 2024-11-03 05:59:59Z, EDT
        #expect(rules.utcOffset(at: 1_730_613_600) == -18000)  // 06:00Z, EST
        #expect(rules.offsetChanges(in: 1_704_067_200...1_735_689_600).map(\.at) == [1_710_054_000, 1_730_613_600])
    }

    /// Where the footer disagrees with the last transition's type (older zic, slim
    /// America/Ojinaga), the footer governs after it, and that boundary is an offset change.
    @Test func footerInconsistentWithLastTransition() throws {
        var builder = TZifBuilder()
        builder.slim = true
        builder.types = [(-21600, true, "MDT"), (-21600, false, "CST")]
        builder.transitions = [(1_647_158_400, 0), (1_667_116_800, 1)]  // ..., 2022-10-30T08:00Z to CST
        builder.footer = "CST6CDT,M3.2.0,M11.1.0"  // says CDT (-5) until 2022-11-06
        let rules = ZoneRules(name: "Old/Ojinaga", tzif: try TZif(bytes: builder.bytes()))
        #expect(rules.utcOffset(at: 1_667_116_800) == -21600)
        #expect(rules.utcOffset(at: 1_667_116_801) == -18000)
        let changes = rules.offsetChanges(in: 1_667_000_000...1_667_800_000)
        #expect(
            changes == [
                ZoneRules.OffsetChange(at: 1_667_116_801, before: -21600, after: -18000),
                ZoneRules.OffsetChange(at: 1_667_718_000, before: -18000, after: -21600),
            ])
    }

    /// Damaged files are refused with a reason, never half-read.
    @Test(arguments: [
        ("empty", [UInt8](), "truncated"),
        ("bad magic", Array("TZxf".utf8) + Array(repeating: 0, count: 60), "magic"),
        ("bad version", Array("TZif9".utf8) + Array(repeating: 0, count: 60), "version"),
    ])
    func refusesDamage(_ name: String, _ bytes: [UInt8], _ reason: String) {
        #expect {
            try TZif(bytes: bytes)
        } throws: { ($0 as? TZifError)?.reason.contains(reason) == true }
    }

    /// Truncation anywhere is an error (every prefix of a valid file).
    @Test func refusesEveryPrefix() throws {
        var builder = TZifBuilder()
        builder.types = [(-28800, false, "PST"), (-25200, true, "PDT")]
        builder.transitions = [(1_710_064_800, 1), (1_730_624_400, 0)]
        builder.footer = "PST8PDT,M3.2.0,M11.1.0"
        let bytes = builder.bytes()
        for length in 0..<bytes.count {
            #expect(throws: TZifError.self) { try TZif(bytes: Array(bytes[0..<length])) }
        }
    }

    /// Transition times out of order or a type index out of range are refused.
    @Test func refusesInconsistentData() {
        var builder = TZifBuilder()
        builder.transitions = [(200, 0), (100, 0)]
        #expect(throws: TZifError.self) { try TZif(bytes: builder.bytes()) }
        builder.transitions = [(100, 5)]
        #expect(throws: TZifError.self) { try TZif(bytes: builder.bytes()) }
        builder.transitions = []
        builder.footer = "not a tz"
        #expect(throws: TZifError.self) { try TZif(bytes: builder.bytes()) }
    }

    /// Every file of the host database parses.
    @Test func parsesEveryHostZone() throws {
        let directory = try ZoneInfoDirectory(
            path: ZoneInfoDirectory.defaultPath(environment: ProcessInfo.processInfo.environment))
        for name in directory.zoneNames {
            _ = try directory.rules(for: name)
        }
        #expect(directory.zoneNames.count > 400)
    }
}
