import Foundation
import Testing

func enqueueFixture() throws -> (directory: String, config: String) {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("refreshctl-\(UUID().uuidString)")
        .path
    try FileManager.default.createDirectory(atPath: directory + "/spool/incoming", withIntermediateDirectories: true)
    let config = directory + "/refreshd.toml"
    try
        "state_dir = \"\(directory)/state\"\nspool_dir = \"\(directory)/spool\"\n[[account]]\nname = \"default\"\n[[account]]\nname = \"eu\"\n"
        .write(toFile: config, atomically: true, encoding: .utf8)
    return (directory, config)
}

@Suite("refreshctl enqueue")
struct EnqueueCommandTests {
    /// Flags become a validated job file, written atomically into incoming/; the name is printed.
    @Test func fromFlags() throws {
        let (directory, config) = try enqueueFixture()
        let result = try refreshctl([
            "enqueue", "--config", config, "--segment", "0F8C5E8E-1111-4F4A-9A53-3C3F0D7E1A01", "--time-zone",
            "America/Chicago",
            "--account", "eu", "--id", "crm-1", "--priority", "5", "--not-before", "2026-11-25T06:00:00Z", "--note",
            "hello",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let name = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(name.hasSuffix(".json") && !name.hasPrefix("."))
        let files = try FileManager.default.contentsOfDirectory(atPath: directory + "/spool/incoming")
        #expect(files == [name])
        let object =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: directory + "/spool/incoming/" + name))) as! [String: Any]
        #expect(object["segment_id"] as? String == "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01")
        #expect(
            object["account"] as? String == "eu" && object["id"] as? String == "crm-1"
                && object["priority"] as? Int == 5)
        #expect(object["not_before"] as? String == "2026-11-25T06:00:00Z" && object["note"] as? String == "hello")
    }

    /// A ready job file, or standard input; --json reports the file.
    @Test func fromFileAndStdin() throws {
        let (directory, config) = try enqueueFixture()
        let job = directory + "/job.json"
        try #"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01","user_time_zone":"UTC"}"#.write(
            toFile: job, atomically: true, encoding: .utf8)
        let result = try refreshctl(["enqueue", "--config", config, "--json", job])
        #expect(result.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect((object["path"] as? String)?.hasPrefix(directory + "/spool/incoming/") == true)
        #expect(object["user_time_zone"] as? String == "UTC")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: refreshctlPath)
        process.arguments = ["enqueue", "--config", config, "-"]
        let input = Pipe()
        process.standardInput = input
        process.standardOutput = Pipe()
        try process.run()
        input.fileHandleForWriting.write(
            Data(#"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a02","user_time_zone":"UTC"}"#.utf8))
        try input.fileHandleForWriting.close()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory + "/spool/incoming").count == 2)
    }

    /// Invalid jobs exit 2 with the daemon's own reason and write nothing; a missing spool exits 1.
    @Test(arguments: [
        (["--segment", "nope", "--time-zone", "UTC"], "segment_id: \"nope\" is not a UUID"),
        (
            ["--segment", "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01", "--time-zone", "PST"],
            "did you mean \"America/Los_Angeles\""
        ),
        (
            ["--segment", "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01", "--time-zone", "UTC", "--account", "us"],
            "account: \"us\" is not a configured account"
        ),
        (
            ["--segment", "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01", "--time-zone", "UTC", "--priority", "500"],
            "priority: 500 is outside -100...100"
        ),
        (
            ["--segment", "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01", "--time-zone", "UTC", "--not-before", "soon"],
            "not_before: \"soon\" is not an RFC 3339 time"
        ),
        (["--time-zone", "UTC"], "--segment is required"),
    ])
    func invalid(_ arguments: [String], _ message: String) throws {
        let (directory, config) = try enqueueFixture()
        let result = try refreshctl(["enqueue", "--config", config] + arguments)
        #expect(result.status == 2)
        #expect(result.stderr.contains(message), "\(result.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory + "/spool/incoming").isEmpty)
    }

    /// Submitters need not read the API key files: enqueue never resolves keys.
    @Test func keyFilesNotNeeded() throws {
        let (directory, _) = try enqueueFixture()
        let config = directory + "/keyed.toml"
        try
            "spool_dir = \"\(directory)/spool\"\n[[account]]\nname = \"default\"\napi_key_file = \"\(directory)/unreadable-key\"\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        let result = try refreshctl([
            "enqueue", "--config", config, "--segment", "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01", "--time-zone", "UTC",
        ])
        #expect(result.status == 0, "\(result.stderr)")
    }

    @Test func missingSpool() throws {
        let (directory, config) = try enqueueFixture()
        try FileManager.default.removeItem(atPath: directory + "/spool")
        let result = try refreshctl([
            "enqueue", "--config", config, "--segment", "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01", "--time-zone", "UTC",
        ])
        #expect(result.status == 1)
        #expect(result.stderr.contains("the spool directory \(directory)/spool/incoming does not exist"))
    }
}
