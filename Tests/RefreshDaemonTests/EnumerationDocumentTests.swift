import Foundation
import RefreshCore
import RefreshWire
import Testing

/// One source for each enumeration: every `enum` of the control API's document lists exactly the
/// cases of the Swift enumeration the daemon writes (outcomes, job states, plan reasons, rules,
/// fates), in the same order, and refreshctl's help texts are built from the same cases.
@Suite("Enumerations: the document and the help texts")
struct EnumerationDocumentTests {
    static func enumeration(_ document: [String: Any], _ path: [String]) -> [String]? {
        var node: Any? = document
        for key in path {
            if let index = Int(key), let array = node as? [Any] {
                node = array.indices.contains(index) ? array[index] : nil
            } else {
                node = (node as? [String: Any])?[key]
            }
        }
        return (node as? [String: Any])?["enum"] as? [String]
    }

    @Test func documentEnumsAreTheSwiftCases() throws {
        let document = try controlAPISchema().document
        let schemas = ["components", "schemas"]
        let expected: [([String], [String])] = [
            (schemas + ["Refresh", "properties", "outcome"], AttemptOutcome.allCases.map(\.rawValue)),
            (schemas + ["Job", "properties", "state"], JobState.allCases.map(\.rawValue)),
            (["paths", "/v1/jobs", "get", "parameters", "0", "schema"], JobState.allCases.map(\.rawValue)),
            (schemas + ["PlannedSend", "properties", "reasons", "items"], PlanReason.allCases.map(\.rawValue)),
            (schemas + ["RuleBudget", "properties", "rule"], Rule.allCases.map(\.rawValue)),
            (schemas + ["Forecast", "properties", "fate"], PlanFate.allCases.map(\.rawValue)),
            (schemas + ["PlannedJob", "properties", "fate"], PlanFate.allCases.map(\.rawValue)),
            // The verbs' filters name subsets: what may be retried, what may be cancelled.
            (schemas + ["RetryFilter", "properties", "state"], [JobState.failed, .expired].map(\.rawValue)),
            (schemas + ["CancelFilter", "properties", "state"], [JobState.queued.rawValue]),
        ]
        for (path, cases) in expected {
            #expect(Self.enumeration(document, path) == cases, "\(path.joined(separator: "."))")
        }
    }
}
