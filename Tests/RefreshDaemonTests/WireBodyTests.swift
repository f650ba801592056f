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
}
