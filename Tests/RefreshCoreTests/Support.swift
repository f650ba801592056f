import Foundation
import RefreshCore
import TZData

/// The repository's root, found from this file's path.
let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// The host's tz database, as refreshd reads it.
let hostZones: ZoneInfoDirectory = {
    do {
        return try ZoneInfoDirectory(
            path: ZoneInfoDirectory.defaultPath(environment: ProcessInfo.processInfo.environment))
    } catch {
        fatalError("the tests need the host's tz database: \(error)")
    }
}()

func rules(_ name: String) -> ZoneRules {
    do { return try hostZones.rules(for: name) } catch { fatalError("\(error)") }
}

func date(_ text: String) -> CivilDate {
    guard let date = CivilDate(iso: text) else { fatalError("bad date \(text)") }
    return date
}

/// Runs a program, feeding `input` on stdin; returns its stdout, failing on a non-zero exit.
func runProgram(_ executable: String, _ arguments: [String], input: String = "") throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = [executable] + arguments
    let stdin = Pipe()
    let stdout = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    try process.run()
    let writer = Thread {
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try? stdin.fileHandleForWriting.close()
    }
    writer.start()
    let data = stdout.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw ProgramFailed(description: "\(executable) \(arguments) exited with \(process.terminationStatus)")
    }
    return String(decoding: data, as: UTF8.self)
}

struct ProgramFailed: Error, CustomStringConvertible {
    let description: String
}

/// The run-length encoding of day starts that `Tests/tools/zoneinfo_days.py` prints.
func dayStartEncoding(_ rules: ZoneRules, from first: CivilDate, through last: CivilDate) -> String {
    var parts: [String] = []
    var previous: Int64?
    var day = first.dayNumber
    while day <= last.dayNumber {
        let delta = rules.dayStart(CivilDate(dayNumber: day)) - day * 86400
        if delta != previous {
            parts.append("\(day):\(delta)")
            previous = delta
        }
        day += 1
    }
    return rules.name + "\t" + parts.joined(separator: " ")
}
