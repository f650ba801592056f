import Foundation
import RefreshCore
import TZData
import Testing

/// The day calendar against an independent implementation: Python's zoneinfo reading the same files.
@Suite("Cross-check against Python zoneinfo")
struct ZoneinfoCrossCheckTests {
    /// Every zone and link name of the host database, every local date 2000-2040: 0 mismatches.
    @Test func everyHostZoneMatchesPython() throws {
        let script = repositoryRoot + "/Tests/tools/zoneinfo_days.py"
        let output = try runProgram(
            "python3", [script, "--tzdir", hostZones.path, "--from-year", "2000", "--to-year", "2040"],
            input: hostZones.zoneNames.joined(separator: "\n"))
        let lines = output.split(separator: "\n").map(String.init)
        #expect(lines.count == hostZones.zoneNames.count)
        var mismatches: [String] = []
        for line in lines {
            let name = String(line.prefix { $0 != "\t" })
            let ours = dayStartEncoding(rules(name), from: date("2000-01-01"), through: date("2040-12-31"))
            if ours != line { mismatches.append("python: \(line.prefix(400))\nswift:  \(ours.prefix(400))") }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) zones differ:\n\(mismatches.prefix(5).joined(separator: "\n"))")
    }
}
