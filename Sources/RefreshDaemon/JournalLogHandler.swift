import Foundation
import Logging
import NIOConcurrencyHelpers
import RefreshCore
import RefreshWire

/// The log level, changeable at run time (SIGHUP reload) for every logger sharing it.
public final class LogLevelControl: Sendable {
    private let value: NIOLockedValueBox<Logger.Level>
    public init(_ level: Logger.Level) { value = NIOLockedValueBox(level) }
    public var level: Logger.Level {
        get { value.withLockedValue { $0 } }
        set { value.withLockedValue { $0 = newValue } }
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
        label: String, level: Logger.Level, journald: Bool, sink: LogSink = .standardError,
        control: LogLevelControl? = nil,
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
        if !value.isEmpty,
            !value.unicodeScalars.contains(where: {
                $0 == " " || $0 == "\"" || $0 == "=" || $0 == "\\" || LogText.isControl($0)
            })
        {
            return value
        }
        return "\""
            + LogText.escaped(
                value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")) + "\""
    }

    static func timestamp(_ date: Date) -> String {
        Timestamp.rfc3339(Int64(date.timeIntervalSince1970.rounded(.down)))
    }
}

/// Where log lines go: stderr, or a buffer (tests).
public final class LogSink: Sendable {
    private let buffered: Bool
    private let buffer = NIOLockedValueBox("")

    private init(buffered: Bool) { self.buffered = buffered }

    public static let standardError = LogSink(buffered: false)
    /// A sink that keeps lines in memory.
    public static func memory() -> LogSink { LogSink(buffered: true) }

    func write(_ line: String) {
        if buffered {
            buffer.withLockedValue { $0 += line }
        } else {
            FileHandle.standardError.write(Data(line.utf8))
        }
    }

    /// What a memory sink holds.
    public var text: String { buffer.withLockedValue { $0 } }
}
