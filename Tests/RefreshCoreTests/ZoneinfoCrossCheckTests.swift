import Foundation
import Glibc
import RefreshCore
import TZData
import TestSupport
import Testing

/// The day calendar against an independent implementation: Python's zoneinfo reading the same files.
@Suite("Cross-check against Python zoneinfo")
struct ZoneinfoCrossCheckTests {
    /// Every zone and link name of the host database, every local date 2000-2040: 0 mismatches.
    @Test func everyHostZoneMatchesPython() async throws {
        try await offPool { try Self.check() }
    }

    static func check() throws {
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
        #expect(
            mismatches.isEmpty, "\(mismatches.count) zones differ:\n\(mismatches.prefix(5).joined(separator: "\n"))")
    }
}

/// "Slim" TZif files (an empty version 1 block, transitions only until the rules settle) are
/// compiled here from the host's own `tzdata.zi` with `zic -b slim`: there the POSIX footer
/// decides every current year.
@Suite("Slim tz files")
struct SlimZoneFileTests {
    static let slim: ZoneInfoDirectory = {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("refreshd-slim-\(getpid())").path
        do {
            try? FileManager.default.removeItem(atPath: directory)
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let zic = FileManager.default.isExecutableFile(atPath: "/usr/sbin/zic") ? "/usr/sbin/zic" : "zic"
            _ = try runProgram(zic, ["-b", "slim", "-d", directory, hostZones.path + "/tzdata.zi"])
            try FileManager.default.copyItem(atPath: hostZones.path + "/tzdata.zi", toPath: directory + "/tzdata.zi")
            return try ZoneInfoDirectory(path: directory)
        } catch {
            fatalError("cannot build slim tz files with zic (libc-bin): \(error)")
        }
    }()

    /// The slim files really are slim: fewer transitions, same names, same version.
    @Test func filesAreSlim() throws {
        #expect(SlimZoneFileTests.slim.zoneNames == hostZones.zoneNames)
        #expect(SlimZoneFileTests.slim.version == hostZones.version)
        let fat = try Data(contentsOf: URL(fileURLWithPath: hostZones.path + "/Europe/Paris"))
        let slim = try Data(contentsOf: URL(fileURLWithPath: SlimZoneFileTests.slim.path + "/Europe/Paris"))
        #expect(slim.count < fat.count)
    }

    /// Python's zoneinfo on the slim files agrees for every zone, 2000-2040. (Slim and fat files
    /// need not agree with each other: the host's zic may be older than the one that built the
    /// packaged files; America/Ojinaga's 2022 change is compiled differently by glibc 2.36's zic,
    /// and Python sees the same difference.)
    @Test func slimMatchesPython() async throws {
        try await offPool { try Self.check() }
    }

    static func check() throws {
        let names = SlimZoneFileTests.slim.zoneNames
        let script = repositoryRoot + "/Tests/tools/zoneinfo_days.py"
        let output = try runProgram(
            "python3", [script, "--tzdir", SlimZoneFileTests.slim.path, "--from-year", "2000", "--to-year", "2040"],
            input: names.joined(separator: "\n"))
        let lines = output.split(separator: "\n").map(String.init)
        #expect(lines.count == names.count)
        var mismatches: [String] = []
        for line in lines {
            let name = String(line.prefix { $0 != "\t" })
            let ours = dayStartEncoding(
                try SlimZoneFileTests.slim.rules(for: name), from: date("2000-01-01"), through: date("2040-12-31"))
            if ours != line { mismatches.append(name) }
        }
        #expect(mismatches.isEmpty, "zones whose slim calendar differs from Python's: \(mismatches.prefix(20))")
    }
}
