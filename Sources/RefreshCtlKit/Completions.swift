import ArgumentParser
import Foundation
import Glibc
import RefreshWire
import TZData

/// Shell completion candidates that a fixed list cannot give. The shells' completion scripts
/// (`refreshctl --generate-completion-script bash|zsh|fish`, installed by the package) call back
/// into refreshctl for these when TAB is pressed:
/// - `--time-zone`: the zone names of the host's tz database (the one refreshd reads);
/// - `show` and `cancel`: the ids of queued jobs, asked from the daemon when it is reachable;
/// - `--account`: the accounts of refreshd's configuration (or of the running daemon).
/// Completion never fails loudly: whatever cannot be read gives no candidates.
enum Completions {
    static let timeZone = CompletionKind.custom { @Sendable _, _, prefix in zoneNames(prefix: prefix) }
    static let queuedJob = CompletionKind.custom { @Sendable words, _, prefix in
        queuedJobIDs(words: words, prefix: prefix)
    }
    static let account = CompletionKind.custom { @Sendable words, _, prefix in accounts(words: words, prefix: prefix) }

    /// Zone names starting with `prefix`, in the tz database's own spelling.
    static func zoneNames(prefix: String) -> [String] {
        guard let zones = try? hostZoneDirectory() else { return [] }
        return zones.zoneNames.filter { $0.hasPrefix(prefix) }.sorted()
    }

    /// The ids of queued jobs (first 1,000, oldest first) starting with `prefix`.
    static func queuedJobIDs(words: [String], prefix: String) -> [String] {
        guard
            let client = try? ControlClient.resolve(
                socket: value(of: "--socket", in: words), config: value(of: "--config", in: words)),
            let answer = try? client.call(.jobs, query: [("state", "queued"), ("limit", "1000")])
        else { return [] }
        let page = try? answer.decode(JobsPage.self)
        return (page?.jobs ?? []).map { String($0.id) }.filter { $0.hasPrefix(prefix) }
    }

    /// Configured account names starting with `prefix`: from refreshd's config file when it is
    /// readable (or absent: the built-in `default`), else from the running daemon's budget.
    static func accounts(words: [String], prefix: String) -> [String] {
        var names: [String] = []
        var loader = ConfigurationLoader(environment: ProcessInfo.processInfo.environment, userID: getuid())
        if let configuration = try? loader.load(explicitPath: value(of: "--config", in: words), resolvingKeys: false) {
            names = configuration.accounts.map(\.name)
        } else if let client = try? ControlClient.resolve(socket: value(of: "--socket", in: words), config: nil),
            let answer = try? client.call(.budget)
        {
            names = ((try? answer.decode(BudgetAnswer.self))?.accounts ?? []).map(\.account)
        }
        return names.filter { $0.hasPrefix(prefix) }.sorted()
    }

    /// The value given to `flag` on the command line being completed (`--flag value` or
    /// `--flag=value`), with shell quotes taken off.
    static func value(of flag: String, in words: [String]) -> String? {
        for (index, word) in words.enumerated() {
            if word == flag, index + 1 < words.count { return unquoted(words[index + 1]) }
            if word.hasPrefix(flag + "=") { return unquoted(String(word.dropFirst(flag.count + 1))) }
        }
        return nil
    }

    private static func unquoted(_ word: String) -> String {
        var text = word
        if text.count >= 2, let first = text.first, first == "'" || first == "\"", text.last == first {
            text = String(text.dropFirst().dropLast())
        }
        return text.replacingOccurrences(of: "\\ ", with: " ")
    }
}
