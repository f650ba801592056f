import Foundation
import TestSupport
import Testing

/// Shell completion: the scripts the binaries write, and the candidates refreshctl gives back when
/// a shell calls it on TAB (`refreshctl ---completion SUBCOMMAND -- ARGUMENT CWORD CURSOR WORDS...`).
/// The package test completes through bash itself on an installed host.
@Suite("Shell completion")
struct CompletionTests {
    /// What refreshctl offers for the word being completed, as the bash script would ask.
    func candidates(_ subcommand: String, _ argument: String, words: [String], environment: [String: String] = [:])
        throws -> [String]
    {
        let result = try refreshctl(
            ["---completion", subcommand, "--", argument, "\(words.count - 1)", "\(words.last!.count)"] + words,
            environment: environment)
        #expect(result.status == 0, "\(result)")
        return result.stdout.split(separator: "\n").map(String.init)
    }

    @Test func timeZonesComeFromTheHostDatabase() throws {
        let zones = try candidates(
            "calendar", "--time-zone", words: ["refreshctl", "calendar", "--time-zone", "America/Sant"])
        #expect(zones == ["America/Santa_Isabel", "America/Santarem", "America/Santiago", "America/Santo_Domingo"])
        // Case-sensitive, exactly as refreshd accepts names: nothing for a lower-case prefix.
        #expect(
            try candidates("enqueue", "--time-zone", words: ["refreshctl", "enqueue", "--time-zone", "america/"])
                .isEmpty)
        // Another tz database ($TZDIR) gives its own names: here none.
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("tz-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: empty) }
        #expect(
            try candidates(
                "calendar", "--time-zone", words: ["refreshctl", "calendar", "--time-zone", "Eur"],
                environment: ["TZDIR": empty]
            ).isEmpty)
    }

    @Test func accountsComeFromTheConfiguration() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("completion-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "[[account]]\nname = \"emea\"\n[[account]]\nname = \"default\"\n[[account]]\nname = \"apac\"\n"
            .write(toFile: directory + "/refreshd.toml", atomically: true, encoding: .utf8)
        let words = ["refreshctl", "enqueue", "--config", directory + "/refreshd.toml", "--account", ""]
        #expect(try candidates("enqueue", "--account", words: words) == ["apac", "default", "emea"])
        #expect(
            try candidates(
                "history", "--account",
                words: ["refreshctl", "history", "--config=\(directory)/refreshd.toml", "--account", "e"]) == ["emea"])
    }

    /// The scripts call back into refreshctl for the dynamic candidates, and bash's has no #! line
    /// once installed (make install-files strips it).
    @Test func scriptsCallBack() throws {
        let bash = try refreshctl(["--generate-completion-script", "bash"])
        #expect(bash.status == 0)
        #expect(bash.stdout.contains("---completion calendar -- --time-zone"))
        #expect(
            bash.stdout.contains("---completion show -- positional@0")
                && bash.stdout.contains("---completion cancel -- positional@0"))
        #expect(bash.stdout.contains("---completion enqueue -- --account"))
        for shell in ["zsh", "fish"] {
            let script = try refreshctl(["--generate-completion-script", shell])
            #expect(script.status == 0 && script.stdout.contains("---completion"), "\(shell)")
        }
    }

    /// The manual generator asks the binary for its help as JSON: refreshd answers for itself, not
    /// for its default subcommand (a page named "refreshd run" would be wrong).
    @Test func refreshdDumpsItsOwnHelp() throws {
        let data = Data(try spawnAndWait(refreshdBinary, ["--experimental-dump-help"]).stdout.utf8)
        let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        let command = object?["command"] as? [String: Any]
        #expect(command?["commandName"] as? String == "refreshd")
        let subcommands = (command?["subcommands"] as? [[String: Any]] ?? []).compactMap {
            $0["commandName"] as? String
        }
        #expect(Set(subcommands).isSuperset(of: ["run", "check-config", "version"]))
    }
}
