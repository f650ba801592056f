import Foundation
import Testing

/// Log metadata keys are written down once (docs/architecture.md, "Log metadata keys"): every key
/// the daemon's sources log with is in that list, and the list holds no key nobody uses.
@Suite("Log metadata keys")
struct LogKeyTests {
    static let root: URL = {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        return root
    }()

    /// The keys in `metadata: [...]` literals and `[metadataKey: "..."]` subscripts of a source.
    static func keys(in source: String) -> Set<String> {
        var found: Set<String> = []
        let text = Array(source.utf8)
        let opener = Array("metadata: [".utf8)
        var index = 0
        while index + opener.count <= text.count {
            guard text[index..<index + opener.count].elementsEqual(opener) else {
                index += 1
                continue
            }
            var depth = 1
            var end = index + opener.count
            while depth > 0 && end < text.count {
                if text[end] == UInt8(ascii: "[") { depth += 1 }
                if text[end] == UInt8(ascii: "]") { depth -= 1 }
                end += 1
            }
            let literal = String(decoding: text[(index + opener.count)..<end], as: UTF8.self)
            found.formUnion(matches(#""([A-Za-z_.]+)":"#, in: literal))
            index = end
        }
        found.formUnion(matches(#"metadataKey: "([^"]+)""#, in: source))
        return found
    }

    static func matches(_ pattern: String, in text: String) -> [String] {
        let expression = try! NSRegularExpression(pattern: pattern)
        return expression.matches(in: text, range: NSRange(text.startIndex..., in: text)).map {
            String(text[Range($0.range(at: 1), in: text)!])
        }
    }

    @Test func everyKeyIsDocumented() throws {
        let document = try String(contentsOf: Self.root.appendingPathComponent("docs/architecture.md"), encoding: .utf8)
        let section = try #require(document.components(separatedBy: "## Log metadata keys").last)
        var documented: Set<String> = []
        for line in section.split(separator: "\n") where line.hasPrefix("| `") {
            let first = line.split(separator: "|")[0]
            documented.formUnion(Self.matches("`([^`]+)`", in: String(first)))
        }
        var used: Set<String> = []
        // RefreshCore's AnswerMeaning.Note carries log lines the lane writes.
        for directory in [
            "Sources/RefreshDaemon", "Sources/RefreshStore", "Sources/RefreshPostgres", "Sources/RefreshCore",
        ] {
            let path = Self.root.appendingPathComponent(directory).path
            for file in try FileManager.default.contentsOfDirectory(atPath: path) where file.hasSuffix(".swift") {
                used.formUnion(Self.keys(in: try String(contentsOfFile: path + "/" + file, encoding: .utf8)))
            }
        }
        #expect(used.count > 20, "the scan found the keys: \(used.sorted())")
        #expect(used.subtracting(documented).isEmpty, "undocumented: \(used.subtracting(documented).sorted())")
        #expect(
            documented.subtracting(used).isEmpty, "documented, never used: \(documented.subtracting(used).sorted())")
    }
}
