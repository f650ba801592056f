import Foundation
import RefreshCore
import TZData
import Testing

func parseJob(_ text: String, accounts: Set<String> = ["default", "eu"]) -> Result<JobRequest, JobFileError> {
    JobFile.parse(Array(text.utf8), accounts: accounts) { zone in
        hostZones.contains(zone)
            ? nil : TZDataError.unknownZone(zone, suggestions: hostZones.suggestions(for: zone)).message
    }
}

@Suite("Job files")
struct JobFileTests {
    /// The documented example parses to the documented values; the UUID is stored lower-case.
    @Test func documentedExample() throws {
        let result = parseJob(
            """
            {"segment_id": "0F8C5E8E-1111-4F4A-9A53-3C3F0D7E1A01", "user_time_zone": "America/Chicago",
             "account": "default", "id": "crm-nightly-2026-11-25", "priority": 0,
             "not_before": "2026-11-25T06:00:00Z", "expires_at": "2026-11-26T00:00:00Z", "note": "nightly CRM sync"}
            """)
        let job = try result.get()
        #expect(job.segmentID == "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01")
        #expect(job.timeZone == "America/Chicago" && job.account == "default" && job.id == "crm-nightly-2026-11-25")
        #expect(job.notBefore == Date(timeIntervalSince1970: 1_795_586_400))
        #expect(job.expiresAt == Date(timeIntervalSince1970: 1_795_651_200))
        #expect(job.note == "nightly CRM sync")
    }

    /// Only the two required fields: defaults for the rest.
    @Test func minimal() throws {
        let job = try parseJob(#"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01","user_time_zone":"UTC"}"#).get()
        #expect(job == JobRequest(segmentID: "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01", timeZone: "UTC"))
    }

    /// Rendering then parsing gives the same request.
    @Test func roundTrip() throws {
        let request = JobRequest(
            segmentID: "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01", timeZone: "Pacific/Apia", account: "eu", id: "a:b.c-d_e",
            priority: -7,
            notBefore: Date(timeIntervalSince1970: 1_795_586_400),
            expiresAt: Date(timeIntervalSince1970: 1_795_651_200),
            note: "quote \" backslash \\ newline \n tab \t \u{1} é 😀")
        #expect(try parseJob(JobFile.render(request)).get() == request)
    }

    /// Bad files are refused with a reason naming the field (or the JSON problem).
    @Test(arguments: [
        ("", "the file is empty"),
        (#"{"segment_id": "0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01""#, "truncated"),
        ("[1,2]", "must be a JSON object, not an array"),
        (#"{"user_time_zone":"UTC"}"#, "segment_id: is required"),
        (#"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01"}"#, "user_time_zone: is required"),
        (#"{"segment_id":"not-a-uuid","user_time_zone":"UTC"}"#, "segment_id: \"not-a-uuid\" is not a UUID"),
        (#"{"segment_id":12,"user_time_zone":"UTC"}"#, "segment_id: must be a string, not an integer"),
        (
            #"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01","user_time_zone":"PST"}"#,
            "user_time_zone: unknown time zone \"PST\""
        ),
        (
            #"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01","user_time_zone":"UTC","account":"nope"}"#,
            "account: \"nope\" is not a configured account"
        ),
        (
            #"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01","user_time_zone":"UTC","priority":101}"#,
            "priority: 101 is outside -100...100"
        ),
        (
            #"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01","user_time_zone":"UTC","priority":1.5}"#,
            "priority: must be an integer"
        ),
        (
            #"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01","user_time_zone":"UTC","priority":99999999999999999999999}"#,
            "priority: must be an integer"
        ),
        (
            #"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01","user_time_zone":"UTC","id":"has space"}"#,
            "id: must be 1 to 128 characters"
        ),
        (
            #"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01","user_time_zone":"UTC","not_before":"tomorrow"}"#,
            "not_before: \"tomorrow\" is not an RFC 3339 time"
        ),
        (
            #"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01","user_time_zone":"UTC","not_before":"2026-11-26T00:00:00Z","expires_at":"2026-11-25T00:00:00Z"}"#,
            "expires_at: is not after not_before"
        ),
        (
            #"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01","user_time_zone":"UTC","colour":"red"}"#,
            "colour: unknown field \"colour\""
        ),
        (
            #"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01","segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a02","user_time_zone":"UTC"}"#,
            "duplicate key \"segment_id\""
        ),
        (
            #"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01","user_time_zone":"UTC"} trailing"#,
            "unexpected text after the JSON value"
        ),
        (
            "{\"segment_id\":\"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01\u{0}\",\"user_time_zone\":\"UTC\"}",
            "NUL byte inside a string"
        ),
    ])
    func refuses(_ text: String, _ message: String) {
        guard case .failure(let error) = parseJob(text) else {
            Issue.record("accepted: \(text)")
            return
        }
        #expect("\(error)".contains(message), "\(error)")
    }

    /// Invalid UTF-8, deep nesting, oversized files and oversized notes are refused.
    @Test func refusesBytes() {
        let invalid: [UInt8] =
            Array(#"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01","user_time_zone":""#.utf8) + [0xC3, 0x28]
            + Array(#""}"#.utf8)
        guard case .failure(let utf8Error) = JobFile.parse(invalid, accounts: ["default"], zoneProblem: { _ in nil })
        else { return #expect(Bool(false)) }
        #expect(utf8Error.message.contains("not valid UTF-8 (at byte 71)"))
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        guard case .failure(let deepError) = parseJob(deep) else { return #expect(Bool(false)) }
        #expect(deepError.message.contains("nesting is deeper than"))
        let big = [UInt8](repeating: 0x20, count: JobFile.maxBytes + 1)
        guard case .failure(let sizeError) = JobFile.parse(big, accounts: ["default"], zoneProblem: { _ in nil }) else {
            return #expect(Bool(false))
        }
        #expect(sizeError.message.contains("at most 65536 bytes"))
        let note = String(repeating: "x", count: 1025)
        guard
            case .failure(let noteError) = parseJob(
                #"{"segment_id":"0f8c5e8e-1111-4f4a-9a53-3c3f0d7e1a01","user_time_zone":"UTC","note":"\#(note)"}"#)
        else { return #expect(Bool(false)) }
        #expect(noteError.description == "note: is 1025 bytes; at most 1024")
    }

    /// RFC 3339 parsing: offsets, fractions, lower-case t/z, and the invalid ones.
    @Test func rfc3339() {
        #expect(Timestamp.parseRFC3339("2026-11-25T06:00:00Z") == Date(timeIntervalSince1970: 1_795_586_400))
        #expect(Timestamp.parseRFC3339("2026-11-25T07:00:00+01:00") == Date(timeIntervalSince1970: 1_795_586_400))
        #expect(Timestamp.parseRFC3339("2026-11-25t00:30:00-05:30") == Date(timeIntervalSince1970: 1_795_586_400))
        #expect(Timestamp.parseRFC3339("2026-11-25T06:00:00.5z") == Date(timeIntervalSince1970: 1_795_586_400.5))
        for bad in [
            "2026-11-25", "2026-11-25T06:00:00", "2026-02-30T00:00:00Z", "2026-11-25T24:00:00Z",
            "2026-11-25T06:00:00+0100", "x",
        ] {
            #expect(Timestamp.parseRFC3339(bad) == nil, "\(bad)")
        }
    }
}
