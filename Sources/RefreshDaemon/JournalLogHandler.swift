import Foundation
import Logging
import RefreshCore
import Synchronization

/// The log level, changeable at run time (SIGHUP reload) for every logger sharing it.
public final class LogLevelControl: Sendable {
    private let value: Mutex<Logger.Level>
    public init(_ level: Logger.Level) { value = Mutex(level) }
    public var level: Logger.Level {
        get { value.withLock { $0 } }
        set { value.withLock { $0 = newValue } }
    }
}

/// A swift-log handler writing one line per record to stderr.
///
/// Under systemd (`JOURNAL_STREAM` set) each line starts with the `<N>` syslog priority that
/// journald reads, and carries no timestamp (the journal adds one). Elsewhere lines start with an
/// RFC 3339 UTC time. Metadata is appended as `key=value` with stable keys (`segment.id`,
/// `job.id`, `account`, ...), sorted, quoted when needed. Never give it a secret.
public struct JournalLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    /// The level: the shared `LogLevelControl`'s (a reload changes it for every logger), unless
    /// this copy set its own (e.g. a quieter logger handed to a library).
    public var logLevel: Logger.Level {
        get { own ?? control.level }
        set { own = newValue }
    }
    let control: LogLevelControl
    private var own: Logger.Level?
    let label: String
    let journald: Bool
    let clock: @Sendable () -> Date
    let sink: LogSink

    public init(
        label: String, level: Logger.Level, journald: Bool, sink: LogSink = .standardError, control: LogLevelControl? = nil,
        clock: @escaping @Sendable () -> Date
    ) {
        self.label = label
        self.control = control ?? LogLevelControl(level)
        self.journald = journald
        self.clock = clock
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        var line = journald ? "<\(Self.priority(event.level))>" : Self.timestamp(clock()) + " "
        // Control characters never reach the journal raw: a submitter's NUL, ESC or CR (or a "<0>"
        // after a newline) could forge a record or rewrite a terminal.
        line += "\(event.level.rawValue): \(LogText.escaped("\(event.message)"))"
        for key in merged.keys.sorted() {
            line += " \(key)=\(Self.quoted("\(merged[key]!)"))"
        }
        sink.write(line + "\n")
    }

    /// syslog priorities: journald maps `<N>` at the start of a line to the record's priority.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    static func quoted(_ value: String) -> String {
        if !value.isEmpty, !value.unicodeScalars.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" || $0 == "\\" || LogText.isControl($0) }) {
            return value
        }
        return "\"" + LogText.escaped(value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")) + "\""
    }

    static func timestamp(_ date: Date) -> String {
        Timestamp.rfc3339(Int64(date.timeIntervalSince1970.rounded(.down)))
    }
}

/// Where log lines go: stderr, or a buffer (tests).
public final class LogSink: Sendable {
    private let buffered: Bool
    private let buffer = Mutex("")

    private init(buffered: Bool) { self.buffered = buffered }

    public static let standardError = LogSink(buffered: false)
    /// A sink that keeps lines in memory.
    public static func memory() -> LogSink { LogSink(buffered: true) }

    func write(_ line: String) {
        if buffered {
            buffer.withLock { $0 += line }
        } else {
            FileHandle.standardError.write(Data(line.utf8))
        }
    }

    /// What a memory sink holds.
    public var text: String { buffer.withLock { $0 } }
}

/// Text from outside (job values, file names, SendGrid's bodies) made safe for one log line or a
/// terminal: every control character (C0, DEL, C1, and the line and paragraph separators) is
/// written as an escape (`\n`, `\r`, `\t`, `\x1b`, `\u{85}`), and bytes that are not UTF-8 as `\xNN`.
public enum LogText {
    /// Whether a scalar must not reach a log line or a terminal raw.
    public static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
    }

    /// `text` with its control characters escaped.
    public static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            guard isControl(scalar) else {
                out.append(scalar)
                continue
            }
            let escape: String
            switch scalar {
            case "\n": escape = "\\n"
            case "\r": escape = "\\r"
            case "\t": escape = "\\t"
            default: escape = scalar.value < 0x100 ? "\\x" + hex(UInt8(scalar.value)) : "\\u{" + String(scalar.value, radix: 16) + "}"
            }
            out.append(contentsOf: escape.unicodeScalars)
        }
        return String(out)
    }

    /// Raw bytes (a file name) as printable text: valid UTF-8 with controls escaped, other bytes as `\xNN`.
    public static func escaped(_ bytes: [UInt8]) -> String {
        if let text = String(validating: bytes, as: UTF8.self) { return escaped(text) }
        var out = ""
        var index = 0
        while index < bytes.count {
            // The longest valid UTF-8 sequence starting here, else one escaped byte.
            var taken = false
            for length in stride(from: min(4, bytes.count - index), through: 1, by: -1) {
                if let piece = String(validating: bytes[index..<(index + length)], as: UTF8.self) {
                    out += escaped(piece)
                    index += length
                    taken = true
                    break
                }
            }
            if !taken {
                out += "\\x" + hex(bytes[index])
                index += 1
            }
        }
        return out
    }

    private static func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
    }
}
