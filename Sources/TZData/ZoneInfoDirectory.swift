import Foundation

/// The host's tz database: the one place that reads zoneinfo files.
///
/// Zone names are exactly the `Z` (zone) and `L` (link) names listed in the directory's
/// `tzdata.zi` whose compiled file exists, matched case-sensitively. When `tzdata.zi` is missing,
/// the names are those of the TZif files in the tree, except the `posix/` and `right/` copies and
/// `localtime`/`posixrules`. Loaded rules are cached.
public final class ZoneInfoDirectory: Sendable {
    /// The directory read, such as "/usr/share/zoneinfo".
    public let path: String
    /// The data version from `tzdata.zi`'s `# version` line, such as "2026f"; nil if not stated.
    public let version: String?
    /// Every accepted zone name, sorted.
    public let zoneNames: [String]
    private let nameSet: Set<String>
    // An NSLock (pthread mutex) rather than Synchronization.Mutex: ThreadSanitizer sees the former
    // on Linux, not the latter's futex, and CI runs the tests under it.
    private let cacheLock = NSLock()
    nonisolated(unsafe) private var cache: [String: ZoneRules] = [:]

    /// The directory refreshd uses: `$TZDIR` when set and non-empty, else `/usr/share/zoneinfo`.
    public static func defaultPath(environment: [String: String]) -> String {
        if let dir = environment["TZDIR"], !dir.isEmpty { return dir }
        return "/usr/share/zoneinfo"
    }

    /// Opens a zoneinfo directory and reads its list of names and its version.
    ///
    /// - Throws: `TZDataError` when the directory cannot be read or holds no zones.
    public init(path: String) throws(TZDataError) {
        self.path = path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw TZDataError(
                "the tz database directory \(path) does not exist (install the tzdata package, or set TZDIR)")
        }
        var names: [String] = []
        var version: String?
        if let text = try? String(contentsOfFile: path + "/tzdata.zi", encoding: .utf8) {
            (names, version) = Self.parseTzdataZi(text)
            names = names.filter { Self.isTZifFile(path + "/" + $0) }
        } else {
            names = Self.scanTree(path)
        }
        guard !names.isEmpty else {
            throw TZDataError("the tz database directory \(path) holds no time zones")
        }
        self.version = version
        self.zoneNames = names.sorted()
        self.nameSet = Set(names)
    }

    /// Whether `name` is exactly a zone or link name of this database.
    public func contains(_ name: String) -> Bool { nameSet.contains(name) }

    /// The rules of a zone, validating the name first.
    ///
    /// - Throws: `TZDataError` naming the input and suggesting the closest valid names, or naming
    ///   the file that could not be read or parsed.
    public func rules(for name: String) throws(TZDataError) -> ZoneRules {
        guard nameSet.contains(name) else {
            throw TZDataError.unknownZone(name, suggestions: suggestions(for: name))
        }
        if let cached = cacheLock.withLock({ cache[name] }) { return cached }
        let file = path + "/" + name
        guard let data = FileManager.default.contents(atPath: file) else {
            throw TZDataError("cannot read the tz file \(file)")
        }
        let tzif: TZif
        do {
            tzif = try TZif(bytes: [UInt8](data))
        } catch {
            throw TZDataError("the tz file \(file) is not valid TZif: \(error.reason)")
        }
        let rules = ZoneRules(name: name, tzif: tzif)
        cacheLock.withLock { cache[name] = rules }
        return rules
    }

    /// Up to three valid names closest to an invalid input.
    public func suggestions(for input: String) -> [String] {
        ZoneNameSuggester(names: zoneNames).suggestions(for: input)
    }

    /// Zone and link names, and the version, from the text of `tzdata.zi`.
    static func parseTzdataZi(_ text: String) -> (names: [String], version: String?) {
        var names: [String] = []
        var version: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("# version ") {
                version = String(line.dropFirst("# version ".count)).trimmingCharacters(in: .whitespaces)
            } else if line.hasPrefix("Z ") {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                if fields.count >= 2 { names.append(String(fields[1])) }
            } else if line.hasPrefix("L ") {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                if fields.count >= 3 { names.append(String(fields[2])) }
            }
        }
        return (names, version)
    }

    private static func isTZifFile(_ file: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: file) else { return false }
        defer { try? handle.close() }
        let magic = (try? handle.read(upToCount: 4)) ?? Data()
        return magic == Data("TZif".utf8)
    }

    private static func scanTree(_ root: String) -> [String] {
        let skipped: Set<String> = ["posix", "right", "localtime", "posixrules"]
        guard let enumerator = FileManager.default.enumerator(atPath: root) else { return [] }
        var names: [String] = []
        while let relative = enumerator.nextObject() as? String {
            let top = relative.split(separator: "/").first.map(String.init) ?? relative
            if skipped.contains(top) {
                enumerator.skipDescendants()
                continue
            }
            if isTZifFile(root + "/" + relative) { names.append(relative) }
        }
        return names
    }
}

/// Why the tz database or a zone could not be used.
public struct TZDataError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The full message, naming the input or file.
    public let message: String
    /// For an unknown zone name: the closest valid names.
    public let suggestions: [String]

    public init(_ message: String, suggestions: [String] = []) {
        self.message = message
        self.suggestions = suggestions
    }

    /// The error for a name that is not in the database.
    public static func unknownZone(_ name: String, suggestions: [String]) -> TZDataError {
        let shown = name.count > 64 ? String(name.prefix(64)) + "..." : name
        var message = "unknown time zone \"\(shown)\": use an IANA zone name such as \"America/Chicago\" (case matters)"
        if !suggestions.isEmpty {
            message += "; did you mean " + suggestions.map { "\"\($0)\"" }.joined(separator: ", ") + "?"
        }
        return TZDataError(message, suggestions: suggestions)
    }

    public var description: String { message }
}
