import Foundation
import RefreshCore
import TZData

// A brute-force checker, written apart from the engine: it scans time minute by minute and counts
// by the rules' definitions, using only `ZoneRules.utcOffset(at:)` (itself cross-checked against
// Python). Local day indices come from a running maximum of the wall date, which is what "the
// first instant whose wall time is at or after 00:00" means. All scenario instants are whole
// minutes, so a minute scan is exact.

/// A deterministic random source for reproducible scenarios.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Per-minute local day indices of a zone over a span of time.
struct MinuteDays {
    let first: Int64
    let days: [Int64]

    init(zone: ZoneRules, from first: Int64, through last: Int64) {
        self.first = first
        var days: [Int64] = []
        days.reserveCapacity(Int((last - first) / 60) + 1)
        var runningMax = Int64.min
        var t = first - 36 * 3600  // warm up: wall time may have been ahead before `first`
        while t <= last {
            let wallDay = Int64((Double(t + Int64(zone.utcOffset(at: t))) / 86400).rounded(.down))
            runningMax = max(runningMax, wallDay)
            if t >= first { days.append(runningMax) }
            t += 60
        }
        self.days = days
    }

    func day(_ t: Int64) -> Int64 {
        precondition(t >= first && (t - first) % 60 == 0, "outside the scanned span or not a whole minute")
        return days[Int((t - first) / 60)]
    }
}

/// The rules by definition, at whole-minute instants.
struct BruteRules {
    let limits: Limits
    let dayTables: [String: MinuteDays]
    let blocks: [LearnedBlock]

    func finish(_ a: Attempt, now: Int64) -> Int64 {
        a.finishedAt.map { Int64($0.timeIntervalSince1970) } ?? max(now, Int64(a.startedAt.timeIntervalSince1970))
    }

    /// Whether a refresh of (account, segment) with `zones` (sent zone first) may go out at c.
    func allowed(account: String, segment: String, zones: [ZoneRules], history: [Attempt], at c: Int64, now: Int64)
        -> Bool
    {
        let m = Int64(limits.safetyMarginSeconds)
        let mine = history.filter { $0.account == account && $0.segment == segment }
        // Rule 1: a counting refresh r counts at c while, in some zone of Z(r) (the candidate's
        // zones and those of requests finished within 48 h of r), c - m is not past r's day.
        let counting = mine.filter {
            [.accepted, .reserved, .uncertain, .dryRun, .external].contains($0.outcome)
        }
        var dailyCount = 0
        for a in counting {
            let f = finish(a, now: now)
            var zoneSet = zones.map(\.name)
            for q in mine where q.outcome != .notSent && abs(finish(q, now: now) - f) <= 48 * 3600 {
                if let zone = q.zone { zoneSet.append(zone.name) }
            }
            if zoneSet.contains(where: { dayTables[$0]!.day(c - m) <= dayTables[$0]!.day(f) }) { dailyCount += 1 }
        }
        if dailyCount >= limits.segmentDaily { return false }
        // Rule 2.
        for a in counting where c < finish(a, now: now) + Int64(limits.segmentIntervalSeconds) + m { return false }
        // Rule 3: UTC days.
        var accountCount = 0
        for a in history where a.account == account && a.outcome != .notSent {
            let f = finish(a, now: now)
            if Int64((Double(c - m) / 86400).rounded(.down)) <= Int64((Double(f) / 86400).rounded(.down)) {
                accountCount += 1
            }
        }
        if accountCount >= limits.accountDaily { return false }
        // Rule 5.
        for block in blocks {
            let applies: Bool
            switch block.scope {
            case .account(let a): applies = a == account
            case .segment(let a, let s): applies = a == account && s == segment
            }
            if applies && c < Int64(block.until.timeIntervalSince1970) + m { return false }
        }
        return true
    }

    /// The first whole minute at or after `now` at which the refresh is allowed, scanning to `last`.
    func earliest(
        account: String, segment: String, zones: [ZoneRules], history: [Attempt], now: Int64, through last: Int64
    ) -> Int64? {
        var c = now
        while c <= last {
            if allowed(account: account, segment: segment, zones: zones, history: history, at: c, now: now) { return c }
            c += 60
        }
        return nil
    }

    /// The dispatcher by brute force: each minute, while some segment with due jobs is allowed,
    /// send the one whose best due job ranks first (priority, then sequence); serve all its due jobs.
    func simulate(queue: [QueuedJob], history initial: [Attempt], now: Int64, through last: Int64) -> [String: JobFate]
    {
        var history = initial.map { a -> Attempt in
            var fixed = a
            fixed.finishedAt = Date(timeIntervalSince1970: Double(finish(a, now: now)))
            return fixed
        }
        var fates: [String: JobFate] = [:]
        var pending = queue
        var c = now
        while c <= last, !pending.isEmpty {
            for job in pending where (job.expiresAt.map { Int64($0.timeIntervalSince1970) <= c } ?? false) {
                fates[job.id] = .expire(at: job.expiresAt!)
            }
            pending.removeAll { fates[$0.id] != nil }
            while true {
                let due = pending.filter { Int64($0.notBefore?.timeIntervalSince1970 ?? Double(now)) <= c }
                let ranked = due.sorted { ($0.priority, -$0.sequence) > ($1.priority, -$1.sequence) }
                var chosen: QueuedJob?
                for job in ranked {
                    let zones =
                        [job.zone]
                        + pending.filter { $0.account == job.account && $0.segment == job.segment }.map(\.zone)
                    if allowed(
                        account: job.account, segment: job.segment, zones: zones, history: history, at: c, now: now)
                    {
                        chosen = job
                        break
                    }
                }
                guard let leader = chosen else { break }
                let at = Date(timeIntervalSince1970: Double(c))
                for job in due where job.account == leader.account && job.segment == leader.segment {
                    fates[job.id] = .send(at: at, leader: leader.id)
                }
                pending.removeAll { fates[$0.id] != nil }
                history.append(
                    Attempt(
                        account: leader.account, segment: leader.segment, zone: leader.zone, outcome: .accepted,
                        startedAt: at, finishedAt: at))
            }
            c += 60
        }
        for job in pending { fates[job.id] = job.expiresAt.map { .expire(at: $0) } ?? .never }
        return fates
    }
}

/// A random world: limits, history, blocks and a queue around a DST change of some odd zone.
struct Scenario: CustomStringConvertible {
    static let zonePool = [
        "America/Santiago", "America/Havana", "Atlantic/Azores", "Asia/Beirut", "Africa/Cairo", "Pacific/Apia",
        "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Kiritimati", "Pacific/Pago_Pago", "America/St_Johns",
        "Africa/Casablanca", "UTC", "America/New_York", "Europe/London",
    ]

    let seed: UInt64
    var limits: Limits
    var now: Int64
    var history: [Attempt] = []
    var blocks: [LearnedBlock] = []
    var queue: [QueuedJob] = []
    var segments: [(account: String, segment: String, zone: ZoneRules)] = []
    var zonesUsed: [ZoneRules] = []

    init(seed: UInt64, maxJobs: Int = 10) {
        self.seed = seed
        var rng = SplitMix64(seed: seed)
        func pick<T>(_ items: [T]) -> T { items[Int(rng.next() % UInt64(items.count))] }
        func minutes(_ range: ClosedRange<Int64>) -> Int64 { Int64.random(in: range, using: &rng) * 60 }
        limits = Limits(
            segmentDaily: pick([0, 1, 2, 2, 2, 3]), segmentIntervalSeconds: pick([0, 60, 1800, 3600, 3600, 7200]),
            accountDaily: pick([0, 1, 2, 3, 5, 10, 10]), safetyMarginSeconds: pick([0, 60, 60, 300]))
        if limits.segmentDaily == 0 && rng.next() % 2 == 0 { limits.segmentDaily = 2 }
        if limits.accountDaily == 0 && rng.next() % 2 == 0 { limits.accountDaily = 10 }
        let zones = (0..<3).map { _ in rules(pick(Scenario.zonePool)) }
        // "now" within two days of an offset change of the first zone, in 2011-2030.
        let year = Int.random(in: 2011...2030, using: &rng)
        let yearStart = CivilDate(year: year, month: 1, day: 1).dayNumber * 86400
        let changes = zones[0].offsetChanges(in: yearStart...(yearStart + 366 * 86400))
        let anchor = changes.isEmpty ? yearStart + minutes(0...525_000) : pick(changes).at
        now = (anchor / 60) * 60 + minutes(-2880...2880)
        let accounts = rng.next() % 3 == 0 ? ["a", "b"] : ["a"]
        for account in accounts {
            for s in 0..<Int.random(in: 1...3, using: &rng) {
                segments.append((account, "seg-\(account)\(s)", pick(zones)))
            }
        }
        let outcomes: [AttemptOutcome] = [
            .accepted, .accepted, .accepted, .rejected, .rateLimited, .uncertain, .dryRun, .notSent, .external,
            .unauthorized,
        ]
        for _ in 0..<Int.random(in: 0...7, using: &rng) {
            let target = pick(segments)
            let started = now - minutes(0...2880)
            let zone = rng.next() % 5 == 0 ? pick(zones) : target.zone
            history.append(
                Attempt(
                    account: target.account, segment: target.segment, zone: zone, outcome: pick(outcomes),
                    startedAt: Date(timeIntervalSince1970: Double(started)),
                    finishedAt: Date(timeIntervalSince1970: Double(min(now, started + minutes(0...3))))))
        }
        if rng.next() % 6 == 0, let target = segments.first {
            // One attempt still in flight.
            history.append(
                Attempt(
                    account: target.account, segment: target.segment, zone: target.zone, outcome: .reserved,
                    startedAt: Date(timeIntervalSince1970: Double(now - minutes(0...2))), finishedAt: nil))
        }
        if rng.next() % 4 == 0 {
            let target = pick(segments)
            let scope: LearnedBlock.Scope =
                rng.next() % 2 == 0
                ? .account(target.account) : .segment(account: target.account, segment: target.segment)
            blocks.append(
                LearnedBlock(
                    scope: scope, until: Date(timeIntervalSince1970: Double(now + minutes(-60...1500))), reason: "429"))
        }
        for index in 0..<Int.random(in: 0...maxJobs, using: &rng) {
            let target = pick(segments)
            let notBefore = rng.next() % 2 == 0 ? now + minutes(-120...2880) : nil
            let expires = rng.next() % 5 == 0 ? (notBefore ?? now) + minutes(30...2880) : nil
            queue.append(
                QueuedJob(
                    id: "job\(index)", account: target.account, segment: target.segment,
                    zone: rng.next() % 8 == 0 ? pick(zones) : target.zone, priority: pick([-1, 0, 0, 1]),
                    sequence: Int64(index),
                    notBefore: notBefore.map { Date(timeIntervalSince1970: Double($0)) },
                    expiresAt: expires.map { Date(timeIntervalSince1970: Double($0)) }))
        }
        zonesUsed = zones
    }

    func brute(through last: Int64) -> BruteRules {
        var tables: [String: MinuteDays] = [:]
        for zone in zonesUsed where tables[zone.name] == nil {
            tables[zone.name] = MinuteDays(zone: zone, from: now - 4 * 86400, through: last)
        }
        return BruteRules(limits: limits, dayTables: tables, blocks: blocks)
    }

    var description: String {
        "seed \(seed): now \(Timestamp.rfc3339(now)), limits \(limits), \(history.count) attempts, \(blocks.count) blocks, "
            + "\(queue.count) jobs, zones \(zonesUsed.map(\.name))"
    }
}
