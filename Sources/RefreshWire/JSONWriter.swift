import Foundation
import RefreshCore
import TZData

// A streaming JSON writer for the wire bodies: an `Encoder` that appends each value's bytes as
// the body's synthesized `encode(to:)` hands them over, in declaration order, with no tree in
// between. Foundation's JSONEncoder builds a boxed value per member first and was most of a
// budget answer's time (Benchmarks/README.md, "Control API against its ceiling").
//
// Its output is the JSON `WireJSON.encoder` writes (the same members and values; members in
// declaration order), which a test holds equal for every body. Shapes a streaming writer cannot
// follow (a container asked for twice, `superEncoder`, a container kept and written later) and
// the Foundation types with special encodings (Data, URL, Decimal) are not written here:
// `WireJSON.encode` then falls back to Foundation's encoder, so every Encodable is answered.

extension WireJSON {
    /// The body's JSON: the streaming writer, or Foundation's encoder for a shape it does not
    /// follow. Throws what either throws (a non-finite number, say).
    public static func encode(_ value: some Encodable) throws -> Data {
        let writer = JSONWriter()
        do {
            try writer.write(value)
            return Data(writer.bytes)
        } catch is JSONWriter.Unfollowed {
            return try encoder.encode(value)
        }
    }
}

/// The output and the one rule every level follows: a value is complete when the call that
/// writes it returns.
final class JSONWriter {
    struct Unfollowed: Error {}

    /// The output, behind a pointer: a class's stored array would be checked for exclusive access
    /// on every append (a measurable share of a budget answer).
    private let storage: UnsafeMutablePointer<[UInt8]>
    /// Set when an encoding did something a stream cannot follow; the whole write is then
    /// abandoned (checked after each value).
    var unfollowed = false

    init() {
        storage = .allocate(capacity: 1)
        storage.initialize(to: [])
        storage.pointee.reserveCapacity(512)
    }

    deinit {
        storage.deinitialize(count: 1)
        storage.deallocate()
    }

    var bytes: [UInt8] { storage.pointee }

    func append(_ byte: UInt8) { storage.pointee.append(byte) }

    func write<T: Encodable>(_ value: T) throws {
        // Metatype comparisons: cheaper than a cast for every member.
        if T.self == Date.self {
            date(value as! Date)
            return
        }
        if T.self == Data.self || T.self == URL.self || T.self == Decimal.self { throw Unfollowed() }
        let encoder = StreamEncoder(writer: self)
        let start = storage.pointee.count
        try value.encode(to: encoder)
        if unfollowed { throw Unfollowed() }
        switch encoder.opened {
        case .none: throw Unfollowed()  // wrote nothing: Foundation's shape decides
        case .keyed: append(UInt8(ascii: "}"))
        case .unkeyed: append(UInt8(ascii: "]"))
        case .single: if storage.pointee.count == start { throw Unfollowed() }
        }
    }

    func string(_ text: String) {
        let out = storage
        out.pointee.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.pointee.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): out.pointee.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x0A: out.pointee.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0D: out.pointee.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0x09: out.pointee.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0x08: out.pointee.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "b")])
            case 0x0C: out.pointee.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "f")])
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.pointee.append(contentsOf: Array("\\u00".utf8))
                out.pointee.append(hex[Int(byte >> 4)])
                out.pointee.append(hex[Int(byte & 0xF)])
            default: out.pointee.append(byte)
            }
        }
        out.pointee.append(UInt8(ascii: "\""))
    }

    func literal(_ text: String) { storage.pointee.append(contentsOf: text.utf8) }

    /// Decimal digits without a String in between.
    func integer(_ value: some BinaryInteger) {
        guard let value = Int64(exactly: value), value != .min else { return literal(String(value)) }
        if value < 0 { append(UInt8(ascii: "-")) }
        digits(UInt64(abs(value)), width: 1)
    }

    /// `value` in decimal, zero-padded to at least `width` digits.
    private func digits(_ value: UInt64, width: Int) {
        var buffer: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: any UInt64 fits
        withUnsafeMutableBytes(of: &buffer) { raw in
            var end = raw.count
            var rest = value
            repeat {
                end -= 1
                raw[end] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            } while rest > 0 || raw.count - end < width
            storage.pointee.append(contentsOf: raw[end...])
        }
    }

    /// An instant as `Timestamp.rfc3339` writes it (`2026-12-06T12:00:00Z`), digit by digit.
    func date(_ date: Date) {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        let day = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let civil = CivilDate(dayNumber: day)
        guard (0...9999).contains(civil.year) else { return string(Timestamp.rfc3339(date)) }
        let second = seconds - day * 86400
        append(UInt8(ascii: "\""))
        digits(UInt64(civil.year), width: 4)
        append(UInt8(ascii: "-"))
        digits(UInt64(civil.month), width: 2)
        append(UInt8(ascii: "-"))
        digits(UInt64(civil.day), width: 2)
        append(UInt8(ascii: "T"))
        digits(UInt64(second / 3600), width: 2)
        append(UInt8(ascii: ":"))
        digits(UInt64(second % 3600 / 60), width: 2)
        append(UInt8(ascii: ":"))
        digits(UInt64(second % 60), width: 2)
        append(UInt8(ascii: "Z"))
        append(UInt8(ascii: "\""))
    }

    func double(_ value: Double, path: [any CodingKey]) throws {
        guard value.isFinite else {
            throw EncodingError.invalidValue(
                value, .init(codingPath: path, debugDescription: "\(value) is not a JSON number"))
        }
        // Integral values as Foundation writes them ("3", not "3.0"); others in Swift's
        // shortest form that reads back to the same Double.
        if value == value.rounded(), abs(value) < 1e15 {
            literal(String(Int64(value)))
        } else {
            literal("\(value)")
        }
    }
}

/// The encoder one value is written through; it remembers which container the value opened so
/// the writer can close it.
private final class StreamEncoder: Encoder {
    enum Opened { case none, keyed, unkeyed, single }

    let writer: JSONWriter
    var opened = Opened.none
    var codingPath: [any CodingKey] = []
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(writer: JSONWriter) { self.writer = writer }

    func open(_ kind: Opened) {
        if opened != .none { writer.unfollowed = true }
        opened = kind
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        open(.keyed)
        writer.append(UInt8(ascii: "{"))
        return KeyedEncodingContainer(KeyedWriter<Key>(writer: writer))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        open(.unkeyed)
        writer.append(UInt8(ascii: "["))
        return UnkeyedWriter(writer: writer)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        open(.single)
        return SingleWriter(writer: writer)
    }
}

/// One value's bytes, for the three containers.
private protocol ValueWriting {
    var writer: JSONWriter { get }
    var codingPath: [any CodingKey] { get }
}

extension ValueWriting {
    func put(_ value: Bool) { writer.literal(value ? "true" : "false") }
    func put(_ value: String) { writer.string(value) }
    func put(_ value: Double) throws { try writer.double(value, path: codingPath) }
    func put(_ value: Float) throws { try writer.double(Double(value), path: codingPath) }
    func putInteger(_ value: some BinaryInteger) { writer.integer(value) }
    func putNil() { writer.literal("null") }
    func putValue<T: Encodable>(_ value: T) throws { try writer.write(value) }
}

private struct KeyedWriter<Key: CodingKey>: KeyedEncodingContainerProtocol, ValueWriting {
    let writer: JSONWriter
    var codingPath: [any CodingKey] = []
    /// Members written so far by this container (a comma before every one but the first).
    private var count = 0

    init(writer: JSONWriter) { self.writer = writer }

    mutating func key(_ key: Key) {
        if count > 0 { writer.append(UInt8(ascii: ",")) }
        count += 1
        writer.string(key.stringValue)
        writer.append(UInt8(ascii: ":"))
    }

    mutating func encodeNil(forKey key: Key) throws { self.key(key); putNil() }
    mutating func encode(_ value: Bool, forKey key: Key) throws { self.key(key); put(value) }
    mutating func encode(_ value: String, forKey key: Key) throws { self.key(key); put(value) }
    mutating func encode(_ value: Double, forKey key: Key) throws { self.key(key); try put(value) }
    mutating func encode(_ value: Float, forKey key: Key) throws { self.key(key); try put(value) }
    mutating func encode(_ value: Int, forKey key: Key) throws { self.key(key); putInteger(value) }
    mutating func encode(_ value: Int8, forKey key: Key) throws { self.key(key); putInteger(value) }
    mutating func encode(_ value: Int16, forKey key: Key) throws { self.key(key); putInteger(value) }
    mutating func encode(_ value: Int32, forKey key: Key) throws { self.key(key); putInteger(value) }
    mutating func encode(_ value: Int64, forKey key: Key) throws { self.key(key); putInteger(value) }
    mutating func encode(_ value: UInt, forKey key: Key) throws { self.key(key); putInteger(value) }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { self.key(key); putInteger(value) }
    mutating func encode(_ value: UInt16, forKey key: Key) throws { self.key(key); putInteger(value) }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { self.key(key); putInteger(value) }
    mutating func encode(_ value: UInt64, forKey key: Key) throws { self.key(key); putInteger(value) }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws { self.key(key); try putValue(value) }

    // A nested container outlives the call that makes it: a stream cannot follow it.
    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type, forKey key: Key
    ) -> KeyedEncodingContainer<NestedKey> {
        writer.unfollowed = true
        return KeyedEncodingContainer(KeyedWriter<NestedKey>(writer: JSONWriter()))
    }
    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        writer.unfollowed = true
        return UnkeyedWriter(writer: JSONWriter())
    }
    mutating func superEncoder() -> any Encoder {
        writer.unfollowed = true
        return StreamEncoder(writer: JSONWriter())
    }
    mutating func superEncoder(forKey key: Key) -> any Encoder {
        writer.unfollowed = true
        return StreamEncoder(writer: JSONWriter())
    }
}

private struct UnkeyedWriter: UnkeyedEncodingContainer, ValueWriting {
    let writer: JSONWriter
    var codingPath: [any CodingKey] = []
    private(set) var count = 0

    init(writer: JSONWriter) { self.writer = writer }

    mutating func next() {
        if count > 0 { writer.append(UInt8(ascii: ",")) }
        count += 1
    }

    mutating func encodeNil() throws { next(); putNil() }
    mutating func encode(_ value: Bool) throws { next(); put(value) }
    mutating func encode(_ value: String) throws { next(); put(value) }
    mutating func encode(_ value: Double) throws { next(); try put(value) }
    mutating func encode(_ value: Float) throws { next(); try put(value) }
    mutating func encode(_ value: Int) throws { next(); putInteger(value) }
    mutating func encode(_ value: Int8) throws { next(); putInteger(value) }
    mutating func encode(_ value: Int16) throws { next(); putInteger(value) }
    mutating func encode(_ value: Int32) throws { next(); putInteger(value) }
    mutating func encode(_ value: Int64) throws { next(); putInteger(value) }
    mutating func encode(_ value: UInt) throws { next(); putInteger(value) }
    mutating func encode(_ value: UInt8) throws { next(); putInteger(value) }
    mutating func encode(_ value: UInt16) throws { next(); putInteger(value) }
    mutating func encode(_ value: UInt32) throws { next(); putInteger(value) }
    mutating func encode(_ value: UInt64) throws { next(); putInteger(value) }
    mutating func encode<T: Encodable>(_ value: T) throws { next(); try putValue(value) }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<
        NestedKey
    > {
        writer.unfollowed = true
        return KeyedEncodingContainer(KeyedWriter<NestedKey>(writer: JSONWriter()))
    }
    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        writer.unfollowed = true
        return UnkeyedWriter(writer: JSONWriter())
    }
    mutating func superEncoder() -> any Encoder {
        writer.unfollowed = true
        return StreamEncoder(writer: JSONWriter())
    }
}

private struct SingleWriter: SingleValueEncodingContainer, ValueWriting {
    let writer: JSONWriter
    var codingPath: [any CodingKey] = []
    /// A single value container holds one value.
    private var written = false

    init(writer: JSONWriter) { self.writer = writer }

    mutating func once() {
        if written { writer.unfollowed = true }
        written = true
    }

    mutating func encodeNil() throws { once(); putNil() }
    mutating func encode(_ value: Bool) throws { once(); put(value) }
    mutating func encode(_ value: String) throws { once(); put(value) }
    mutating func encode(_ value: Double) throws { once(); try put(value) }
    mutating func encode(_ value: Float) throws { once(); try put(value) }
    mutating func encode(_ value: Int) throws { once(); putInteger(value) }
    mutating func encode(_ value: Int8) throws { once(); putInteger(value) }
    mutating func encode(_ value: Int16) throws { once(); putInteger(value) }
    mutating func encode(_ value: Int32) throws { once(); putInteger(value) }
    mutating func encode(_ value: Int64) throws { once(); putInteger(value) }
    mutating func encode(_ value: UInt) throws { once(); putInteger(value) }
    mutating func encode(_ value: UInt8) throws { once(); putInteger(value) }
    mutating func encode(_ value: UInt16) throws { once(); putInteger(value) }
    mutating func encode(_ value: UInt32) throws { once(); putInteger(value) }
    mutating func encode(_ value: UInt64) throws { once(); putInteger(value) }
    mutating func encode<T: Encodable>(_ value: T) throws { once(); try putValue(value) }
}
