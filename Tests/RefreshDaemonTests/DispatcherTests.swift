import FakeSendGrid
import Foundation
import RefreshCore
import RefreshDaemon
import RefreshStore
import RefreshWire
import TZData
import TestSupport
import Testing

/// 2026-11-25T06:00:00Z.
let simStart = Date(timeIntervalSince1970: 1_795_586_400)

@Suite("Dispatcher simulated weeks", .serialized)
struct DispatcherSimulationTests {
    /// 3 weeks, 50 segments in 12 zones, random arrivals and priorities, over real HTTP to the
    /// fake SendGrid: no rule is ever broken, no slot with demand is left unused, and each send
    /// goes out within 1 s (simulated) of the earliest instant the rules plus the margin allow.
    /// On both ledgers: SQLite, and PostgreSQL (a database of its own in the throwaway cluster).
    @Test(arguments: LedgerConfiguration.Backend.allCases)
    func threeWeeksFiftySegmentsTwelveZones(_ backend: LedgerConfiguration.Backend) async throws {
        let zoneNames = [
            "America/Santiago", "America/Havana", "Atlantic/Azores", "Australia/Lord_Howe", "Asia/Kathmandu",
            "Pacific/Apia",
            "Africa/Casablanca", "UTC", "America/New_York", "Pacific/Chatham", "Europe/London", "America/St_Johns",
        ]
        var rng = SplitMix(seed: 20261126)
        let segments = (0..<50).map { (id: segmentID($0), zone: zoneNames[$0 % zoneNames.count]) }
        let end = simStart.addingTimeInterval(21 * 86400)
        var arrivals: [(at: Date, segment: String, zone: String, priority: Int)] = []
        // Busy days (demand above the account's 10) and quiet ones.
        for day in 0..<21 {
            let count = day % 3 == 2 ? 4 : 16
            for _ in 0..<count {
                let segment = segments[Int(rng.next() % 50)]
                let at = simStart.addingTimeInterval(Double(day) * 86400 + Double(rng.next() % 86400))
                arrivals.append((at, segment.id, segment.zone, rng.next() % 5 == 0 ? 10 : 0))
            }
        }
        let harness = try await DispatchHarness(start: simStart, backend: backend)
        try await harness.run(until: end, arrivals: arrivals)

        #expect(harness.fake.violations.isEmpty, "\(harness.fake.violations)")
        let sends = harness.fake.refreshes.filter { $0.status == 202 }.sorted { $0.at < $1.at }
        #expect(sends.count == harness.fake.refreshes.count, "only 202s expected without faults")
        #expect(sends.count > 150, "the account should be busy: \(sends.count) sends")

        // Work conservation and timeliness, judged by the fake's own day arithmetic.
        let zoneOf = Dictionary(uniqueKeysWithValues: segments.map { ($0.id, try! hostZones.rules(for: $0.zone)) })
        let arrivalsBySegment = Dictionary(grouping: arrivals, by: \.segment).mapValues { $0.map(\.at).sorted() }
        var dayEnds: [Date: Date] = [:]
        var late: [String] = []
        for index in 0...sends.count {
            let previous = index == 0 ? simStart : sends[index - 1].at
            let before = sends.prefix(index)
            // The earliest instant any segment with unserved demand could legally have gone out.
            var earliest = Date.distantFuture
            for (segment, times) in arrivalsBySegment {
                let segmentSends = before.filter { $0.segment == segment }.map(\.at)
                let lastSend = segmentSends.max() ?? .distantPast
                guard let demand = times.first(where: { $0 > lastSend }) else { continue }
                let legal = earliestLegal(
                    from: max(demand, previous), zone: zoneOf[segment]!, segmentSends: segmentSends,
                    accountSends: before.map(\.at),
                    dayEnds: &dayEnds)
                earliest = min(earliest, legal)
            }
            if index < sends.count {
                if sends[index].at.timeIntervalSince(earliest) > 1 {
                    late.append(
                        "send \(index) of \(sends[index].segment) at \(sends[index].at), a slot was free at \(earliest)"
                    )
                }
                // And the send itself was legal with the margin.
                let segment = sends[index].segment
                let own = earliestLegal(
                    from: sends[index].at, zone: zoneOf[segment]!,
                    segmentSends: before.filter { $0.segment == segment }.map(\.at),
                    accountSends: before.map(\.at), dayEnds: &dayEnds)
                #expect(own == sends[index].at, "send \(index) went out before its legal instant \(own)")
            } else if earliest < end.addingTimeInterval(-1) {
                late.append("demand left unserved although a slot was free at \(earliest)")
            }
        }
        #expect(late.isEmpty, "\(late.prefix(5))")
        // Every job is accounted for: sent or coalesced into a send, or still waiting.
        let jobs = try await harness.ledger.jobs(state: nil, segmentID: nil, after: nil, limit: 10_000)
        #expect(jobs.count == arrivals.count)
        #expect(jobs.allSatisfy { [.sent, .coalesced, .queued].contains($0.state) })
        #expect(jobs.filter { $0.state == .sent }.count == sends.count)
        #expect(!harness.logs.text.contains(fakeKey))
        await harness.shutdown()
    }

    /// Fault storm: 30 % of refreshes answer 5xx (recorded or not), time out, or lose the
    /// connection. No rule is broken, and no job is lost: each ends sent, coalesced, failed after
    /// max_attempts, or still queued.
    @Test func faultStorm() async throws {
        var rng = SplitMix(seed: 7)
        let harness = try await DispatchHarness(start: simStart, requestTimeout: 0.5)
        let faults: [FakeSendGrid.Fault] = [
            .serverError(recorded: true), .serverError(recorded: false), .delay(seconds: 1.5, recorded: true),
            .delay(seconds: 1.5, recorded: false), .drop(recorded: true), .drop(recorded: false),
        ]
        for _ in 0..<200 {
            if rng.next() % 10 < 3 {
                harness.fake.inject(faults[Int(rng.next() % UInt64(faults.count))])
            } else {
                harness.fake.inject(.status(202))
            }
        }
        var arrivals: [(at: Date, segment: String, zone: String, priority: Int)] = []
        for _ in 0..<80 {
            arrivals.append(
                (
                    simStart.addingTimeInterval(Double(rng.next() % (7 * 86400))), segmentID(Int(rng.next() % 20)),
                    "Europe/Berlin", 0
                ))
        }
        try await harness.run(until: simStart.addingTimeInterval(8 * 86400), arrivals: arrivals)
        await harness.shutdown()
        #expect(harness.fake.violations.isEmpty, "\(harness.fake.violations)")
        let jobs = try await harness.ledger.jobs(state: nil, segmentID: nil, after: nil, limit: 10_000)
        #expect(jobs.count == arrivals.count)
        #expect(jobs.allSatisfy { [.sent, .coalesced, .queued, .failed].contains($0.state) })
        #expect(jobs.filter { $0.state == .failed }.allSatisfy { $0.reason?.contains("no clear answer") == true })
        let outcomes = await Set(try harness.attempts().map(\.outcome))
        #expect(outcomes.contains(.uncertain) && outcomes.contains(.accepted))
    }
}

/// A small deterministic generator (SplitMix64).
struct SplitMix {
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

@Suite("Dispatcher: each answer from SendGrid", .serialized)
struct DispatcherAnswerTests {
    let segment = segmentID(1)

    /// 202: the job is sent (SendGrid's job_id kept), later jobs of the segment coalesce into one refresh; the request is well formed.
    @Test func accepted() async throws {
        let h = try await DispatchHarness(start: simStart, onBehalfOf: "subuser-1")
        let a = try await h.enqueue(segment, zone: "America/Chicago")
        let b = try await h.enqueue(segment, zone: "America/Chicago", priority: 5)
        _ = await h.lane.step()
        await h.shutdown()
        #expect(try await h.job(b).state == .sent)
        #expect(try await h.job(a).state == .coalesced)
        let attempt = try #require(try await h.attempts().first)
        #expect(attempt.outcome == .accepted && attempt.httpStatus == 202 && attempt.sendGridJobID?.count == 36)
        let post = try #require(h.fake.requests.first { $0.method == "POST" })
        #expect(post.uri == "/v3/marketing/segments/2.0/refresh/\(segment)")
        #expect(post.header("Authorization") == "Bearer \(fakeKey)" && post.header("on-behalf-of") == "subuser-1")
        #expect(post.header("User-Agent") == "refreshd/test" && post.header("Content-Type") == "application/json")
        #expect(post.body == #"{"user_time_zone":"America/Chicago"}"#)
        let preflight = try #require(h.fake.requests.first { $0.method == "GET" })
        #expect(preflight.uri == "/v3/marketing/segments/2.0/\(segment)?contacts_sample=false")
        #expect(h.fake.refreshes.count == 1)
    }

    /// 404 and 400: the job fails with SendGrid's reason; the segment is not counted, the account is.
    @Test(arguments: [404, 400])
    func rejected(status: Int) async throws {
        let h = try await DispatchHarness(start: simStart)
        if status == 404 { h.fake.forget(segment: segment) } else { h.fake.inject(.status(400)) }
        let id = try await h.enqueue(segment)
        _ = await h.lane.step()
        let job = try await h.job(id)
        #expect(job.state == .failed && job.reason?.contains("SendGrid answered \(status)") == true)
        let attempt = try #require(try await h.attempts().first)
        #expect(attempt.outcome == .rejected && attempt.httpStatus == status)
        // A new job for the segment may go at once (not counted for the segment), and the account counts 2 requests.
        if status == 400 {
            try await h.enqueue(segment)
            _ = await h.lane.step()
            #expect(h.fake.refreshes.map(\.status) == [400, 202])
        }
        await h.shutdown()
    }

    /// 401 and 403: the job stays queued, the account is paused with a loud error, nothing else is sent.
    @Test(arguments: [401, 403])
    func pausesAccount(status: Int) async throws {
        let h = try await DispatchHarness(start: simStart)
        h.fake.inject(.status(status))
        let id = try await h.enqueue(segment)
        try await h.enqueue(segmentID(2))
        let next = await h.lane.step()
        #expect(next == nil)
        #expect(try await h.job(id).state == .queued)
        #expect(h.lane.status.paused?.contains(String(status)) == true)
        #expect(h.logs.text.contains("critical") && h.logs.text.contains("account paused"))
        h.time.advance(7200)
        _ = await h.lane.step()
        #expect(h.fake.refreshes.count == 1)
        let attempt = try #require(try await h.attempts().first)
        #expect(attempt.outcome == (status == 401 ? .unauthorized : .forbidden))
        await h.shutdown()
    }

    /// 429 with X-RateLimit-Reset as seconds or as a Unix time: the segment is blocked until then
    /// (+ margin), the job requeued; nothing else goes for that segment before.
    @Test(arguments: ["900", "unix"])
    func rateLimitedWithReset(reading: String) async throws {
        let h = try await DispatchHarness(start: simStart, preflight: false)
        let reset = reading == "unix" ? String(Int(simStart.timeIntervalSince1970) + 900) : reading
        h.fake.inject(.rateLimited(headers: ["X-RateLimit-Reset": reset]))
        let id = try await h.enqueue(segment)
        let next = await h.lane.step()
        #expect(try await h.job(id).state == .queued)
        #expect(next == simStart.addingTimeInterval(900 + 60))
        try await h.run(until: simStart.addingTimeInterval(2000))
        #expect(h.fake.refreshes.map(\.status) == [429, 202])
        #expect(h.fake.refreshes[1].at == simStart.addingTimeInterval(960))
        await h.shutdown()
    }

    /// 429 saying nothing: 1 h, then (again) the next local midnight; when the pre-flight shows the
    /// segment itself is free, the account's day is taken as exhausted: paused until 00:00 UTC + margin.
    @Test func rateLimitedWithoutReset() async throws {
        let h = try await DispatchHarness(start: simStart, preflight: false)
        h.fake.inject(.rateLimited(headers: [:]), .rateLimited(headers: [:]))
        try await h.enqueue(segment, zone: "Asia/Tokyo")
        #expect(await h.lane.step() == simStart.addingTimeInterval(3600 + 60))
        h.time.set(simStart.addingTimeInterval(3660))
        let second = await h.lane.step()
        // 2026-11-25T15:00Z is midnight in Tokyo.
        #expect(second == Date(timeIntervalSince1970: 1_795_618_800 + 60))
        await h.shutdown()

        let p = try await DispatchHarness(start: simStart, preflight: true)
        p.fake.inject(.rateLimited(headers: [:]))
        try await p.enqueue(segment)
        try await p.enqueue(segmentID(2))
        let next = await p.lane.step()
        // Both segments wait for 00:00 UTC + margin (the account block).
        #expect(next == Date(timeIntervalSince1970: 1_795_651_200 + 60))
        let blocks = try await p.ledger.blocks(account: "default", now: simStart)
        #expect(blocks.contains { $0.segmentID == nil })
        await p.shutdown()
    }

    /// X-RateLimit headers on an accepted refresh, used like a pre-flight (I5): requests another
    /// client made today are recorded as external (they count for the account), and nothing left
    /// blocks the account until 00:00 UTC, so no 429 follows; without the headers nothing changes.
    @Test func quotaHeadersTeachUsageElsewhere() async throws {
        let h = try await DispatchHarness(start: simStart, preflight: false)
        h.fake.sendQuotaHeaders(true)
        for minute in 1...3 { h.fake.otherClientRequest(at: simStart.addingTimeInterval(-Double(minute) * 60)) }
        try await h.enqueue(segment)
        _ = await h.lane.step()
        let elsewhere = try await h.ledger.attempts(
            since: simStart.addingTimeInterval(-86400), account: "default",
            segmentID: "00000000-0000-0000-0000-000000000000", limit: 100)
        #expect(elsewhere.count == 3 && elsewhere.allSatisfy { $0.outcome == .external }, "\(elsewhere)")
        // Five more elsewhere: our next refresh is the account's tenth; the headers say nothing is left.
        for second in 1...5 { h.fake.otherClientRequest(at: simStart.addingTimeInterval(Double(second))) }
        h.time.advance(10)
        try await h.enqueue(segmentID(2))
        _ = await h.lane.step()
        #expect(h.fake.refreshes.filter { $0.status == 202 }.count == 2)
        let blocks = try await h.ledger.blocks(account: "default", now: h.time.now)
        #expect(blocks.contains { $0.segmentID == nil && $0.reason.contains("X-RateLimit-Remaining 0") }, "\(blocks)")
        // A third segment waits for the next UTC day (the account block), instead of earning a 429.
        try await h.enqueue(segmentID(3))
        let next = await h.lane.step()
        #expect(next.map { $0 >= Date(timeIntervalSince1970: 1_795_651_200) } == true, "\(String(describing: next))")
        #expect(h.fake.violations.isEmpty && h.fake.refreshes.count == 2)
        await h.shutdown()

        // No headers: the ledger's own count stands.
        let plain = try await DispatchHarness(start: simStart, preflight: false)
        for minute in 1...3 { plain.fake.otherClientRequest(at: simStart.addingTimeInterval(-Double(minute) * 60)) }
        try await plain.enqueue(segment)
        _ = await plain.lane.step()
        #expect(
            try await plain.ledger.attempts(since: .distantPast, account: "default", segmentID: nil, limit: 100).count
                == 1)
        await plain.shutdown()
    }

    /// R10: an operator's hold on a segment keeps its jobs from being sent, even a hold placed
    /// after the lane read its queue (the reservation reads the holds itself); other segments go;
    /// released and re-read, the held job goes.
    @Test func holdsKeepJobsBack() async throws {
        let h = try await DispatchHarness(start: simStart, preflight: false)
        try await h.enqueue(segment)
        _ = await h.lane.step()  // the lane reads its queue and sends it
        #expect(h.fake.refreshes.map(\.segment) == [segment])
        // A new job, and a hold on its segment the lane is not told of: the reservation refuses it.
        let other = segmentID(2)
        let hold = try await h.ledger.hold(
            account: "default", segmentID: other, reason: "rebuilding", who: "test", now: simStart)
        try await h.enqueue(other)
        h.lane.wake()
        h.time.advance(5)
        _ = await h.lane.step()
        _ = await h.lane.step()
        #expect(h.fake.refreshes.count == 1, "\(h.fake.refreshes)")
        #expect(try await h.ledger.jobs(state: .queued, segmentID: other, after: nil, limit: 10).count == 1)
        _ = try await h.ledger.release(holdID: hold.id, now: h.time.now)
        h.lane.reread()
        _ = await h.lane.step()
        #expect(h.fake.refreshes.map(\.segment) == [segment, other])
        #expect(h.fake.violations.isEmpty)
        await h.shutdown()
    }

    /// A block lifted by hand (`DELETE /v1/blocks/{id}`): once told to re-read, the lane sends the
    /// held job after the margin instead of waiting for the block's end; without the re-read it
    /// keeps to what it knew.
    @Test func liftedBlockLetsTheJobGo() async throws {
        let h = try await DispatchHarness(start: simStart, preflight: false)
        h.fake.inject(.rateLimited(headers: ["X-RateLimit-Reset": "7200"]))
        try await h.enqueue(segment)
        #expect(await h.lane.step() == simStart.addingTimeInterval(7200 + 60))
        let block = try #require(try await h.ledger.activeBlocks(account: "default", now: simStart).first)
        h.time.set(simStart.addingTimeInterval(600))
        #expect(try await h.ledger.liftBlock(id: block.id, now: h.time.now) != nil)
        #expect(await h.lane.step() == simStart.addingTimeInterval(7200 + 60), "the lane keeps its copy until told")
        h.lane.reread()
        #expect(
            await h.lane.step() == simStart.addingTimeInterval(600 + 60), "the lifted block still holds for the margin")
        h.time.set(simStart.addingTimeInterval(660))
        _ = await h.lane.step()
        #expect(h.fake.refreshes.map(\.status) == [429, 202])
        #expect(h.fake.violations.isEmpty)
        await h.shutdown()
    }

    /// A job whose zone this host's tz data lacks is held: never sent, never coalesced into a send
    /// with another zone, counted in the lane's status; at its expires_at it expires.
    @Test func jobWithUnknownZoneIsHeld() async throws {
        // Tz data with two zones only: America/Chicago and UTC (no US/Pacific).
        let directory = temporaryDirectory() + "/zoneinfo"
        try FileManager.default.createDirectory(atPath: directory + "/America", withIntermediateDirectories: true)
        for name in ["UTC", "America/Chicago"] {
            try FileManager.default.copyItem(
                atPath: ZoneInfoDirectoryPath.host + "/" + name, toPath: directory + "/" + name)
        }
        try "# version test\nZ UTC\nZ America/Chicago\n".write(
            toFile: directory + "/tzdata.zi", atomically: true, encoding: .utf8)
        let h = try await DispatchHarness(start: simStart, zones: try ZoneInfoDirectory(path: directory))
        let held = try await h.enqueue(segment, zone: "US/Pacific", expiresAt: simStart.addingTimeInterval(6 * 3600))
        let chicago = try await h.enqueue(segment, zone: "America/Chicago")
        try await h.run(until: simStart.addingTimeInterval(3 * 3600))
        #expect(h.fake.refreshes.map(\.zone) == ["America/Chicago"], "\(h.fake.refreshes)")
        #expect(try await h.job(chicago).state == .sent)
        #expect(try await h.job(held).state == .queued, "never coalesced into a send with another zone")
        #expect(h.lane.status.held == 1)
        #expect(h.logs.text.contains("job held: its time zone cannot be loaded"))
        try await h.run(until: simStart.addingTimeInterval(7 * 3600))
        #expect(try await h.job(held).state == .expired)
        #expect(h.lane.status.held == 0)
        #expect(h.fake.refreshes.allSatisfy { $0.zone != "UTC" })
        await h.shutdown()
    }

    /// R5: a request that got no answer but that SendGrid recorded is confirmed by the next
    /// pre-flight: its attempt becomes accepted and its job sent; the segment is not refreshed a
    /// second time for it.
    @Test func preflightConfirmsUnanswered() async throws {
        // The fake records a request when it reads it (at the simulated instant then): the client's
        // timeout leaves it 3 s of real time to do so on a loaded machine, before the harness moves
        // simulated time on.
        let h = try await DispatchHarness(start: simStart, maxAttempts: 5, requestTimeout: 3)
        h.fake.inject(.delay(seconds: 5, recorded: true))
        let id = try await h.enqueue(segment)
        try await h.run(until: simStart.addingTimeInterval(2 * 86400))
        let job = try await h.job(id)
        #expect(job.state == .sent && job.reason?.contains("seen by pre-flight") == true, "\(job) \(h.fake.refreshes)")
        #expect(h.fake.refreshes.count == 1, "one refresh only: \(h.fake.refreshes)")
        #expect(try await h.attempts().map(\.outcome) == [.accepted])
        #expect(h.logs.text.contains("SendGrid recorded earlier unanswered requests"))
        #expect(h.fake.violations.isEmpty)
        await h.shutdown()
    }

    /// 5xx, a timeout and a reset after the request was written: uncertain (counts for the
    /// segment and the account), requeued; after max_attempts the job fails.
    @Test func noClearAnswer() async throws {
        // No pre-flight: SendGrid recorded each of them, which a pre-flight would confirm (the job
        // would count as sent, see preflightConfirmsUnanswered); here the tries run out.
        // 3 s of real time for the fake to read each request (see preflightConfirmsUnanswered).
        let h = try await DispatchHarness(start: simStart, preflight: false, maxAttempts: 3, requestTimeout: 3)
        h.fake.inject(.serverError(recorded: true), .delay(seconds: 5, recorded: true), .drop(recorded: true))
        let id = try await h.enqueue(segment)
        try await h.run(until: simStart.addingTimeInterval(2 * 86400))
        let job = try await h.job(id)
        #expect(
            job.state == .failed && job.tries == 3 && job.reason?.contains("after 3 tries") == true,
            "\(job) \(h.fake.refreshes)")
        let attempts = try await h.attempts()
        #expect(attempts.count == 3 && attempts.allSatisfy { $0.outcome == .uncertain })
        // Each counted for the segment: at least an hour (+ margin) apart.
        for (a, b) in zip(attempts, attempts.dropFirst()) {
            #expect(b.startedAt.timeIntervalSince(a.finishedAt!) >= 3660)
        }
        #expect(h.fake.violations.isEmpty)
        await h.shutdown()
    }

    /// Connection refused: nothing reached SendGrid; not counted, requeued with backoff.
    @Test func connectionRefused() async throws {
        // A port that was just free: nothing listens there.
        let h = try await DispatchHarness(start: simStart, baseURL: "http://127.0.0.1:9")
        let id = try await h.enqueue(segment)
        let next = try #require(await h.lane.step())
        #expect(try await h.job(id).state == .queued)
        #expect(try await h.job(id).retryAt == next)
        #expect(next > simStart && next <= simStart.addingTimeInterval(10))
        let attempt = try #require(try await h.attempts().first)
        #expect(attempt.outcome == .notSent && !attempt.outcome.countsTowardAccount)
        #expect(h.lane.status.lastError?.contains("not reachable") == true)
        await h.shutdown()
    }

    /// Dry-run: everything but the request; the outcome counts like an accepted refresh.
    @Test func dryRun() async throws {
        let h = try await DispatchHarness(start: simStart, dryRun: true)
        let id = try await h.enqueue(segment)
        try await h.enqueue(segment)
        _ = await h.lane.step()
        #expect(try await h.job(id).state == .sent)
        #expect(try await h.attempts().map(\.outcome) == [.dryRun])
        #expect(h.fake.requests.isEmpty)
        // The second job waits for the interval, exactly as if the refresh had been sent.
        try await h.enqueue(segment)
        #expect(await h.lane.step() == simStart.addingTimeInterval(3660))
        await h.shutdown()
    }

    /// A refresh made in the web UI is caught by the pre-flight: recorded as external at
    /// last_refreshed_at, and the rules hold the job until an hour after it.
    @Test func webUIRefreshCaughtByPreflight() async throws {
        let h = try await DispatchHarness(start: simStart)
        h.fake.webUIRefresh(segment: segment, zone: "UTC", at: simStart.addingTimeInterval(-600))
        try await h.enqueue(segment)
        let next = await h.lane.step()
        #expect(h.fake.refreshes.isEmpty)
        #expect(next == simStart.addingTimeInterval(-600 + 3600 + 60))
        #expect(try await h.attempts().map(\.outcome) == [.external])
        try await h.run(until: simStart.addingTimeInterval(7200))
        #expect(h.fake.refreshes.map(\.status) == [202] && h.fake.violations.isEmpty)
        await h.shutdown()
    }

    /// Automatic refreshes move last_refreshed_at every hour; that alone never holds a job back.
    @Test func automaticRefreshesDoNotBlock() async throws {
        let h = try await DispatchHarness(start: simStart)
        h.fake.automaticRefreshSeconds = 3600
        try await h.enqueue(segment)
        _ = await h.lane.step()
        #expect(h.fake.refreshes.map(\.status) == [202])
        await h.shutdown()
    }

    /// An unanswered request that SendGrid did not record stops counting for the segment once a
    /// later pre-flight shows it (the account still counts it).
    @Test func unrecordedUncertainFreesTheSegment() async throws {
        let h = try await DispatchHarness(start: simStart, requestTimeout: 0.5)
        h.fake.inject(.serverError(recorded: false), .serverError(recorded: false))
        try await h.enqueue(segment)
        try await h.run(until: simStart.addingTimeInterval(3 * 3600))
        let outcomes = try await h.attempts().map(\.outcome)
        #expect(outcomes.first == .unrecorded)
        #expect(outcomes.contains(.accepted))
        #expect(h.fake.violations.isEmpty)
        await h.shutdown()
    }

    /// Wall-clock steps: backwards, a refresh recorded "in the future" still holds the segment
    /// for its hour; forwards, work that became due goes at once.
    @Test func clockSteps() async throws {
        let h = try await DispatchHarness(start: simStart)
        try await h.enqueue(segment)
        _ = await h.lane.step()
        h.time.set(simStart.addingTimeInterval(-7200))
        try await h.enqueue(segment)
        #expect(await h.lane.step() == simStart.addingTimeInterval(3660))
        #expect(h.fake.refreshes.count == 1)
        h.time.set(simStart.addingTimeInterval(86400))
        _ = await h.lane.step()
        #expect(h.fake.refreshes.count == 2 && h.fake.violations.isEmpty)
        await h.shutdown()
    }

    /// not_before holds a job back; past expires_at it expires unsent.
    @Test func notBeforeAndExpiry() async throws {
        let h = try await DispatchHarness(start: simStart)
        let later = try await h.enqueue(segment, notBefore: simStart.addingTimeInterval(500))
        try await h.enqueue(segmentID(2))
        // Segment 2 goes at once; segment 1's job waits for its not_before.
        #expect(await h.lane.step() == simStart.addingTimeInterval(500))
        // Queued after segment 2's refresh, it needs a new one, which the interval holds past its expiry.
        let expiring = try await h.enqueue(segmentID(2), expiresAt: simStart.addingTimeInterval(1000))
        try await h.run(until: simStart.addingTimeInterval(5000))
        #expect(try await h.job(later).state == .sent)
        #expect(try await h.job(expiring).state == .expired)
        #expect(h.fake.refreshes.count == 2)
        await h.shutdown()
    }
}

@Suite("Dispatcher loop in real time", .serialized, .timeLimit(.minutes(1)))
struct DispatcherLoopTests {
    /// The loop sleeps until the next instant (never polling), a wake-up brings a new job out at
    /// once, and stop ends it; the fake and the lane run on the real clock here.
    @Test func sleepsWakesAndStops() async throws {
        let fake = FakeSendGrid(apiKey: fakeKey, zones: hostZones)
        let url = try await fake.start()
        let ledger = try SQLiteLedger(path: temporaryDirectory() + "/ledger.sqlite", now: Date())
        let client = SendGridClient(baseURL: url, requestTimeoutSeconds: 2, connectTimeoutSeconds: 1, version: "test")
        let lane = AccountLane(
            account: AccountConfiguration(name: "default", apiKey: APIKey(fakeKey), apiKeySource: "test"),
            ledger: ledger, client: client,
            zones: hostZones, limits: .sendGrid, preflight: true, maxAttempts: 5, now: { Date() },
            logger: .init(label: "test"))
        let service = DispatcherService(lanes: [lane], client: client, clock: ContinuousClock(), maxSleep: .seconds(60))
        // The loop on its own thread: other tests' synchronous work cannot starve it.
        let loop = Task(executorPreference: DedicatedExecutor("lane")) {
            await lane.run(clock: ContinuousClock(), maxSleep: .seconds(60))
        }

        // not_before 0.8 s ahead: out at that instant, not before, not a minute later.
        let notBefore = Date().addingTimeInterval(0.8)
        _ = try ledger.enqueue(
            NewJob(source: "test", account: "default", segmentID: segmentID(1), timeZone: "UTC", notBefore: notBefore),
            now: Date())
        service.wakeUp()
        #expect(await eventually(timeout: 5) { fake.refreshes.count == 1 })
        let first = try #require(try ledger.attempts(since: .distantPast, account: nil, segmentID: nil, limit: 1).first)
        // At the instant (a loaded 2-core CI machine may add a second or two), never a minute later.
        #expect(first.startedAt >= notBefore && first.startedAt < notBefore.addingTimeInterval(10))

        // Idle now (the only job is sent): a new job plus a wake-up goes out within moments.
        let queuedAt = Date()
        _ = try ledger.enqueue(
            NewJob(source: "test", account: "default", segmentID: segmentID(2), timeZone: "UTC"), now: Date())
        service.wakeUp()
        #expect(await eventually(timeout: 5) { fake.refreshes.count == 2 })
        #expect(Date().timeIntervalSince(queuedAt) < 10)
        #expect(await eventually(timeout: 5) { lane.status.queued == 0 && lane.status.lastStepAt != nil })

        // stop() ends the loop (the suite's time limit catches a loop that would not end).
        lane.stop()
        _ = await loop.value
        await client.shutdown()
        await fake.stop()
    }

    /// Accounts are independent lanes: one account's slow request does not hold up another's.
    @Test func accountsRunInParallel() async throws {
        let fake = FakeSendGrid(apiKey: fakeKey, zones: hostZones)
        let url = try await fake.start()
        fake.inject(segment: segmentID(1), .delay(seconds: 8, recorded: true))
        let ledger = try SQLiteLedger(path: temporaryDirectory() + "/ledger.sqlite", now: Date())
        let client = SendGridClient(baseURL: url, requestTimeoutSeconds: 10, connectTimeoutSeconds: 1, version: "test")
        let lanes = ["slow", "quick"].map { name in
            AccountLane(
                account: AccountConfiguration(name: name, apiKey: APIKey(fakeKey), apiKeySource: "test"),
                ledger: ledger, client: client,
                zones: hostZones, limits: .sendGrid, preflight: false, maxAttempts: 5, now: { Date() },
                logger: .init(label: "test"))
        }
        let service = DispatcherService(lanes: lanes, client: client, clock: ContinuousClock(), maxSleep: .seconds(60))
        _ = try ledger.enqueue(
            NewJob(source: "test", account: "slow", segmentID: segmentID(1), timeZone: "UTC"), now: Date())
        let loops = lanes.map { lane in
            Task(executorPreference: DedicatedExecutor("lane-\(lane.name)")) {
                await lane.run(clock: ContinuousClock(), maxSleep: .seconds(60))
            }
        }
        #expect(await eventually(timeout: 5) { fake.refreshes.count == 1 })
        let start = Date()
        _ = try ledger.enqueue(
            NewJob(source: "test", account: "quick", segmentID: segmentID(2), timeZone: "UTC"), now: Date())
        service.wakeUp()
        #expect(await eventually(timeout: 6) { fake.refreshes.count == 2 })
        #expect(Date().timeIntervalSince(start) < 6, "the quick account waited for the slow one (8 s)")
        for lane in lanes { lane.stop() }
        for loop in loops { _ = await loop.value }
        await client.shutdown()
        await fake.stop()
    }
}
