import Foundation
import RefreshCore
import RefreshWire
import Testing

/// The wire module's own promises: absent values travel as null and come back as nil, request
/// bodies leave out what is not given (and send null for "remove"), the spool's ready names.
@Suite("The wire module")
struct WireBodyTests {
    static func object(_ data: Data) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    @Test func absentValuesAreNullAndComeBack() throws {
        let job = JobBody(
            id: 7, state: .queued, account: "default", segmentID: "0f9f1b9e-5a8d-4c4e-9b61-3d2f0c6a7e11",
            timeZone: "America/Santiago", priority: 0, source: "api", idempotencyKey: nil, notBefore: nil,
            expiresAt: Date(timeIntervalSince1970: 1_725_768_000), note: nil, attemptID: nil, reason: nil, tries: 0,
            retryAt: nil, heldReason: nil, createdAt: Date(timeIntervalSince1970: 1_725_760_000),
            updatedAt: Date(timeIntervalSince1970: 1_725_760_000))
        let data = try WireJSON.encoder.encode(JobAnswer(job: job, forecast: nil))
        let body = try Self.object(data)
        let fields = try #require(body["job"] as? [String: Any])
        // Every key present, nulls included: clients read one shape.
        for key in ["idempotency_key", "not_before", "note", "attempt_id", "reason", "retry_at", "held_reason"] {
            #expect(fields[key] is NSNull, "\(key): \(String(describing: fields[key]))")
        }
        #expect(body["forecast"] is NSNull)
        #expect(fields["expires_at"] as? String == "2024-09-08T04:00:00Z")
        #expect(fields["state"] as? String == "queued")
        #expect(try WireJSON.decoder.decode(JobAnswer.self, from: data) == JobAnswer(job: job, forecast: nil))
        // A member an older daemon leaves out altogether decodes as nil too.
        var trimmed = fields
        trimmed["held_reason"] = nil
        let older = try JSONSerialization.data(withJSONObject: trimmed)
        #expect(try WireJSON.decoder.decode(JobBody.self, from: older) == job)
    }

    @Test func requestBodiesSendOnlyWhatIsGiven() throws {
        let edit = try Self.object(
            try WireJSON.encoder.encode(JobEditBody(priority: 5, notBefore: .clear, expiresAt: nil)))
        #expect(edit.count == 2 && edit["priority"] as? Int == 5 && edit["not_before"] is NSNull)
        let retry = try Self.object(try WireJSON.encoder.encode(RetryFilterBody(state: .failed, dryRun: true)))
        #expect(retry.count == 2 && retry["state"] as? String == "failed" && retry["dry_run"] as? Bool == true)
        // The member names the daemon allows are the types' own keys.
        #expect(CancelFilterBody.CodingKeys.memberNames == ["state", "account", "segment", "dry_run"])
        #expect(NewHoldBody.CodingKeys.memberNames == ["account", "segment", "reason", "who"])
        #expect(JobEditBody.CodingKeys.memberNames == ["priority", "not_before", "expires_at"])
    }

    @Test func spoolNamesThatAreReady() {
        #expect(SpoolLayout.isReady(Array("20261206T101500Z-1-2.json".utf8)))
        #expect(SpoolLayout.isReady(Array("job".utf8)))
        #expect(!SpoolLayout.isReady(Array(".hidden.json".utf8)))
        #expect(!SpoolLayout.isReady(Array("partial.tmp".utf8)))
        #expect(!SpoolLayout.isReady(Array(SpoolLayout.temporaryName(writer: "refreshctl", unique: "9").utf8)))
        let layout = SpoolLayout(directory: "/var/spool/refreshd")
        #expect(layout.incoming == "/var/spool/refreshd/incoming")
        #expect(layout.directories.map(\.mode) == [0o755, 0o2770, 0o750, 0o750])
    }

    /// The streaming writer's JSON against Foundation's for one body: the same JSON value (members,
    /// numbers, strings, nulls), and the body reads back equal.
    static func writesAsFoundation<Body: Codable & Equatable>(_ body: Body) throws {
        let written = try WireJSON.encode(body)
        let reference = try WireJSON.encoder.encode(body)
        let ours = try JSONSerialization.jsonObject(with: written, options: [.fragmentsAllowed])
        let theirs = try JSONSerialization.jsonObject(with: reference, options: [.fragmentsAllowed])
        #expect(
            sameJSON(ours, theirs),
            "\(Body.self): \(String(decoding: written, as: UTF8.self)) vs \(String(decoding: reference, as: UTF8.self))"
        )
        #expect(try WireJSON.decoder.decode(Body.self, from: written) == body)
    }

    /// Two parsed JSON values equal: the same members, elements, strings, nulls, and numbers of
    /// the same value.
    static func sameJSON(_ a: Any, _ b: Any) -> Bool {
        switch (a, b) {
        case (let a as [String: Any], let b as [String: Any]):
            return a.count == b.count && a.allSatisfy { key, value in b[key].map { sameJSON(value, $0) } ?? false }
        case (let a as [Any], let b as [Any]):
            return a.count == b.count && zip(a, b).allSatisfy { sameJSON($0, $1) }
        case (is NSNull, is NSNull): return true
        case (let a as String, let b as String): return a == b
        case (let a as NSNumber, let b as NSNumber): return a == b
        default: return false
        }
    }

    /// A live answer (as the daemon wrote it) decoded as its wire type and written both ways.
    static func answerWritesAsFoundation(_ route: Route, status: Int, _ text: String) throws {
        let data = Data(text.utf8)
        func check<Body: Codable & Equatable>(_ type: Body.Type) throws {
            try writesAsFoundation(try WireJSON.decoder.decode(Body.self, from: data))
        }
        if status >= 400 { return try check(ErrorAnswer.self) }
        switch route {
        case .enqueue, .editJob, .retryJob, .cancelJob: try check(JobEnvelope.self)
        case .status: try check(StatusAnswer.self)
        case .budget: try check(BudgetAnswer.self)
        case .segments: try check(SegmentsAnswer.self)
        case .segmentBudget: try check(SegmentBudgetBody.self)
        case .jobs: try check(JobsPage.self)
        case .job: try check(JobAnswer.self)
        case .plan, .whatIf: try check(PlanAnswer.self)
        case .holds: try check(HoldsAnswer.self)
        case .addHold, .releaseHold: try check(HoldEnvelope.self)
        case .refreshes: try check(RefreshesAnswer.self)
        case .blocks: try check(BlocksAnswer.self)
        case .liftBlock: try check(BlockEnvelope.self)
        case .retryJobs, .cancelJobs: try check(BulkAnswer.self)
        case .health: try check(HealthAnswer.self)
        case .metrics, .openAPI, .page: break
        }
    }

    /// What JSON makes hard: escapes, control characters, non-ASCII text, slashes left alone,
    /// numbers of every size, nested arrays, empty containers, and a shape only Foundation follows.
    @Test func theWriterWritesWhatFoundationWrites() throws {
        struct Sample: Codable, Equatable {
            var text: String
            var numbers: [Double]
            var integers: [Int64]
            var nested: [[String: Bool]]
            var empty: [String]
            var missing: String?
            @Null var null: Int?
            var when: Date
            var instants: [Date]
        }
        let sample = Sample(
            text: "quote \" backslash \\ slash / newline \n tab \t bell \u{07} nul \u{0} é 東 🌍 \u{2028}",
            numbers: [0, -0.0, 0.1, 1.5, -2.25, 1e-7, 123_456_789.125, 1e15, 1.5e20, 3.0e-300, Double.ulpOfOne],
            integers: [0, -1, Int64.max, Int64.min], nested: [["a": true], [:], ["b": false, "c": true]], empty: [],
            missing: nil, null: nil, when: Date(timeIntervalSince1970: 1_725_768_000),
            instants: [-86_401, -1, 0, 59, 951_782_400, 4_102_444_799, 253_402_300_799].map {
                Date(timeIntervalSince1970: $0)
            })
        try Self.writesAsFoundation(sample)
        // Members in declaration order (Foundation's own order is a hash's).
        let text = String(decoding: try WireJSON.encode(sample), as: UTF8.self)
        #expect(text.hasPrefix(#"{"text":"quote \" backslash \\ slash / newline \n tab \t bell \u0007 nul \u0000 é"#))
        #expect(!text.contains("missing") && text.contains(#""null":null,"when":"2024-09-08T04:00:00Z","#))
        #expect(
            text.hasSuffix(
                #""1969-12-30T23:59:59Z","1969-12-31T23:59:59Z","1970-01-01T00:00:00Z","#
                    + #""1970-01-01T00:00:59Z","2000-02-29T00:00:00Z","2099-12-31T23:59:59Z","9999-12-31T23:59:59Z"]}"#)
        )
        // Fractions of a second are dropped, as Timestamp drops them (floor, also before 1970).
        let fractions = [59.999, -0.5].map { Date(timeIntervalSince1970: $0) }
        #expect(try WireJSON.encode(fractions) == WireJSON.encoder.encode(fractions))
        #expect(
            String(decoding: try WireJSON.encode(fractions), as: UTF8.self)
                == #"["1970-01-01T00:00:59Z","1969-12-31T23:59:59Z"]"#)
        // Not a JSON number: refused by both.
        #expect(throws: EncodingError.self) { try WireJSON.encode([Double.infinity]) }
        // A container kept and filled later, and Data: Foundation's encoder answers.
        struct Later: Codable, Equatable {
            var inner: Int
            var blob: Data
            enum CodingKeys: String, CodingKey { case outer, inner, blob }
            init(inner: Int, blob: Data) { (self.inner, self.blob) = (inner, blob) }
            init(from decoder: any Decoder) throws {
                let outer = try decoder.container(keyedBy: CodingKeys.self)
                let nested = try outer.nestedContainer(keyedBy: CodingKeys.self, forKey: .outer)
                inner = try nested.decode(Int.self, forKey: .inner)
                blob = try outer.decode(Data.self, forKey: .blob)
            }
            func encode(to encoder: any Encoder) throws {
                var outer = encoder.container(keyedBy: CodingKeys.self)
                var nested = outer.nestedContainer(keyedBy: CodingKeys.self, forKey: .outer)
                try outer.encode(blob, forKey: .blob)
                try nested.encode(inner, forKey: .inner)
            }
        }
        try Self.writesAsFoundation(Later(inner: 4, blob: Data([1, 2, 3])))
        try Self.writesAsFoundation([Data([9])])
    }
}
