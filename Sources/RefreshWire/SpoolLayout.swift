/// The spool directory's layout (refreshd-spool(5)), shared by refreshd's intake and
/// `refreshctl enqueue`: where job files are dropped, which names are finished, where refreshd
/// keeps what it is taking and what it refused.
public struct SpoolLayout: Sendable, Equatable {
    public let directory: String

    public init(directory: String) { self.directory = directory }

    /// Where submitters drop job files (mode 2770, group refreshd).
    public var incoming: String { directory + "/incoming" }
    /// refreshd's own: files moved out of incoming/ while they are read.
    public var active: String { directory + "/active" }
    /// Files whose content was refused, each beside `<name>.error` with the reason.
    public var rejected: String { directory + "/rejected" }

    /// The directories and their modes: incoming/ 2770 (group-writable for submitters, setgid so
    /// files keep the group), active/ and rejected/ 0750.
    public var directories: [(path: String, mode: Int)] {
        [(directory, 0o755), (incoming, 0o2770), (active, 0o750), (rejected, 0o750)]
    }

    /// Whether a name in incoming/ is a finished job file. Writers hide unfinished files as
    /// dot-files or `*.tmp` and rename them in when complete.
    public static func isReady(_ name: some Collection<UInt8>) -> Bool {
        name.first != UInt8(ascii: ".") && !name.reversed().starts(with: ".tmp".utf8.reversed())
    }

    /// A name to write an unfinished file under in incoming/ (never ready), unique per writer.
    public static func temporaryName(writer: String, unique: String) -> String { ".\(writer)-\(unique).tmp" }
}
