/// Finds the valid zone names closest to a mistyped one, for error messages.
import Foundation

struct ZoneNameSuggester {
    let names: [String]

    /// Common abbreviations people type instead of a zone name.
    private static let abbreviations: [String: [String]] = [
        "PST": ["America/Los_Angeles"], "PDT": ["America/Los_Angeles"],
        "MST": ["America/Denver", "America/Phoenix"], "MDT": ["America/Denver"],
        "CST": ["America/Chicago"], "CDT": ["America/Chicago"],
        "EST": ["America/New_York"], "EDT": ["America/New_York"],
        "AKST": ["America/Anchorage"], "HST": ["Pacific/Honolulu"],
        "BST": ["Europe/London"], "GMT": ["Etc/GMT", "Europe/London"], "IST": ["Asia/Kolkata", "Europe/Dublin"],
        "CET": ["Europe/Paris", "Europe/Berlin"], "CEST": ["Europe/Paris", "Europe/Berlin"],
        "EET": ["Europe/Athens"], "MSK": ["Europe/Moscow"], "JST": ["Asia/Tokyo"],
        "AEST": ["Australia/Sydney"], "AEDT": ["Australia/Sydney"], "NZST": ["Pacific/Auckland"],
    ]

    func suggestions(for input: String) -> [String] {
        let valid = Set(names)
        var result: [String] = []
        func add(_ name: String) {
            if valid.contains(name), !result.contains(name), result.count < 3 { result.append(name) }
        }
        guard !input.isEmpty, input.count <= 64 else { return [] }
        let lower = input.lowercased()
        let underscored = lower.replacingOccurrences(of: " ", with: "_")
        for name in names where name.lowercased() == lower || name.lowercased() == underscored { add(name) }
        for name in Self.abbreviations[input.uppercased()] ?? [] { add(name) }
        // "GMT+5" / "UTC-3": the Etc zones, whose sign is inverted (Etc/GMT-5 is UTC+5).
        for prefix in ["GMT", "UTC"] where input.uppercased().hasPrefix(prefix) {
            let rest = input.dropFirst(prefix.count)
            if let sign = rest.first, sign == "+" || sign == "-", let hours = Int(rest.dropFirst()) {
                add("Etc/GMT\(sign == "+" ? "-" : "+")\(hours)")
                add("Etc/GMT\(sign)\(hours)")
            }
        }
        // "posix/Europe/Paris", "zoneinfo/Europe/Paris": a valid name inside a path.
        for name in names where name.contains("/") && input.hasSuffix("/" + name) { add(name) }
        // Paths and other junk get no fuzzy guesses: nothing close to them is what was meant.
        let plain = input.unicodeScalars.allSatisfy {
            $0.properties.isAlphabetic || "0123456789/_+- ".unicodeScalars.contains($0)
        }
        guard result.count < 3, plain, !input.hasPrefix("/") else { return result }
        let lastComponent = underscored.split(separator: "/").last.map(String.init) ?? lower
        let threshold = max(2, lower.count / 3)
        var ranked: [(name: String, distance: Int)] = []
        for name in names {
            let candidate = name.lowercased()
            let candidateLast = candidate.split(separator: "/").last.map(String.init) ?? candidate
            let whole = Self.editDistance(underscored, candidate)
            let last = Self.editDistance(lastComponent, candidateLast) + 1
            let distance = min(whole, last)
            if distance <= threshold { ranked.append((name, distance)) }
        }
        ranked.sort { ($0.distance, $0.name) < ($1.distance, $1.name) }
        for entry in ranked { add(entry.name) }
        return result
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8)
        let b = Array(b.utf8)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
