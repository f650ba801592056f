import Foundation
import RefreshCore
import TZData
import Testing

/// Helpers: instants as RFC 3339 text, attempts in one line.
func at(_ text: String) -> Date {
    let formatter = ISO8601DateFormatter()
    guard let date = formatter.date(from: text) else { fatalError("bad instant \(text)") }
    return date
}

func attempt(
    _ outcome: AttemptOutcome = .accepted, _ finished: String, segment: String = "s1", account: String = "default",
    zone: String = "America/Chicago"
) -> Attempt {
    Attempt(
        account: account, segment: segment, zone: rules(zone), outcome: outcome, startedAt: at(finished),
        finishedAt: at(finished))
}

func decide(
    _ history: [Attempt], now: String, zone: String = "America/Chicago", segment: String = "s1",
    blocks: [LearnedBlock] = [],
    limits: Limits = .sendGrid
) -> Decision {
    RuleEngine.decide(
        account: "default", segment: segment, zone: rules(zone), history: history, blocks: blocks, limits: limits,
        now: at(now))
}

@Suite("Rule engine")
struct RuleEngineTests {
    /// With no history everything is allowed and every budget is full.
    @Test func freshSegmentIsAllowed() {
        let decision = decide([], now: "2026-11-25T12:00:00Z")
        #expect(decision.verdict == .allowed)
        #expect(decision.binding.isEmpty)
        #expect(decision.budget(.segmentDaily)?.remaining == 2)
        #expect(decision.budget(.accountDaily)?.remaining == 10)
        // Chicago's day ends 2026-11-26T06:00Z; the count resets then, plus the margin.
        #expect(decision.budget(.segmentDaily)?.resetsAt == at("2026-11-26T06:01:00Z"))
        #expect(decision.budget(.accountDaily)?.resetsAt == at("2026-11-26T00:01:00Z"))
    }

    /// I1: two refreshes in the local day block the third until local midnight + margin.
    @Test func segmentDailyBlocksUntilLocalMidnight() {
        let history = [attempt(.accepted, "2026-11-25T08:00:00Z"), attempt(.accepted, "2026-11-25T10:00:00Z")]
        let decision = decide(history, now: "2026-11-25T12:00:00Z")
        #expect(decision.verdict == .notBefore(at("2026-11-26T06:01:00Z")))
        #expect(decision.binding == [.segmentDaily])
        #expect(decision.budget(.segmentDaily)?.remaining == 0)
    }

    /// I1: a refresh from the previous local day does not count, even if it was less than 24 h ago.
    @Test func previousLocalDayDoesNotCount() {
        // 05:30Z is 23:30 Chicago on the 24th.
        let history = [attempt(.accepted, "2026-11-25T05:30:00Z"), attempt(.accepted, "2026-11-25T08:00:00Z")]
        #expect(decide(history, now: "2026-11-25T12:00:00Z").verdict == .allowed)
    }

    /// I1: a refresh whose zone this host cannot load (nil) keeps counting, until a midnight has
    /// passed in every zone known for the segment: never on UTC days in its place.
    @Test func unknownZoneCountsUntilTheLatestKnownMidnight() {
        var lost = attempt(.accepted, "2026-11-25T11:00:00Z")
        lost.zone = nil
        let second = attempt(.accepted, "2026-11-25T13:00:00Z")
        // Candidate in Chicago (day ends 06:00Z): both count until then, as with Chicago's own day.
        #expect(decide([lost, second], now: "2026-11-26T00:30:00Z").verdict == .notBefore(at("2026-11-26T06:01:00Z")))
        // A UTC reading would have freed the segment at 00:01Z: the old fallback's 429.
        #expect(decide([lost, second], now: "2026-11-26T00:30:00Z").verdict != .allowed)
        // Another zone known for the segment (Honolulu, day ends 10:00Z) makes it count longer.
        let honolulu = attempt(.rejected, "2026-11-25T12:00:00Z", zone: "Pacific/Honolulu")
        #expect(
            decide([lost, second, honolulu], now: "2026-11-26T07:00:00Z").verdict
                == .notBefore(at("2026-11-26T10:01:00Z")))
    }

    /// I1: with two zones named for the segment, a refresh counts until midnight has passed in both.
    @Test func twoZonesBothMustReset() {
        // Sent with Asia/Tokyo (day ends 15:00Z) and America/Chicago (day ends 06:00Z next day).
        let history = [
            attempt(.accepted, "2026-11-25T08:00:00Z", zone: "Asia/Tokyo"),
            attempt(.accepted, "2026-11-25T10:00:00Z", zone: "America/Chicago"),
        ]
        let decision = decide(history, now: "2026-11-25T16:00:00Z", zone: "Asia/Tokyo")
        // In Tokyo alone both would have reset at 15:00Z; Chicago's midnight comes later.
        #expect(decision.verdict == .notBefore(at("2026-11-26T06:01:00Z")))
    }

    /// I1: on a 23-hour DST day the reset comes at the real local midnight, not 24 h after the last.
    @Test func resetFollowsDSTDay() {
        // Santiago 2024-09-08 runs from 04:00Z to 2024-09-09T03:00Z (23 h).
        let history = [
            attempt(.accepted, "2024-09-08T05:00:00Z", zone: "America/Santiago"),
            attempt(.accepted, "2024-09-08T07:00:00Z", zone: "America/Santiago"),
        ]
        let decision = decide(history, now: "2024-09-08T12:00:00Z", zone: "America/Santiago")
        #expect(decision.verdict == .notBefore(at("2024-09-09T03:01:00Z")))
    }

    /// I1/I2: rejected, rate-limited, unauthorized and not-sent attempts are no refreshes.
    @Test(arguments: [AttemptOutcome.rejected, .rateLimited, .unauthorized, .forbidden, .notSent, .unrecorded])
    func nonRefreshesDoNotCount(_ outcome: AttemptOutcome) {
        let history = [attempt(outcome, "2026-11-25T11:59:00Z"), attempt(outcome, "2026-11-25T11:30:00Z")]
        let decision = decide(history, now: "2026-11-25T12:00:00Z")
        #expect(decision.verdict == .allowed)
        #expect(decision.budget(.segmentDaily)?.used == 0)
    }

    /// I1/I2: uncertain, dry-run, external and in-flight attempts count like accepted ones.
    @Test(arguments: [AttemptOutcome.uncertain, .dryRun, .external, .reserved])
    func possibleRefreshesCount(_ outcome: AttemptOutcome) {
        let decision = decide([attempt(outcome, "2026-11-25T11:30:00Z")], now: "2026-11-25T12:00:00Z")
        #expect(decision.verdict == .notBefore(at("2026-11-25T12:31:00Z")))
        #expect(decision.budget(.segmentDaily)?.used == 1)
    }

    /// I2: one hour plus the margin from when the last response arrived.
    @Test func intervalRunsFromTheResponse() {
        var sent = attempt(.accepted, "2026-11-25T11:00:00Z")
        sent.finishedAt = at("2026-11-25T11:00:30Z")
        let decision = decide([sent], now: "2026-11-25T11:10:00Z")
        #expect(decision.verdict == .notBefore(at("2026-11-25T12:01:30Z")))
        #expect(decision.binding == [.segmentInterval])
    }

    /// I2: an attempt still in flight holds the segment for an interval from now at least.
    @Test func inFlightHoldsFromNow() {
        let inFlight = Attempt(
            account: "default", segment: "s1", zone: rules("UTC"), outcome: .reserved,
            startedAt: at("2026-11-25T11:00:00Z"), finishedAt: nil)
        #expect(decide([inFlight], now: "2026-11-25T11:05:00Z").verdict == .notBefore(at("2026-11-25T12:06:00Z")))
    }

    /// I3: every request that may have reached SendGrid counts toward the account's UTC day.
    @Test func accountDailyCountsEveryRequest() {
        let outcomes: [AttemptOutcome] = [
            .accepted, .rejected, .rateLimited, .unauthorized, .uncertain, .dryRun, .external, .forbidden, .accepted,
            .rejected,
        ]
        var history = outcomes.enumerated().map { index, outcome in
            attempt(outcome, "2026-11-25T0\(index % 10):00:00Z", segment: "other\(index)")
        }
        history.append(attempt(.notSent, "2026-11-25T10:00:00Z", segment: "other-x"))
        let decision = decide(history, now: "2026-11-25T12:00:00Z")
        #expect(decision.verdict == .notBefore(at("2026-11-26T00:01:00Z")))
        #expect(decision.binding == [.accountDaily])
        #expect(decision.budget(.accountDaily)?.used == 10)
    }

    /// I3: a lowered account limit leaves slots for people using the web UI.
    @Test func loweredAccountLimit() {
        let history = (0..<3).map { attempt(.accepted, "2026-11-25T0\($0):00:00Z", segment: "o\($0)") }
        let limits = Limits(accountDaily: 3)
        #expect(decide(history, now: "2026-11-25T12:00:00Z", limits: limits).binding == [.accountDaily])
    }

    /// I4: the margin is added after the reset, and a zero margin allows at the reset itself.
    @Test func marginAfterReset() {
        let history = [attempt(.accepted, "2026-11-25T08:00:00Z"), attempt(.accepted, "2026-11-25T10:00:00Z")]
        let noMargin = Limits(safetyMarginSeconds: 0)
        #expect(
            decide(history, now: "2026-11-25T12:00:00Z", limits: noMargin).verdict
                == .notBefore(at("2026-11-26T06:00:00Z")))
        #expect(decide(history, now: "2026-11-26T06:00:00Z", limits: noMargin).verdict == .allowed)
        #expect(decide(history, now: "2026-11-26T06:00:59Z").verdict == .notBefore(at("2026-11-26T06:01:00Z")))
        #expect(decide(history, now: "2026-11-26T06:01:00Z").verdict == .allowed)
    }

    /// I5: a learned block for the segment or the account holds until it ends plus the margin.
    @Test func learnedBlocks() {
        let segmentBlock = LearnedBlock(
            scope: .segment(account: "default", segment: "s1"), until: at("2026-11-25T15:00:00Z"), reason: "429")
        let decision = decide([], now: "2026-11-25T12:00:00Z", blocks: [segmentBlock])
        #expect(decision.verdict == .notBefore(at("2026-11-25T15:01:00Z")))
        #expect(decision.binding == [.learnedBlock])
        #expect(decide([], now: "2026-11-25T12:00:00Z", segment: "s2", blocks: [segmentBlock]).verdict == .allowed)
        let accountBlock = LearnedBlock(scope: .account("default"), until: at("2026-11-26T00:00:00Z"), reason: "429")
        #expect(
            decide([], now: "2026-11-25T12:00:00Z", segment: "s2", blocks: [accountBlock]).verdict
                == .notBefore(at("2026-11-26T00:01:00Z")))
    }

    /// Binding rules: every rule that reaches the latest instant is named.
    @Test func severalBindingRules() {
        // Two refreshes at Chicago 23:xx; the interval ends at the same instant as the day.
        let history = [attempt(.accepted, "2026-11-26T04:00:00Z"), attempt(.accepted, "2026-11-26T05:00:00Z")]
        let limits = Limits(segmentIntervalSeconds: 3600, safetyMarginSeconds: 60)
        let decision = decide(history, now: "2026-11-26T05:30:00Z", limits: limits)
        #expect(decision.verdict == .notBefore(at("2026-11-26T06:01:00Z")))
        #expect(decision.binding == [.segmentDaily, .segmentInterval])
    }

    /// A limit of 0 is a decision ("never"), not an error.
    @Test func zeroLimitIsNever() {
        let decision = decide([], now: "2026-11-25T12:00:00Z", limits: Limits(accountDaily: 0))
        #expect(decision.verdict == .never)
        #expect(decision.binding == [.accountDaily])
        #expect(decision.earliest(now: at("2026-11-25T12:00:00Z")) == nil)
    }

    /// Other accounts' and other segments' history does not leak in.
    @Test func scopesAreSeparate() {
        let history = [
            attempt(.accepted, "2026-11-25T11:30:00Z", segment: "s1", account: "other"),
            attempt(.accepted, "2026-11-25T11:40:00Z", segment: "s2"),
        ]
        let decision = decide(history, now: "2026-11-25T12:00:00Z")
        #expect(decision.verdict == .allowed)
        #expect(decision.budget(.accountDaily)?.used == 1)
    }
}
