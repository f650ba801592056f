import Foundation
import TZData

/// A refresh request as a job file states it (the contract documented in the README):
///
///     {"segment_id": "<uuid>", "user_time_zone": "America/Chicago",
///      "account": "default", "id": "crm-nightly-2026-11-25", "priority": 0,
///      "not_before": "2026-11-25T06:00:00Z", "expires_at": "2026-11-26T00:00:00Z", "note": "..."}
public struct JobRequest: Sendable, Equatable {
    /// Lower-case UUID.
    public var segmentID: String
    public var timeZone: String
    public var account: String
    /// The submitter's idempotency key.
    public var id: String?
    public var priority: Int
    public var notBefore: Date?
    public var expiresAt: Date?
    public var note: String?

    public init(
        segmentID: String, timeZone: String, account: String = "default", id: String? = nil, priority: Int = 0,
        notBefore: Date? = nil, expiresAt: Date? = nil, note: String? = nil
    ) {
        self.segmentID = segmentID
        self.timeZone = timeZone
        self.account = account
        self.id = id
        self.priority = priority
        self.notBefore = notBefore
        self.expiresAt = expiresAt
        self.note = note
    }
}

/// Why a job file (or API body) was refused: names the field when one is at fault.
public struct JobFileError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The field at fault, if one is.
    public let field: String?
    public let message: String

    public init(field: String?, _ message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { field.map { "\($0): \(message)" } ?? message }
}

/// Reads and writes job files. Pure: the zone and account checks are passed in.
public enum JobFile {
    /// Largest job file accepted.
    public static let maxBytes = 64 * 1024
    /// Longest note, in UTF-8 bytes.
    public static let maxNoteBytes = 1024
    /// The fields a job file may have.
    public static let fields: Set<String> = [
        "segment_id", "user_time_zone", "account", "id", "priority", "not_before", "expires_at", "note",
    ]

    /// Parses and validates a job file.
    ///
    /// - Parameters:
    ///   - accounts: the configured account names.
    ///   - zoneProblem: nil when the zone name is valid, else the message (with suggestions).
    public static func parse(
        _ bytes: [UInt8], accounts: Set<String>, zoneProblem: (String) -> String?
    ) -> Result<JobRequest, JobFileError> {
        guard bytes.count <= maxBytes else {
            return .failure(
                JobFileError(field: nil, "the file is \(bytes.count) bytes; a job file is at most \(maxBytes) bytes"))
        }
        let value: JSONValue
        do {
            value = try StrictJSONParser().parse(bytes)
        } catch {
            return .failure(JobFileError(field: nil, "not valid JSON: \(error)"))
        }
        return validate(value, accounts: accounts, zoneProblem: zoneProblem)
    }

    /// Validates a parsed JSON value as a job.
    public static func validate(_ value: JSONValue, accounts: Set<String>, zoneProblem: (String) -> String?) -> Result<
        JobRequest, JobFileError
    > {
        guard case .object(let members) = value else {
            return .failure(JobFileError(field: nil, "a job file must be a JSON object, not \(value.kind)"))
        }
        let unknown = members.map(\.key).filter { !fields.contains($0) }
        if !unknown.isEmpty {
            let names = unknown.prefix(5).map { "\"\($0.prefix(40))\"" }.joined(separator: ", ")
            return .failure(
                JobFileError(
                    field: unknown[0],
                    "unknown field\(unknown.count > 1 ? "s" : "") \(names); allowed: \(fields.sorted().joined(separator: ", "))"
                ))
        }
        let object = Dictionary(uniqueKeysWithValues: members.map { ($0.key, $0.value) })
        do {
            guard let segmentValue = object["segment_id"] else {
                throw JobFileError(field: "segment_id", "is required")
            }
            let segment = try string(segmentValue, "segment_id")
            guard let uuid = normalizedUUID(segment) else {
                throw JobFileError(
                    field: "segment_id",
                    "\"\(segment.prefix(64))\" is not a UUID (36 characters, 8-4-4-4-12 hexadecimal)")
            }
            guard let zoneValue = object["user_time_zone"] else {
                throw JobFileError(field: "user_time_zone", "is required")
            }
            let zone = try string(zoneValue, "user_time_zone")
            if let problem = zoneProblem(zone) { throw JobFileError(field: "user_time_zone", problem) }
            var request = JobRequest(segmentID: uuid, timeZone: zone)
            if let accountValue = object["account"] {
                let account = try string(accountValue, "account")
                guard accounts.contains(account) else {
                    throw JobFileError(
                        field: "account",
                        "\"\(account.prefix(64))\" is not a configured account (configured: \(accounts.sorted().joined(separator: ", ")))"
                    )
                }
                request.account = account
            } else if !accounts.contains("default") {
                throw JobFileError(
                    field: "account",
                    "is required: no account is named \"default\" (configured: \(accounts.sorted().joined(separator: ", ")))"
                )
            }
            if let idValue = object["id"] {
                let id = try string(idValue, "id")
                guard isValidID(id) else {
                    throw JobFileError(field: "id", "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -")
                }
                request.id = id
            }
            if let priorityValue = object["priority"] {
                guard case .integer(let priority) = priorityValue else {
                    throw JobFileError(
                        field: "priority", "must be an integer from -100 to 100, not \(priorityValue.kind)")
                }
                guard (-100...100).contains(priority) else {
                    throw JobFileError(field: "priority", "\(priority) is outside -100...100")
                }
                request.priority = Int(priority)
            }
            if let value = object["not_before"] { request.notBefore = try instant(value, "not_before") }
            if let value = object["expires_at"] { request.expiresAt = try instant(value, "expires_at") }
            if let notBefore = request.notBefore, let expiresAt = request.expiresAt, expiresAt <= notBefore {
                throw JobFileError(field: "expires_at", "is not after not_before")
            }
            if let noteValue = object["note"] {
                let note = try string(noteValue, "note")
                guard note.utf8.count <= maxNoteBytes else {
                    throw JobFileError(field: "note", "is \(note.utf8.count) bytes; at most \(maxNoteBytes)")
                }
                request.note = note
            }
            return .success(request)
        } catch let error as JobFileError {
            return .failure(error)
        } catch {
            return .failure(JobFileError(field: nil, "\(error)"))
        }
    }

    /// The canonical job file for a request (what `refreshctl enqueue` writes).
    public static func render(_ request: JobRequest) -> String {
        var members: [(String, String)] = [
            ("segment_id", quote(request.segmentID)), ("user_time_zone", quote(request.timeZone)),
            ("account", quote(request.account)),
        ]
        if let id = request.id { members.append(("id", quote(id))) }
        members.append(("priority", String(request.priority)))
        if let notBefore = request.notBefore { members.append(("not_before", quote(Timestamp.rfc3339(notBefore)))) }
        if let expiresAt = request.expiresAt { members.append(("expires_at", quote(Timestamp.rfc3339(expiresAt)))) }
        if let note = request.note { members.append(("note", quote(note))) }
        return "{" + members.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}\n"
    }

    /// A lower-case UUID, or nil.
    public static func normalizedUUID(_ text: String) -> String? {
        let utf8 = Array(text.utf8)
        guard utf8.count == 36 else { return nil }
        for (index, byte) in utf8.enumerated() {
            if [8, 13, 18, 23].contains(index) {
                guard byte == UInt8(ascii: "-") else { return nil }
            } else {
                let isHex =
                    (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                    || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
                    || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(byte)
                guard isHex else { return nil }
            }
        }
        return text.lowercased()
    }

    /// 1-128 of `[A-Za-z0-9._:-]`.
    public static func isValidID(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 128
            && id.utf8.allSatisfy {
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0)
                    || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0)
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0)
                    || [UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: ":"), UInt8(ascii: "-")].contains($0)
            }
    }

    private static func string(_ value: JSONValue, _ field: String) throws -> String {
        guard case .string(let string) = value else {
            throw JobFileError(field: field, "must be a string, not \(value.kind)")
        }
        return string
    }

    private static func instant(_ value: JSONValue, _ field: String) throws -> Date {
        let text = try string(value, field)
        guard let date = Timestamp.parseRFC3339(text) else {
            throw JobFileError(
                field: field, "\"\(text.prefix(64))\" is not an RFC 3339 time such as 2026-11-25T06:00:00Z")
        }
        return date
    }

    private static func quote(_ text: String) -> String { JSONText.quote(text) }
}

extension Timestamp {
    /// RFC 3339 text for a Date, whole seconds, UTC.
    public static func rfc3339(_ date: Date) -> String { rfc3339(Int64(date.timeIntervalSince1970.rounded(.down))) }

    /// Parses RFC 3339 (`2026-11-25T06:00:00Z`, `2026-11-25T07:00:00.5+01:00`); nil if invalid.
    public static func parseRFC3339(_ text: String) -> Date? {
        let b = Array(text.utf8)
        guard b.count >= 20 else { return nil }
        func digits(_ range: Range<Int>) -> Int? {
            guard range.upperBound <= b.count else { return nil }
            var value = 0
            for i in range {
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b[i]) else { return nil }
                value = value * 10 + Int(b[i] - UInt8(ascii: "0"))
            }
            return value
        }
        guard let year = digits(0..<4), b[4] == UInt8(ascii: "-"), let month = digits(5..<7), b[7] == UInt8(ascii: "-"),
            let day = digits(8..<10),
            b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t") || b[10] == UInt8(ascii: " "),
            let hour = digits(11..<13), b[13] == UInt8(ascii: ":"), let minute = digits(14..<16),
            b[16] == UInt8(ascii: ":"),
            let second = digits(17..<19),
            (1...12).contains(month), day >= 1, day <= CivilDate.daysInMonth(year: year, month: month), hour <= 23,
            minute <= 59,
            second <= 60
        else { return nil }
        var index = 19
        var fraction = 0.0
        if index < b.count, b[index] == UInt8(ascii: ".") {
            index += 1
            var scale = 0.1
            let start = index
            while index < b.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b[index]) {
                fraction += Double(b[index] - UInt8(ascii: "0")) * scale
                scale /= 10
                index += 1
            }
            guard index > start, index - start <= 9 else { return nil }
        }
        guard index < b.count else { return nil }
        var offset = 0
        if b[index] == UInt8(ascii: "Z") || b[index] == UInt8(ascii: "z") {
            index += 1
        } else if b[index] == UInt8(ascii: "+") || b[index] == UInt8(ascii: "-") {
            let sign = b[index] == UInt8(ascii: "-") ? -1 : 1
            guard let oh = digits(index + 1..<index + 3), index + 3 < b.count, b[index + 3] == UInt8(ascii: ":"),
                let om = digits(index + 4..<index + 6), oh <= 23, om <= 59
            else { return nil }
            offset = sign * (oh * 3600 + om * 60)
            index += 6
        } else {
            return nil
        }
        guard index == b.count else { return nil }
        let seconds =
            CivilDate(year: year, month: month, day: day).dayNumber * 86400
            + Int64(hour * 3600 + minute * 60 + min(second, 59))
            - Int64(offset)
        return Date(timeIntervalSince1970: Double(seconds) + fraction)
    }
}

/// A stable 64-bit FNV-1a digest of bytes, in hex (Swift's Hasher is seeded per process).
public enum ContentDigest {
    public static func fnv1a64<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01B3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

/// JSON text helpers for hand-written JSON output (stable key order, no Foundation encoder).
public enum JSONText {
    /// A JSON string literal for `text`.
    public static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
