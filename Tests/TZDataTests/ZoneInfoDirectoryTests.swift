import Foundation
import TZData
import Testing

@Suite("Zone names and the host database")
struct ZoneInfoDirectoryTests {
    let directory: ZoneInfoDirectory

    init() throws {
        directory = try ZoneInfoDirectory(
            path: ZoneInfoDirectory.defaultPath(environment: ProcessInfo.processInfo.environment))
    }

    /// Exactly the database's zone and link names are accepted, case-sensitively.
    @Test(arguments: ["America/Chicago", "Etc/GMT+5", "UTC", "Europe/Paris", "Pacific/Apia", "GMT+0", "Asia/Kathmandu"])
    func accepts(_ name: String) throws {
        #expect(directory.contains(name))
        #expect(try directory.rules(for: name).name == name)
    }

    /// Abbreviations, wrong case, paths, the posix/ copies, empty and overlong strings are refused,
    /// never replaced by UTC; the error names the input.
    @Test(arguments: [
        "PST", "BST", "GMT+5", "america/chicago", "../../etc/passwd", "posix/Europe/Paris", "",
        String(repeating: "A", count: 200), "right/UTC", "zone.tab", "tzdata.zi", "America/", "/usr/share/zoneinfo/UTC",
    ])
    func refuses(_ name: String) {
        #expect(!directory.contains(name))
        #expect {
            try directory.rules(for: name)
        } throws: { error in
            guard let error = error as? TZDataError else { return false }
            return error.message.contains("unknown time zone \"\(name.prefix(64))")
        }
    }

    /// The error suggests the closest valid names.
    @Test(arguments: [
        ("america/chicago", "America/Chicago"), ("PST", "America/Los_Angeles"), ("GMT+5", "Etc/GMT-5"),
        ("posix/Europe/Paris", "Europe/Paris"), ("Europe/Pariss", "Europe/Paris"), ("Asia/Katmandu", "Asia/Katmandu"),
        ("BST", "Europe/London"), ("America/Sao Paulo", "America/Sao_Paulo"),
    ])
    func suggests(_ input: String, _ expected: String) {
        if directory.contains(input) { return #expect(input == expected) }
        #expect(directory.suggestions(for: input).contains(expected))
    }

    /// The data version is read from tzdata.zi and the directory follows $TZDIR.
    @Test func versionAndDirectory() {
        #expect(directory.version?.range(of: #"^\d{4}[a-z]$"#, options: .regularExpression) != nil)
        #expect(ZoneInfoDirectory.defaultPath(environment: ["TZDIR": "/tmp/zi"]) == "/tmp/zi")
        #expect(ZoneInfoDirectory.defaultPath(environment: ["TZDIR": ""]) == "/usr/share/zoneinfo")
        #expect(ZoneInfoDirectory.defaultPath(environment: [:]) == "/usr/share/zoneinfo")
    }

    /// A missing directory is an error naming it.
    @Test func missingDirectory() {
        #expect {
            try ZoneInfoDirectory(path: "/nonexistent/zoneinfo")
        } throws: { ($0 as? TZDataError)?.message.contains("/nonexistent/zoneinfo") == true }
    }

    /// Without tzdata.zi the names come from the TZif files in the tree, minus posix/ and right/.
    @Test func scansTreeWithoutIndex() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("zi-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        for name in ["Europe/Paris", "posix/Europe/Paris", "UTC"] {
            let target = root + "/" + name
            try FileManager.default.createDirectory(
                atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let source = directory.path + "/" + (name.hasPrefix("posix/") ? "Europe/Paris" : name)
            try Data(contentsOf: URL(fileURLWithPath: source)).write(to: URL(fileURLWithPath: target))
        }
        try Data("not tzif".utf8).write(to: URL(fileURLWithPath: root + "/zone.tab"))
        let scanned = try ZoneInfoDirectory(path: root)
        #expect(scanned.zoneNames == ["Europe/Paris", "UTC"])
        #expect(scanned.version == nil)
    }
}
