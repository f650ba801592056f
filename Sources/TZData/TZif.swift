/// A parsed TZif file (RFC 8536, versions 1 to 4).
///
/// Parsing is pure over bytes. For version 2 and later files the 64-bit data block and the POSIX
/// TZ footer are used; the version 1 block is skipped (it may be empty in "slim" files).
public struct TZif: Sendable, Equatable {
    /// The file's version byte: 1 for the original format (NUL), else 2, 3 or 4.
    public let version: Int
    /// Transition instants, Unix seconds, strictly ascending.
    public let transitionTimes: [Int64]
    /// For each transition, the index into `types` of the local time type that starts there.
    public let transitionTypes: [Int]
    /// The local time types; `types[0]` governs instants before the first transition.
    public let types: [LocalTimeType]
    /// The POSIX TZ footer, governing instants after the last transition; nil when empty or absent.
    public let footer: POSIXTimeZone?

    /// One local time type: a UT offset, whether it is daylight time, and its abbreviation.
    public struct LocalTimeType: Sendable, Equatable {
        /// Seconds east of UTC.
        public let utcOffset: Int32
        /// Whether this type is daylight saving time.
        public let isDST: Bool
        /// The designation, such as "PST".
        public let abbreviation: String

        public init(utcOffset: Int32, isDST: Bool, abbreviation: String) {
            self.utcOffset = utcOffset
            self.isDST = isDST
            self.abbreviation = abbreviation
        }
    }

    /// Parses a TZif file.
    ///
    /// - Throws: `TZifError` naming what is wrong with the bytes.
    public init(bytes: [UInt8]) throws(TZifError) {
        var reader = ByteReader(bytes: bytes)
        let first = try Header(reader: &reader)
        if first.version == 1 {
            let block = try DataBlock(reader: &reader, header: first, timeSize: 4)
            self.init(version: 1, block: block, footer: nil)
            return
        }
        // Skip the version 1 data block, then read the 64-bit one.
        try reader.skip(first.v1BlockLength)
        let second = try Header(reader: &reader)
        guard second.version == first.version else {
            throw TZifError("the two headers disagree on the version (\(first.version) and \(second.version))")
        }
        let block = try DataBlock(reader: &reader, header: second, timeSize: 8)
        let footer = try Self.readFooter(reader: &reader)
        self.init(version: first.version, block: block, footer: footer)
    }

    private init(version: Int, block: DataBlock, footer: POSIXTimeZone?) {
        self.version = version
        self.transitionTimes = block.times
        self.transitionTypes = block.typeIndices
        self.types = block.types
        self.footer = footer
    }

    private static func readFooter(reader: inout ByteReader) throws(TZifError) -> POSIXTimeZone? {
        guard try reader.byte() == 0x0A else { throw TZifError("the footer does not start with a newline") }
        var text: [UInt8] = []
        while true {
            let byte = try reader.byte()
            if byte == 0x0A { break }
            text.append(byte)
            if text.count > 255 { throw TZifError("the footer is longer than 255 bytes") }
        }
        if text.isEmpty { return nil }
        guard let string = String(validating: text, as: UTF8.self) else {
            throw TZifError("the footer is not valid text")
        }
        do {
            return try POSIXTimeZone(string)
        } catch {
            throw TZifError("the footer \"\(string)\" is not a valid POSIX TZ string: \(error.reason)")
        }
    }
}

/// Why bytes could not be read as a TZif file or a POSIX TZ string.
public struct TZifError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What is wrong, in words.
    public let reason: String

    public init(_ reason: String) { self.reason = reason }

    public var description: String { reason }
}

private struct Header {
    let version: Int
    let isutcnt: Int, isstdcnt: Int, leapcnt: Int, timecnt: Int, typecnt: Int, charcnt: Int

    init(reader: inout ByteReader) throws(TZifError) {
        let magic = try reader.bytes(4)
        guard magic == [0x54, 0x5A, 0x69, 0x66] else { throw TZifError("not a TZif file (bad magic)") }
        let versionByte = try reader.byte()
        switch versionByte {
        case 0: version = 1
        case 0x32: version = 2
        case 0x33: version = 3
        case 0x34: version = 4
        default: throw TZifError("unknown TZif version byte \(versionByte)")
        }
        try reader.skip(15)
        isutcnt = Int(try reader.uint32())
        isstdcnt = Int(try reader.uint32())
        leapcnt = Int(try reader.uint32())
        timecnt = Int(try reader.uint32())
        typecnt = Int(try reader.uint32())
        charcnt = Int(try reader.uint32())
        guard typecnt >= 1 else { throw TZifError("the file declares no local time types") }
        guard isutcnt == 0 || isutcnt == typecnt else { throw TZifError("isutcnt must be 0 or typecnt") }
        guard isstdcnt == 0 || isstdcnt == typecnt else { throw TZifError("isstdcnt must be 0 or typecnt") }
        guard charcnt >= 1 else { throw TZifError("the file declares no designation characters") }
        let limit = 1 << 20
        guard timecnt < limit, typecnt < 256, leapcnt < limit, charcnt < limit else {
            throw TZifError("the header declares implausibly large counts")
        }
    }

    var v1BlockLength: Int {
        timecnt * 5 + typecnt * 6 + charcnt + leapcnt * 8 + isstdcnt + isutcnt
    }
}

private struct DataBlock {
    var times: [Int64] = []
    var typeIndices: [Int] = []
    var types: [TZif.LocalTimeType] = []

    init(reader: inout ByteReader, header: Header, timeSize: Int) throws(TZifError) {
        times.reserveCapacity(header.timecnt)
        for _ in 0..<header.timecnt {
            let time =
                timeSize == 8 ? Int64(bitPattern: try reader.uint64()) : Int64(Int32(bitPattern: try reader.uint32()))
            if let last = times.last, time <= last {
                throw TZifError("transition times are not in ascending order")
            }
            times.append(time)
        }
        for _ in 0..<header.timecnt {
            let index = Int(try reader.byte())
            guard index < header.typecnt else {
                throw TZifError("a transition names local time type \(index), which does not exist")
            }
            typeIndices.append(index)
        }
        var raw: [(Int32, Bool, Int)] = []
        for _ in 0..<header.typecnt {
            let offset = Int32(bitPattern: try reader.uint32())
            let dst = try reader.byte()
            let index = Int(try reader.byte())
            guard offset != Int32.min, dst <= 1 else { throw TZifError("a local time type is malformed") }
            guard index < header.charcnt else { throw TZifError("a designation index is out of range") }
            raw.append((offset, dst == 1, index))
        }
        let chars = try reader.bytes(header.charcnt)
        for (offset, dst, index) in raw {
            let end = chars[index...].firstIndex(of: 0) ?? chars.endIndex
            let name = String(decoding: chars[index..<end], as: UTF8.self)
            types.append(TZif.LocalTimeType(utcOffset: offset, isDST: dst, abbreviation: name))
        }
        // Leap second records, standard/wall and UT/local indicators: not needed for civil time.
        try reader.skip(header.leapcnt * (timeSize + 4) + header.isstdcnt + header.isutcnt)
    }
}

/// A cursor over big-endian bytes that reports truncation as a TZifError.
struct ByteReader {
    let bytes: [UInt8]
    var position = 0

    mutating func byte() throws(TZifError) -> UInt8 {
        guard position < bytes.count else { throw TZifError("the file is truncated") }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func bytes(_ count: Int) throws(TZifError) -> [UInt8] {
        guard count >= 0, bytes.count - position >= count else { throw TZifError("the file is truncated") }
        defer { position += count }
        return Array(bytes[position..<position + count])
    }

    mutating func skip(_ count: Int) throws(TZifError) {
        guard count >= 0, bytes.count - position >= count else { throw TZifError("the file is truncated") }
        position += count
    }

    mutating func uint32() throws(TZifError) -> UInt32 {
        guard bytes.count - position >= 4 else { throw TZifError("the file is truncated") }
        var value: UInt32 = 0
        for i in 0..<4 { value = value << 8 | UInt32(bytes[position + i]) }
        position += 4
        return value
    }

    mutating func uint64() throws(TZifError) -> UInt64 {
        UInt64(try uint32()) << 32 | UInt64(try uint32())
    }
}
