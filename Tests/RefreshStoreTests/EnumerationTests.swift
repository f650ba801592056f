import Foundation
import GRDB
import RefreshCore
import RefreshStore
import Testing

/// One source for each enumeration: the ledger's CHECK constraints (in the schema a fresh ledger
/// ends up with, after every migration) list exactly the Swift enumerations' cases.
@Suite("Enumerations: the ledger's CHECK lists")
struct EnumerationTests {
    /// The quoted values of `column IN (...)` in a table's CREATE statement.
    static func checkList(_ sql: String, column: String) -> [String]? {
        guard let start = sql.range(of: "CHECK (\(column) IN (") else { return nil }
        let rest = sql[start.upperBound...]
        guard let end = rest.firstIndex(of: ")") else { return nil }
        return rest[..<end].split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespacesAndNewlines).trimmingCharacters(in: CharacterSet(charactersIn: "'"))
        }
    }

    @Test func checkListsAreTheEnumerations() throws {
        let path = tempDirectory() + "/ledger.sqlite"
        _ = try SQLiteLedger(path: path, now: Date())
        let queue = try DatabaseQueue(path: path)
        let tables = try queue.read { db in
            try [String: String](
                uniqueKeysWithValues: Row.fetchAll(db, sql: "SELECT name, sql FROM sqlite_master WHERE type = 'table'")
                    .map { ($0["name"] as String, $0["sql"] as String? ?? "") })
        }
        let outcomes = try #require(
            Self.checkList(tables["attempt"] ?? "", column: "outcome"), "\(tables["attempt"] ?? "")")
        #expect(outcomes == AttemptOutcome.allCases.map(\.rawValue))
        let states = try #require(Self.checkList(tables["job"] ?? "", column: "state"), "\(tables["job"] ?? "")")
        #expect(states == JobState.allCases.map(\.rawValue))
    }
}
