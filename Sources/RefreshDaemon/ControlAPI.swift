import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import RefreshCore
import RefreshStore
import RefreshViews
import RefreshWire
import TZData

/// What the control API reads and steers: the ledger, the configuration, the dispatcher's lanes,
/// intake. Built once in the composition root.
public final class ControlState: @unchecked Sendable {
    public let ledger: any Ledger
    public let version: String
    public let startedAt: Date
    public let now: @Sendable () -> Date
    public let metrics: RefreshdMetrics
    private let lock = NSLock()
    private var _configuration: DaemonConfiguration
    private var _zones: ZoneInfoDirectory
    private let lanes: @Sendable () -> [LaneStatus]
    private let lane: @Sendable (String) -> LaneStatus?
    private let intake: @Sendable () -> SpoolIntake.IntakeState?
    private let wake: @Sendable () -> Void
    private let reread: @Sendable () -> Void
    /// The composition root's logger (a lifted block is worth a line in the journal).
    public let logger: Logger
    /// Where handlers do their blocking work.
    public let work: APIWork
    /// The last plan served, reused while nothing it depends on changed.
    let planCache = PlanCache()
    /// Each account's ledger rows the budget questions read, kept while the ledger is unchanged.
    let views: AccountViews
    /// Goes up when the configuration or the tz data is replaced (part of the plan cache's key).
    private var settingsGeneration: UInt64 = 0

    public init(
        ledger: any Ledger, zones: ZoneInfoDirectory, configuration: DaemonConfiguration, version: String,
        startedAt: Date,
        now: @escaping @Sendable () -> Date, metrics: RefreshdMetrics, lanes: @escaping @Sendable () -> [LaneStatus],
        lane: (@Sendable (String) -> LaneStatus?)? = nil, intake: @escaping @Sendable () -> SpoolIntake.IntakeState?,
        wake: @escaping @Sendable () -> Void, reread: @escaping @Sendable () -> Void = {},
        logger: Logger = Logger(label: "refreshd", factory: { _ in SwiftLogNoOpLogHandler() }),
        work: APIWork = APIWork()
    ) {
        self.work = work
        self.views = AccountViews(ledger: ledger, work: work)
        self.reread = reread
        self.logger = logger
        self.lane = lane ?? { name in lanes().first { $0.account == name } }
        self.ledger = ledger
        self._zones = zones
        self._configuration = configuration
        self._accountNames = Set(configuration.accounts.map(\.name))
        self._limits = Dictionary(
            configuration.accounts.map { ($0.name, configuration.limits(for: $0.name)) },
            uniquingKeysWith: { a, _ in a })
        self.version = version
        self.startedAt = startedAt
        self.now = now
        self.metrics = metrics
        self.lanes = lanes
        self.intake = intake
        self.wake = wake
    }

    public var configuration: DaemonConfiguration {
        get { lock.withLock { _configuration } }
        set {
            lock.withLock {
                _configuration = newValue
                _accountNames = Set(newValue.accounts.map(\.name))
                _limits = Dictionary(
                    newValue.accounts.map { ($0.name, newValue.limits(for: $0.name)) }, uniquingKeysWith: { a, _ in a })
                settingsGeneration += 1
            }
        }
    }
    private var _accountNames: Set<String> = []
    private var _limits: [String: Limits] = [:]

    /// An account's limits (a dictionary lookup, not a walk over the configured accounts).
    func limits(for account: String) -> Limits {
        lock.withLock { _limits[account] ?? _configuration.limits(for: account) }
    }

    /// Whether an account is configured (a set lookup: the budget route asks on every request).
    func hasAccount(_ name: String) -> Bool { lock.withLock { _accountNames.contains(name) } }

    /// The tz data in use (replaced by a reload or a tzdata upgrade).
    public var zones: ZoneInfoDirectory {
        get { lock.withLock { _zones } }
        set {
            lock.withLock {
                _zones = newValue
                settingsGeneration += 1
            }
        }
    }

    /// How many times the plan was computed rather than served from its cache.
    public var planComputations: Int { planCache.computations }

    /// What the plan depends on besides "now": the ledger's writes, the settings, the pauses.
    var planKey: PlanCache.Key {
        PlanCache.Key(
            ledger: ledger.changeCount, settings: lock.withLock { settingsGeneration },
            paused: laneStatuses.filter { $0.paused != nil }.map(\.account).sorted())
    }

    var laneStatuses: [LaneStatus] { lanes() }
    /// One account's lane status, without reading every lane.
    func laneStatus(_ account: String) -> LaneStatus? { lane(account) }
    var intakeState: SpoolIntake.IntakeState? { intake() }
    func wakeDispatcher() { wake() }
    /// Has the dispatcher read its queue, history and blocks again (after a block is lifted).
    func rereadLedger() { reread() }
}

extension ControlState {
    /// The account's own budgets now (requests of the last two UTC days, optionally its blocks),
    /// as the status line and the metrics report them (two indexed reads; GET /v1/budget asks the
    /// account's view instead).
    func accountBudgets(_ account: String, includeBlocks: Bool, now t: Date) async throws -> [RuleBudget] {
        AccountView.accountBudgets(
            account: account,
            attempts: try await ledger.attempts(
                since: Date(timeIntervalSince1970: HistoryWindows.accountSince(t)), account: account, segmentID: nil,
                limit: Int.max),
            blocks: includeBlocks ? try await ledger.blocks(account: account, now: t) : [],
            limits: configuration.limits(for: account), now: t)
    }
}

extension AccountView {
    /// The account's own budgets at `now` (I3, and its blocks when asked).
    func accountBudgets(includeBlocks: Bool, limits: Limits, now t: Date) -> [RuleBudget] {
        Self.accountBudgets(
            account: account, attempts: attempts, blocks: includeBlocks ? blocks : [], limits: limits, now: t)
    }

    /// The account's own budgets from its attempts and blocks (any order, any wider window): the
    /// one computation behind the status line, the metrics and GET /v1/budget.
    static func accountBudgets(
        account: String, attempts: [StoredAttempt], blocks: [StoredBlock], limits: Limits, now t: Date
    ) -> [RuleBudget] {
        // The account's rule (I3) counts on UTC days: the segments' zones play no part.
        let since = HistoryWindows.accountSince(t)
        let history = attempts.filter { $0.startedAt.timeIntervalSince1970 >= since }.map {
            $0.engineAttempt(resolve: { _ in nil })
        }
        let blocksSince = HistoryWindows.blocksSince(t)
        let accountBlocks = blocks.filter { $0.segmentID == nil && $0.until.timeIntervalSince1970 >= blocksSince }
        return RuleEngine.accountBudgets(
            account: account, history: history, blocks: accountBlocks.map(\.engineBlock), limits: limits, now: t)
    }
}

/// An error as the API answers it: `{"error": {"code", "message"}}` with the status.
public struct APIError: Error, HTTPResponseError, Sendable {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public static func badRequest(_ field: String, _ message: String) -> APIError {
        APIError(.badRequest, "invalid_\(field)", "\(field): \(message)")
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        ControlAPI.json(ErrorAnswer(code: code, message: message), status: status)
    }
}

/// Turns every error into the JSON error shape (unknown routes included).
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return ControlAPI.json(ErrorAnswer(code: error.code, message: error.message), status: error.status)
        } catch let error as HTTPError
            where error.status == .notFound && !Route.allowedMethods(for: request.uri.path).isEmpty
        {
            let allowed = Route.allowedMethods(for: request.uri.path)
            var response = ControlAPI.json(
                ErrorAnswer(
                    code: "method_not_allowed",
                    message:
                        "\(request.method) is not allowed on \(request.uri.path); allowed: \(allowed.joined(separator: ", "))"
                ), status: .methodNotAllowed)
            response.headers[.allow] = allowed.joined(separator: ", ")
            return response
        } catch let error as HTTPError {
            let code =
                error.status == .notFound
                ? "not_found" : error.status == .methodNotAllowed ? "method_not_allowed" : "http_\(error.status.code)"
            let message =
                error.status == .notFound
                ? "no such route: \(request.method) \(request.uri.path) (see GET /v1/openapi.json)"
                : (error.body ?? error.status.reasonPhrase)
            return ControlAPI.json(ErrorAnswer(code: code, message: message), status: error.status)
        } catch let error as LedgerError {
            logger.error("control API: ledger error", metadata: ["error": "\(error)"])
            var response = ControlAPI.json(
                ErrorAnswer(code: "ledger_\(error.code.rawValue)", message: error.message), status: .serviceUnavailable)
            if error.code == .busy || error.code == .notWritable { response.headers[.retryAfter] = "5" }
            return response
        } catch {
            logger.error("control API: unexpected error", metadata: ["error": "\(error)"])
            return ControlAPI.json(
                ErrorAnswer(code: "internal", message: "internal error: \(type(of: error))"),
                status: .internalServerError)
        }
    }
}

/// On a TCP listener (reachable by every local user), routes that change state need the API token.
struct WriteTokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: String?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        // POST /v1/plan only asks "what if": it changes nothing and needs no token.
        let readOnly = request.method == .post && request.uri.path == Route.whatIf.path
        if !readOnly,
            request.method == .post || request.method == .delete || request.method == .put || request.method == .patch
        {
            guard let token else {
                await drain(request)
                throw APIError(
                    .forbidden, "forbidden",
                    "changes are refused on the TCP listener unless api_token_file is configured; use the unix socket")
            }
            guard let header = request.headers[.authorization], constantTimeEqual(header, "Bearer " + token) else {
                await drain(request)
                throw APIError(
                    .forbidden, "forbidden",
                    "this route changes state: send the API token as 'Authorization: Bearer <token>'")
            }
        }
        return try await next(request, context)
    }

    /// Reads a refused request's body (bounded) first: answering while the client is still
    /// sending, then closing, cuts its request off (it sees a reset, not the 403).
    private func drain(_ request: Request) async {
        _ = try? await request.body.collect(upTo: JobFile.maxBytes)
    }

    private func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for i in 0..<x.count { difference |= x[i] ^ y[i] }
        return difference == 0
    }
}

/// The control API (its routes are `Route`'s; documented in `ControlAPI.openAPIDocument`, served
/// at /v1/openapi.json).
public enum ControlAPI {
    /// The router; `writeToken` given (even nil) means a TCP listener: writes need the token.
    public static func router(state: ControlState, logger: Logger, tcp: Bool, writeToken: String?) -> Router<
        BasicRequestContext
    > {
        let router = Router()
        // Requests, durations and errors per route (swift-metrics; the registry /metrics shows).
        router.middlewares.add(MetricsMiddleware())
        router.middlewares.add(JSONErrorMiddleware(logger: logger))
        if tcp { router.middlewares.add(WriteTokenMiddleware(token: writeToken)) }
        let handlers = Handlers(state: state)
        for route in Route.allCases {
            router.on(RouterPath(route.path), method: HTTPRequest.Method(route.method)!) { request, context in
                try await handlers.answer(route, request, context)
            }
        }
        return router
    }

    /// A JSON response from one of the wire module's bodies (`WireJSON.encode`: the streaming
    /// writer).
    static func json(_ body: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        var buffer = ByteBuffer(bytes: (try? WireJSON.encode(body)) ?? Data("{}".utf8))
        buffer.writeString("\n")
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: buffer))
    }

}

/// The route handlers, over the state.
struct Handlers: Sendable {
    let state: ControlState

    var ledger: any Ledger { state.ledger }

    /// One route's answer. No ledger call runs on a thread that serves requests: writes run on the
    /// API's write threads (they may wait for a lock another process holds), reads (job lists,
    /// refreshes, blocks, holds, status counts, /healthz, /metrics, the plan) on its read threads
    /// (APIWork); budget questions are answered from the accounts' views in memory (AccountViews),
    /// read again there after a write.
    func answer(_ route: Route, _ request: Request, _ context: some RequestContext) async throws -> Response {
        let id = context.parameters.get("id") ?? ""
        let query = request.uri.queryParameters
        let work = state.work
        switch route {
        case .health: return try await work.read { try await self.health() }
        case .metrics: return try await work.read { await self.metrics() }
        case .openAPI:
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(bytes: ControlAPI.openAPIDocument)))
        case .status: return try await status()
        case .page: return try await page()
        case .budget: return try await budget()
        case .segments: return try await segments(query: query)
        case .segmentBudget: return try await segmentBudget(id: id, query: query)
        case .jobs: return try await work.read { try await self.jobs(query: query) }
        case .enqueue:
            let body: ByteBuffer
            do {
                body = try await request.body.collect(upTo: JobFile.maxBytes)
            } catch is NIOTooManyBytesError {
                throw APIError(.contentTooLarge, "too_large", "a job is at most \(JobFile.maxBytes) bytes")
            }
            return try await work.write { try await self.enqueue(body: body) }
        case .job: return try await job(id: id, query: query, known: request.headers[.ifNoneMatch])
        case .cancelJob: return try await work.write { try await self.cancel(id: id) }
        case .editJob: return try await edit(id: id, body: try await Self.smallBody(request))
        case .retryJob: return try await retry(id: id)
        case .retryJobs: return try await retryMatching(body: try await Self.smallBody(request))
        case .cancelJobs: return try await cancelMatching(body: try await Self.smallBody(request))
        case .plan: return try await plan()
        case .whatIf: return try await whatIf(body: try await Self.smallBody(request))
        case .holds: return try await work.read { try await self.holds(query: query) }
        case .addHold: return try await addHold(body: try await Self.smallBody(request))
        case .releaseHold: return try await releaseHold(id: id)
        case .refreshes: return try await work.read { try await self.refreshes(query: query) }
        case .blocks: return try await work.read { try await self.blocks(query: query) }
        case .liftBlock: return try await work.write { try await self.liftBlock(id: id) }
        }
    }

    /// The operator verbs' bodies: small JSON objects (413 past 64 KiB).
    static func smallBody(_ request: Request) async throws -> ByteBuffer {
        do {
            return try await request.body.collect(upTo: 64 * 1024)
        } catch is NIOTooManyBytesError {
            throw APIError(.contentTooLarge, "too_large", "a body is at most 64 KiB")
        }
    }

    func health() async throws -> Response {
        _ = try await ledger.queuedCount()
        return ControlAPI.json(HealthAnswer())
    }

    func metrics() async -> Response {
        let text = await state.metrics.render(state: state)
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    // MARK: Status

    /// GET /v1/status. The lanes' and intake's state is memory; the job counts and holds are read
    /// on the API's read threads (a count over every job must not hold up a serving thread).
    func status() async throws -> Response {
        let t = state.now()
        let configuration = state.configuration
        // A shared ledger's database that does not answer is reported, not a failed status: the
        // counts and holds are empty then and `ledger.reachable` says why.
        let read: ([JobState: Int], [StoredHold])
        do {
            read = try await state.work.read { [ledger] in
                await (try ledger.jobCounts(), try ledger.activeHolds(account: nil))
            }
        } catch let error as LedgerError where error.code == .unreachable {
            read = ([:], [])
        }
        let (counts, holds) = read
        // Who leads each account and which hosts are alive (a shared ledger; nil for one host).
        let cluster = try? await state.work.read { [ledger] in try await ledger.cluster(now: t) }
        let ledgerStatus = StatusAnswer.Ledger(
            backend: configuration.ledger.backend.value.rawValue, location: ledger.location,
            unreachable: ledger.unreachableReason)
        let lanes = state.laneStatuses
        let accounts = configuration.accounts.map { account in
            let lane = lanes.first { $0.account == account.name }
            return StatusAnswer.Account(
                name: account.name, dryRun: configuration.isDryRun(account), queued: lane?.queued ?? 0,
                pausedReason: lane?.paused, nextSendAt: lane?.nextSendAt, lastError: lane?.lastError,
                held: lane?.held ?? 0, leader: cluster?.leaders[account.name],
                standby: lane == nil ? nil : ledger.dispatch(account: account.name).standbyReason)
        }
        var spool = StatusAnswer.Spool()
        if let intake = state.intakeState {
            spool = StatusAnswer.Spool(
                backlog: intake.backlog, taken: intake.taken, rejected: intake.rejected, blocked: intake.blocked,
                skipped: intake.skipped, rejectedFiles: intake.rejectedFiles, rejectedBytes: intake.rejectedBytes)
        }
        var jobs: [String: Int] = [:]
        for jobState in JobState.allCases { jobs[jobState.rawValue] = counts[jobState] ?? 0 }
        return ControlAPI.json(
            StatusAnswer(
                version: state.version, tzdataVersion: state.zones.version, tzDirectory: state.zones.path,
                listen: configuration.listen.value,
                dryRun: configuration.accounts.allSatisfy { configuration.isDryRun($0) }, startedAt: state.startedAt,
                uptimeSeconds: Int(t.timeIntervalSince(state.startedAt)), now: t, jobs: jobs,
                queueSize: counts[.queued] ?? 0, spool: spool, accounts: accounts,
                lastError: lanes.compactMap(\.lastError).first,
                pausedAccounts: accounts.filter(\.paused).map(\.name), heldJobs: lanes.map(\.held).reduce(0, +),
                holds: holds.map(Self.holdBody), ledger: ledgerStatus,
                cluster: cluster.map { view in
                    StatusAnswer.Cluster(
                        hostID: view.hostID,
                        hosts: view.hosts.map {
                            .init(hostID: $0.hostID, heartbeatAt: $0.heartbeatAt, alive: $0.alive)
                        },
                        clockSkewSeconds: view.clockSkewSeconds, refusal: view.refusal)
                }))
    }

    // MARK: Budget

    private func rules(_ name: String) -> ZoneRules? { try? state.zones.rules(for: name) }

    static func ruleBudget(_ budget: RuleBudget) -> RuleBudgetBody {
        RuleBudgetBody(
            rule: budget.rule, used: budget.used, limit: budget.limit, remaining: budget.remaining,
            resetsAt: budget.resetsAt)
    }

    func budget() async throws -> Response { ControlAPI.json(try await budgetBody()) }

    /// GET /v1/budget's body (from the accounts' views: no ledger read while they are current).
    func budgetBody() async throws -> BudgetAnswer {
        let t = state.now()
        let configuration = state.configuration
        let lanes = state.laneStatuses
        var accounts: [AccountBudgetBody] = []
        for account in configuration.accounts {
            let view = try await state.views.view(account.name, now: t)
            let budgets = view.accountBudgets(
                includeBlocks: true, limits: configuration.limits(for: account.name), now: t)
            let daily = budgets.first { $0.rule == .accountDaily }!
            let block = budgets.first { $0.rule == .learnedBlock }
            let lane = lanes.first { $0.account == account.name }
            var pausedReason: String?
            if let hold = view.holds.first(where: { $0.segmentID == nil }) {
                pausedReason = Self.holdText(hold)
            } else if let paused = lane?.paused {
                pausedReason = paused
            } else if let block, let until = block.resetsAt {
                pausedReason = "blocked until \(Timestamp.rfc3339(until)) (learned from SendGrid)"
            }
            accounts.append(
                AccountBudgetBody(
                    account: account.name, used: daily.used, limit: daily.limit, remaining: daily.remaining,
                    resetsAt: daily.resetsAt, paused: pausedReason != nil, pausedReason: pausedReason,
                    dryRun: configuration.isDryRun(account), queued: lane?.queued ?? 0, nextSendAt: lane?.nextSendAt))
        }
        return BudgetAnswer(now: t, accounts: accounts)
    }

    func segmentBudget(id: String, query: Parameters) async throws -> Response {
        guard let segment = JobFile.normalizedUUID(id) else {
            throw APIError.badRequest("segment_id", "\"\(id)\" is not a segment id (a UUID, 36 characters)")
        }
        let configuration = state.configuration
        let account = query.get("account") ?? "default"
        guard state.hasAccount(account) else {
            throw APIError.badRequest(
                "account",
                "no account named \"\(account)\" (configured: \(configuration.accounts.map(\.name).joined(separator: ", ")))"
            )
        }
        let t = state.now()
        // From the account's view: memory while the ledger is unchanged (see AccountViews).
        let (view, engine) = try await state.views.engineView(account, now: t, zones: state.zones)
        let queuedZones = view.queuedZones[segment] ?? []
        var zoneName = query.get("time_zone")
        if zoneName == nil {
            zoneName = queuedZones.last ?? view.history(segmentID: segment, now: t)?.segmentAttempts.last?.timeZone
        }
        guard let zoneName else {
            throw APIError.badRequest(
                "time_zone", "required for a segment refreshd has never seen (an IANA zone such as America/Chicago)")
        }
        guard let zone = rules(zoneName) else {
            let suggestions = state.zones.suggestions(for: zoneName)
            throw APIError.badRequest(
                "time_zone",
                "unknown time zone \"\(zoneName)\""
                    + (suggestions.isEmpty ? "" : "; did you mean \(suggestions.joined(separator: ", "))?"))
        }
        // The view and its engine form answer for any instant from their read on (AccountViews).
        return ControlAPI.json(
            segmentBudgetBody(
                account: account, segment: segment, zone: zone, alsoZones: queuedZones, engine: engine,
                holds: view.holds, now: t)!)
    }

    /// A segment's budget as GET /v1/segments/{id}/budget (and each row of GET /v1/segments) has it.
    /// `alsoZones` are the zones of the segment's queued jobs: the lane sends them together, so
    /// they join Z(s) here as they do in the lane's decision (I1); a zone that does not load adds
    /// nothing (such a job is held, never sent).
    /// nil when `now` is before the view's read (read it again).
    func segmentBudgetBody(
        account: String, segment: String, zone: ZoneRules, alsoZones: [String], engine: EngineView,
        holds: [StoredHold], now t: Date
    ) -> SegmentBudgetBody? {
        var others: [ZoneRules] = []
        for name in alsoZones where name != zone.name && !others.contains(where: { $0.name == name }) {
            if let rules = rules(name) { others.append(rules) }
        }
        guard
            let decision = engine.decide(
                account: account, segmentID: segment, zone: zone, alsoZones: others,
                limits: state.limits(for: account), now: t)
        else { return nil }
        let hold = holds.first { $0.covers(account: account, segmentID: segment) }
        let paused = hold.map(Self.holdText) ?? state.laneStatus(account)?.paused
        return SegmentBudgetBody(
            segmentID: segment, account: account, timeZone: zone.name, now: t,
            allowedNow: decision.verdict == .allowed && paused == nil, binding: decision.binding,
            earliest: decision.earliest(now: t), rules: decision.budgets.map(Self.ruleBudget),
            segmentRemainingToday: decision.budget(.segmentDaily)?.remaining ?? 0,
            accountRemaining: decision.budget(.accountDaily)?.remaining ?? 0, pausedReason: paused)
    }

    /// Every known segment's budget: each segment with a queued job or a refresh within the rules'
    /// windows (the last 4 days), in the zone of its latest job (else of its latest refresh), per
    /// account, in segment order. From the accounts' views (see AccountViews).
    func segments(query: Parameters) async throws -> Response {
        let configuration = state.configuration
        var accounts = configuration.accounts.map(\.name)
        if let account = query.get("account") {
            guard state.hasAccount(account) else {
                throw APIError.badRequest(
                    "account", "no account named \"\(account)\" (configured: \(accounts.joined(separator: ", ")))")
            }
            accounts = [account]
        }
        let t = state.now()
        var rows: [SegmentBudgetBody] = []
        let tzData = state.zones
        for account in accounts {
            let (view, engine) = try await state.views.engineView(account, now: t, zones: tzData)
            // The zone of the segment's latest job, else of its latest refresh in the windows.
            var zones: [String: String] = [:]
            for attempt in view.attempts { zones[attempt.segmentID] = attempt.timeZone }
            for (segment, queued) in view.queuedZones { zones[segment] = queued.last }
            for (segment, zoneName) in zones.sorted(by: { $0.key < $1.key }) {
                guard let zone = rules(zoneName),
                    let row = segmentBudgetBody(
                        account: account, segment: segment, zone: zone, alsoZones: view.queuedZones[segment] ?? [],
                        engine: engine, holds: view.holds, now: t)
                else {
                    // A zone the tz data cannot load: listed, never computed with another zone.
                    rows.append(
                        SegmentBudgetBody(
                            segmentID: segment, account: account, timeZone: zoneName, now: t, allowedNow: false,
                            binding: [], earliest: nil, rules: [], segmentRemainingToday: 0, accountRemaining: 0,
                            pausedReason: JobHold.reason(timeZone: zoneName, zones: state.zones)))
                    continue
                }
                rows.append(row)
            }
        }
        return ControlAPI.json(SegmentsAnswer(now: t, segments: rows))
    }

    // MARK: Jobs

    static func jobBody(_ job: StoredJob, zones: ZoneInfoDirectory) -> JobBody {
        JobBody(
            id: job.id, state: job.state, account: job.job.account, segmentID: job.job.segmentID,
            timeZone: job.job.timeZone, priority: job.job.priority, source: job.job.source,
            idempotencyKey: job.job.idempotencyKey, notBefore: job.job.notBefore, expiresAt: job.job.expiresAt,
            note: job.job.note, attemptID: job.attemptID, reason: job.reason, tries: job.tries, retryAt: job.retryAt,
            heldReason: job.state == .queued ? JobHold.reason(timeZone: job.job.timeZone, zones: zones) : nil,
            createdAt: job.createdAt, updatedAt: job.updatedAt)
    }

    private func jobID(_ text: String) throws -> Int64 {
        guard let id = Int64(text), id > 0 else {
            throw APIError.badRequest("id", "\"\(text)\" is not a job id (a positive integer)")
        }
        return id
    }

    func jobs(query: Parameters) async throws -> Response {
        var jobState: JobState?
        if let text = query.get("state") {
            guard let parsed = JobState(rawValue: text) else {
                throw APIError.badRequest(
                    "state",
                    "\"\(text)\" is not a job state (\(JobState.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            jobState = parsed
        }
        var segment: String?
        if let text = query.get("segment") {
            guard let normalized = JobFile.normalizedUUID(text) else {
                throw APIError.badRequest("segment", "\"\(text)\" is not a segment id (a UUID)")
            }
            segment = normalized
        }
        let limit = try intParameter(query, "limit", default: 100, range: 1...1000)
        var cursor: Int64?
        if let text = query.get("cursor") {
            guard let value = Int64(text), value >= 0 else {
                throw APIError.badRequest(
                    "cursor", "\"\(text)\" is not a cursor (use next_cursor from the previous page)")
            }
            cursor = value
        }
        let page = try await ledger.jobs(state: jobState, segmentID: segment, after: cursor, limit: limit)
        let zones = state.zones
        return ControlAPI.json(
            JobsPage(
                jobs: page.map { Self.jobBody($0, zones: zones) },
                nextCursor: page.count == limit ? String(page.last!.id) : nil))
    }

    /// One job, with its forecast while it is queued. `wait=SECONDS` (at most 300) makes it a
    /// long poll: the answer comes when the job's state or forecast differs from what the client
    /// has (its `If-None-Match`, the `ETag` of an earlier answer; without one, from the state at
    /// the request's arrival), or when the wait ends. A finished job answers at once.
    func job(id: String, query: Parameters, known: String?) async throws -> Response {
        let id = try jobID(id)
        let wait = min(
            try intParameter(query, "wait", default: 0, range: 0...300), state.configuration.apiMaxWaitSeconds.value)
        let deadline = ContinuousClock.now + .seconds(wait)
        var (body, tag, finished) = try await jobSnapshot(id)
        let baseline = known ?? tag
        var seen = state.planKey
        var checked = ContinuousClock.now
        while tag == baseline, !finished, ContinuousClock.now < deadline {
            // Wake on any ledger or settings change; the forecast also moves with time alone (a
            // block running out), so look again at least every 5 s.
            try await Task.sleep(for: .milliseconds(100))
            let key = state.planKey
            guard key != seen || ContinuousClock.now - checked >= .seconds(5) else { continue }
            seen = key
            checked = ContinuousClock.now
            (body, tag, finished) = try await jobSnapshot(id)
        }
        var response = ControlAPI.json(body)
        response.headers[.eTag] = tag
        return response
    }

    /// The job's JSON and forecast, an entity tag that changes with either, and whether the job is
    /// finished (nothing about it changes any more).
    private func jobSnapshot(_ id: Int64) async throws -> (body: JobAnswer, tag: String, finished: Bool) {
        guard let job = try await state.work.read({ [ledger] in try await ledger.job(id: id) }) else {
            throw APIError(.notFound, "job_not_found", "no job \(id)")
        }
        var forecast: JobForecast?
        if job.state == .queued { forecast = try await planSnapshot().forecasts[id] }
        let at = forecast?.at.map { String(Int64($0.timeIntervalSince1970)) } ?? "-"
        let tag =
            "\"\(id)-\(job.state.rawValue)-\(Int64(job.updatedAt.timeIntervalSince1970 * 1000))-\(forecast?.fate.rawValue ?? "-")-\(at)\""
        let finished = ![.queued, .sending].contains(job.state)
        return (JobAnswer(job: Self.jobBody(job, zones: state.zones), forecast: forecast), tag, finished)
    }

    func enqueue(body: ByteBuffer) async throws -> Response {
        guard body.readableBytes <= JobFile.maxBytes else {
            throw APIError(.contentTooLarge, "too_large", "a job is at most \(JobFile.maxBytes) bytes")
        }
        let configuration = state.configuration
        let zones = state.zones
        let bytes = Array(body.readableBytesView)
        let request: JobRequest
        switch JobFile.parse(
            bytes, accounts: Set(configuration.accounts.map(\.name)),
            zoneProblem: { zone in
                zones.contains(zone)
                    ? nil : TZDataError.unknownZone(zone, suggestions: zones.suggestions(for: zone)).message
            })
        {
        case .success(let parsed): request = parsed
        case .failure(let error):
            throw APIError(.badRequest, error.field.map { "invalid_\($0)" } ?? "invalid_job", error.description)
        }
        guard try await ledger.queuedCount() < configuration.maxQueuedJobs.value else {
            throw APIError(
                .serviceUnavailable, "queue_full",
                "the queue holds max_queued_jobs = \(configuration.maxQueuedJobs.value) jobs; try again later")
        }
        let job = NewJob(
            source: "api", idempotencyKey: request.id, account: request.account, segmentID: request.segmentID,
            timeZone: request.timeZone,
            priority: request.priority, notBefore: request.notBefore, expiresAt: request.expiresAt, note: request.note)
        do {
            switch try await ledger.enqueue(job, now: state.now()) {
            case .created(let stored):
                state.wakeDispatcher()
                return ControlAPI.json(
                    JobEnvelope(job: Self.jobBody(stored, zones: state.zones), created: true), status: .created)
            case .duplicate(let stored):
                return ControlAPI.json(JobEnvelope(job: Self.jobBody(stored, zones: state.zones), created: false))
            }
        } catch let error as LedgerError where error.code == .idempotencyConflict {
            throw APIError(.conflict, "idempotency_conflict", error.message)
        }
    }

    // MARK: Operator verbs

    static func holdBody(_ hold: StoredHold) -> HoldBody {
        HoldBody(
            id: hold.id, account: hold.account, segmentID: hold.segmentID, reason: hold.reason, since: hold.createdAt,
            who: hold.who)
    }

    /// "held by alice since 2026-12-01T08:00:00Z: key rotation".
    static func holdText(_ hold: StoredHold) -> String {
        "held by \(hold.who) since \(Timestamp.rfc3339(hold.createdAt)): \(hold.reason)"
    }

    /// GET /v1/holds.
    func holds(query: Parameters) async throws -> Response {
        ControlAPI.json(
            HoldsAnswer(holds: try await ledger.activeHolds(account: query.get("account")).map(Self.holdBody)))
    }

    /// POST /v1/holds: hold an account, or one segment of it (idempotent: an active hold of the
    /// same scope is answered as it is, 200 instead of 201).
    func addHold(body: ByteBuffer) async throws -> Response {
        let object = try object(body, allowed: NewHoldBody.CodingKeys.memberNames)
        guard let account = try string(object, "account") else {
            throw APIError.badRequest("account", "required: the account to hold")
        }
        guard state.hasAccount(account) else { throw APIError.badRequest("account", "no account named \"\(account)\"") }
        var segment: String?
        if let text = try string(object, "segment") {
            guard let normalized = JobFile.normalizedUUID(text) else {
                throw APIError.badRequest("segment", "\"\(text)\" is not a segment id (a UUID)")
            }
            segment = normalized
        }
        guard let reason = try string(object, "reason"), !reason.trimmingCharacters(in: .whitespaces).isEmpty,
            reason.count <= 1024
        else {
            throw APIError.badRequest("reason", "required: why (at most 1 KiB), shown wherever the hold is")
        }
        let who = String((try string(object, "who") ?? "api").prefix(256))
        let now = state.now()
        let scope = segment
        let (existing, hold) = try await state.work.write { [ledger] in
            let existing = try await ledger.activeHolds(account: account).first { $0.segmentID == scope }
            return await (
                existing, try ledger.hold(account: account, segmentID: scope, reason: reason, who: who, now: now)
            )
        }
        state.rereadLedger()
        return ControlAPI.json(HoldEnvelope(hold: Self.holdBody(hold)), status: existing == nil ? .created : .ok)
    }

    /// DELETE /v1/holds/{id}: release a hold; the held jobs are planned and sent again.
    func releaseHold(id text: String) async throws -> Response {
        guard let id = Int64(text), id > 0 else {
            throw APIError.badRequest("id", "\"\(text)\" is not a hold id (a positive integer)")
        }
        let now = state.now()
        guard let hold = try await state.work.write({ [ledger] in try await ledger.release(holdID: id, now: now) })
        else {
            throw APIError(.notFound, "hold_not_found", "no hold \(id) in force (refreshctl status lists them)")
        }
        state.rereadLedger()
        return ControlAPI.json(HoldEnvelope(hold: Self.holdBody(hold)))
    }

    /// A JSON object body with only the given members (strict JSON: duplicate keys, bad UTF-8 and
    /// the like are refused); 400 naming what is wrong.
    private func object(_ body: ByteBuffer, allowed: Set<String>) throws -> [String: JSONValue] {
        let bytes = Array(body.readableBytesView)
        if bytes.isEmpty { return [:] }
        let value: JSONValue
        do {
            value = try StrictJSONParser().parse(bytes)
        } catch {
            throw APIError.badRequest("body", "not valid JSON: \(error)")
        }
        guard case .object(let members) = value else {
            throw APIError.badRequest("body", "the body must be one JSON object")
        }
        var object: [String: JSONValue] = [:]
        for (key, member) in members {
            guard allowed.contains(key) else {
                throw APIError.badRequest(key, "unknown member (allowed: \(allowed.sorted().joined(separator: ", ")))")
            }
            object[key] = member
        }
        return object
    }

    /// An optional RFC 3339 member: absent (nil), JSON null (.some(nil)), or a time.
    private func time(_ object: [String: JSONValue], _ key: String) throws -> Date?? {
        switch object[key] {
        case nil: return nil
        case .null?: return .some(nil)
        case .string(let text)?:
            guard let date = Timestamp.parseRFC3339(text) else {
                throw APIError.badRequest(key, "\"\(text)\" is not an RFC 3339 time such as 2026-12-01T06:00:00Z")
            }
            return .some(date)
        case let other?: throw APIError.badRequest(key, "must be an RFC 3339 time or null, not \(other.kind)")
        }
    }

    private func string(_ object: [String: JSONValue], _ key: String) throws -> String? {
        switch object[key] {
        case nil: return nil
        case .string(let text)?: return text
        case let other?: throw APIError.badRequest(key, "must be a string, not \(other.kind)")
        }
    }

    private func ledgerError(_ error: LedgerError, id: Int64? = nil) -> APIError {
        switch error.code {
        case .notFound: return APIError(.notFound, "job_not_found", error.message)
        case .invalidState: return APIError(.conflict, "invalid_state", error.message)
        case .invalidInput: return APIError(.badRequest, "invalid_change", error.message)
        default: return APIError(.serviceUnavailable, "ledger_\(error.code.rawValue)", error.message)
        }
    }

    /// PATCH /v1/jobs/{id}: priority, not_before, expires_at of a queued job (null clears a time).
    func edit(id: String, body: ByteBuffer) async throws -> Response {
        let id = try jobID(id)
        let object = try object(body, allowed: JobEditBody.CodingKeys.memberNames)
        var change = JobChange(notBefore: try time(object, "not_before"), expiresAt: try time(object, "expires_at"))
        if let value = object["priority"] {
            guard case .integer(let priority) = value, (-100...100).contains(priority) else {
                throw APIError.badRequest("priority", "must be a whole number in -100...100")
            }
            change.priority = Int(priority)
        }
        guard change != JobChange() else {
            throw APIError.badRequest("body", "nothing to change: give priority, not_before or expires_at")
        }
        let now = state.now()
        let requested = change
        do {
            let job = try await state.work.write { [ledger] in
                try await ledger.edit(jobID: id, change: requested, now: now)
            }
            state.rereadLedger()
            return ControlAPI.json(JobEnvelope(job: Self.jobBody(job, zones: state.zones)))
        } catch let error as LedgerError where error.code != .busy && error.code != .notWritable {
            throw ledgerError(error)
        }
    }

    /// POST /v1/jobs/{id}/retry: a failed or expired job queued again.
    func retry(id: String) async throws -> Response {
        let id = try jobID(id)
        let now = state.now()
        do {
            let job = try await state.work.write { [ledger] in try await ledger.retry(jobID: id, now: now) }
            state.rereadLedger()
            return ControlAPI.json(JobEnvelope(job: Self.jobBody(job, zones: state.zones)))
        } catch let error as LedgerError where error.code != .busy && error.code != .notWritable {
            throw ledgerError(error)
        }
    }

    /// The filter of a bulk verb's body.
    private func filter(_ object: [String: JSONValue], states: [JobState]) throws -> JobFilter {
        var filter = JobFilter(states: states)
        if let account = try string(object, "account") {
            guard state.hasAccount(account) else {
                throw APIError.badRequest("account", "no account named \"\(account)\"")
            }
            filter.account = account
        }
        if let text = try string(object, "segment") {
            guard let segment = JobFile.normalizedUUID(text) else {
                throw APIError.badRequest("segment", "\"\(text)\" is not a segment id (a UUID)")
            }
            filter.segmentID = segment
        }
        if let since = try time(object, "since") {
            guard let since else { throw APIError.badRequest("since", "must be an RFC 3339 time, not null") }
            filter.since = since
        }
        return filter
    }

    private func dryRun(_ object: [String: JSONValue]) throws -> Bool {
        switch object["dry_run"] {
        case nil: return false
        case .bool(let flag)?: return flag
        case let other?: throw APIError.badRequest("dry_run", "must be true or false, not \(other.kind)")
        }
    }

    /// POST /v1/jobs/retry: every failed (and/or expired) job matching the filter queued again;
    /// with dry_run, only which.
    func retryMatching(body: ByteBuffer) async throws -> Response {
        let object = try object(body, allowed: RetryFilterBody.CodingKeys.memberNames)
        var states: [JobState] = [.failed, .expired]
        if let text = try string(object, "state") {
            guard let parsed = JobState(rawValue: text), parsed == .failed || parsed == .expired else {
                throw APIError.badRequest("state", "\"\(text)\" cannot be retried (failed or expired)")
            }
            states = [parsed]
        }
        let filter = try filter(object, states: states)
        let dry = try dryRun(object)
        let now = state.now()
        let jobs = try await state.work.write { [ledger] in
            await dry ? try ledger.jobs(matching: filter) : try ledger.retryJobs(matching: filter, now: now)
        }
        return bulkAnswer(jobs, dryRun: dry)
    }

    /// A bulk verb's answer; the lanes read the ledger again when something changed.
    private func bulkAnswer(_ jobs: [StoredJob], dryRun: Bool) -> Response {
        if !dryRun, !jobs.isEmpty { state.rereadLedger() }
        return ControlAPI.json(
            BulkAnswer(count: jobs.count, dryRun: dryRun, jobs: jobs.map { Self.jobBody($0, zones: state.zones) }))
    }

    /// POST /v1/jobs/cancel: every queued job of a segment and/or an account cancelled (at least
    /// one of the two: never the whole queue by accident); with dry_run, only which.
    func cancelMatching(body: ByteBuffer) async throws -> Response {
        let object = try object(body, allowed: CancelFilterBody.CodingKeys.memberNames)
        if let text = try string(object, "state"), text != "queued" {
            throw APIError.badRequest("state", "only queued jobs can be cancelled")
        }
        let filter = try filter(object, states: [.queued])
        guard filter.account != nil || filter.segmentID != nil else {
            throw APIError.badRequest(
                "segment", "give a segment or an account (or both): a bulk cancel never takes the whole queue")
        }
        let dry = try dryRun(object)
        let now = state.now()
        let jobs = try await state.work.write { [ledger] in
            await dry ? try ledger.jobs(matching: filter) : try ledger.cancelJobs(matching: filter, now: now)
        }
        return bulkAnswer(jobs, dryRun: dry)
    }

    func cancel(id: String) async throws -> Response {
        let id = try jobID(id)
        do {
            let job = try await ledger.cancel(jobID: id, now: state.now())
            state.wakeDispatcher()
            return ControlAPI.json(JobEnvelope(job: Self.jobBody(job, zones: state.zones)))
        } catch let error as LedgerError where error.code == .notFound {
            throw APIError(.notFound, "job_not_found", "no job \(id)")
        } catch let error as LedgerError where error.code == .invalidState {
            throw APIError(.conflict, "not_cancellable", error.message)
        }
    }

    // MARK: The status page

    /// GET /ui: the status page, drawn from the same bodies as GET /v1/plan, /v1/budget,
    /// /v1/refreshes (the last 2.5 days), /v1/blocks and /v1/holds. The ledger is read on the API's
    /// read threads, never on the server's.
    func page() async throws -> Response {
        let plan = try await planSnapshot().body
        let budget = try WireJSON.encode(try await budgetBody())
        let bodies = try await state.work.read { [self] () -> [Data] in
            let t = state.now()
            let refreshes = try await ledger.attempts(
                since: t.addingTimeInterval(-Double(Self.pageHours) * 900 - 2 * 86400), account: nil, segmentID: nil,
                limit: 1000)
            return await [
                try WireJSON.encode(RefreshesAnswer(refreshes: refreshes.map(Self.refreshBody))),
                try WireJSON.encode(
                    BlocksAnswer(now: t, blocks: try ledger.activeBlocks(account: nil, now: t).map(Self.blockBody))),
                try WireJSON.encode(HoldsAnswer(holds: try ledger.activeHolds(account: nil).map(Self.holdBody))),
            ]
        }
        let view = try BudgetView(
            plan: Data(buffer: plan), budget: budget, refreshes: bodies[0], blocks: bodies[1], holds: bodies[2])
        let zones = state.zones
        let timeline = Timeline(view, hours: Self.pageHours, zone: { try? zones.rules(for: $0) })
        let html = StatusPage(version: state.version, tzdata: zones.version).render(view, timeline: timeline)
        return Response(
            status: .ok,
            headers: [
                .contentType: "text/html; charset=utf-8",
                // Self-contained: nothing may be loaded from anywhere, no script runs.
                .contentSecurityPolicy: "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
                .cacheControl: "no-store",
            ],
            body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    /// How far ahead the page's timeline reaches.
    static let pageHours = 48

    // MARK: Plan and history

    /// The forecast, computed at most once per ledger change (and every `PlanCache.maxAge` seconds
    /// at most): planning 20,000 queued jobs takes about a second, and parallel requests share
    /// one computation instead of each paying for it (the route is no amplifier).
    func plan() async throws -> Response {
        let body = try await planSnapshot().body
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: body))
    }

    func planSnapshot() async throws -> PlanSnapshot {
        try await state.planCache.value(for: state.planKey, now: state.now()) { [self] in
            try await state.work.read { try await self.computePlan() }
        }
    }

    /// POST /v1/plan: the forecast as if the given jobs (the job file contract, validated as POST
    /// /v1/jobs does) were queued now, without queueing them. Candidates have ids -1, -2, ... in
    /// the order given. Not cached: the queue is not changed by it.
    func whatIf(body: ByteBuffer) async throws -> Response {
        let object = try object(body, allowed: ["jobs"])
        guard case .array(let items)? = object["jobs"], !items.isEmpty, items.count <= 100 else {
            throw APIError.badRequest("jobs", "give 1 to 100 candidate jobs as {\"jobs\": [{...}, ...]}")
        }
        let configuration = state.configuration
        let zones = state.zones
        var candidates: [JobRequest] = []
        for (index, item) in items.enumerated() {
            switch JobFile.validate(
                item, accounts: Set(configuration.accounts.map(\.name)),
                zoneProblem: { zone in
                    zones.contains(zone)
                        ? nil : TZDataError.unknownZone(zone, suggestions: zones.suggestions(for: zone)).message
                })
            {
            case .success(let request): candidates.append(request)
            case .failure(let error):
                throw APIError(
                    .badRequest, error.field.map { "invalid_\($0)" } ?? "invalid_job", "jobs[\(index)]: \(error)")
            }
        }
        let requested = candidates
        let snapshot = try await state.work.read { [self] in try await computePlan(candidates: requested) }
        return Response(
            status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: snapshot.body))
    }

    func computePlan(candidates: [JobRequest] = []) async throws -> PlanSnapshot {
        let t = state.now()
        let configuration = state.configuration
        let zones = state.zones
        let lanes = state.laneStatuses
        let paused = Set(lanes.filter { $0.paused != nil }.map(\.account))
        var queued = try await ledger.queuedJobs()
        // What-if candidates join the queue as jobs submitted now, after every queued one.
        let firstCandidate = (queued.map(\.id).max() ?? 0) + 1
        for (index, request) in candidates.enumerated() {
            queued.append(
                StoredJob(
                    id: firstCandidate + Int64(index),
                    job: NewJob(
                        source: "what-if", account: request.account, segmentID: request.segmentID,
                        timeZone: request.timeZone,
                        priority: request.priority, notBefore: request.notBefore, expiresAt: request.expiresAt),
                    state: .queued, createdAt: t, updatedAt: t))
        }
        /// A candidate's id as the answer shows it: -1 for the first.
        func shown(_ id: Int64) -> Int64 {
            id >= firstCandidate && !candidates.isEmpty ? -(id - firstCandidate + 1) : id
        }
        let history = try await ledger.attempts(
            since: Date(timeIntervalSince1970: HistoryWindows.segmentSince(t)), account: nil, segmentID: nil,
            limit: Int.max
        ).map {
            $0.engineAttempt(resolve: rules)
        }
        var blocks: [LearnedBlock] = []
        for account in configuration.accounts {
            blocks += try await ledger.blocks(account: account.name, now: t).map(\.engineBlock)
        }
        var jobsOut: [PlannedJobBody] = []
        var sendsOut: [PlannedSendBody] = []
        var forecasts: [Int64: JobForecast] = [:]
        /// A job that is not planned: its fate and why.
        func unplanned(_ job: StoredJob, _ fate: PlanFate, reason: String? = nil) {
            jobsOut.append(
                PlannedJobBody(
                    id: shown(job.id), account: job.job.account, segmentID: job.job.segmentID,
                    timeZone: job.job.timeZone, fate: fate, reason: reason))
            forecasts[job.id] = JobForecast(fate: fate)
        }
        // Jobs under an operator's hold are not planned (R10): fate held, with the hold.
        let holds = try await ledger.activeHolds(account: nil)
        queued.removeAll { job in
            guard let hold = holds.first(where: { $0.covers(account: job.job.account, segmentID: job.job.segmentID) })
            else { return false }
            unplanned(job, .held, reason: Self.holdText(hold))
            return true
        }
        for account in Set(queued.map(\.job.account)).sorted() {
            let jobs = queued.filter { $0.job.account == account }
            if paused.contains(account) || !configuration.accounts.contains(where: { $0.name == account }) {
                for job in jobs { unplanned(job, paused.contains(account) ? .paused : .unknownAccount) }
                continue
            }
            // A job whose zone cannot be loaded is held, never planned under another zone.
            var queue: [QueuedJob] = []
            for job in jobs {
                guard let planned = job.plannedJob(resolve: rules) else {
                    unplanned(job, .held, reason: JobHold.reason(timeZone: job.job.timeZone, zones: zones))
                    continue
                }
                queue.append(planned)
            }
            let plan = Planner.plan(
                queue: queue, history: history.filter { $0.account == account }, blocks: blocks,
                limits: configuration.limits(for: account), now: t)
            for send in plan.sends {
                sendsOut.append(
                    PlannedSendBody(
                        at: send.at, account: send.account, segmentID: send.segment, timeZone: send.zone,
                        jobs: send.jobs.compactMap { Int64($0).map(shown) }, reasons: send.reasons))
            }
            for job in queue {
                let id = job.sequence
                let forecast: JobForecast
                var leader: Int64?
                switch plan.fates[job.id] {
                case .send(let at, let leaderID)?:
                    forecast = JobForecast(
                        fate: leaderID == job.id ? .send : .coalesce, at: at, leader: Int64(leaderID))
                    leader = Int64(leaderID).map(shown)
                case .expire(let at)?:
                    forecast = JobForecast(fate: .expire, at: at)
                case .never?, nil:
                    forecast = JobForecast(fate: .never)
                }
                forecasts[id] = forecast
                jobsOut.append(
                    PlannedJobBody(
                        id: shown(id), account: account, segmentID: job.segment, timeZone: job.zone.name,
                        fate: forecast.fate, at: forecast.at, leader: leader))
            }
        }
        sendsOut.sort { $0.at < $1.at }
        var body = ByteBuffer(bytes: try WireJSON.encode(PlanAnswer(now: t, sends: sendsOut, jobs: jobsOut)))
        body.writeString("\n")
        return PlanSnapshot(body: body, forecasts: forecasts)
    }

    static func refreshBody(_ attempt: StoredAttempt) -> RefreshBody {
        RefreshBody(
            id: attempt.id, account: attempt.account, segmentID: attempt.segmentID, timeZone: attempt.timeZone,
            outcome: attempt.outcome, httpStatus: attempt.httpStatus, sendGridJobID: attempt.sendGridJobID,
            startedAt: attempt.startedAt, finishedAt: attempt.finishedAt, error: attempt.error)
    }

    // MARK: Blocks learned from SendGrid

    static func blockBody(_ block: StoredBlock) -> BlockBody {
        BlockBody(
            id: block.id, account: block.account, segmentID: block.segmentID, until: block.until, reason: block.reason)
    }

    func blocks(query: Parameters) async throws -> Response {
        let account = query.get("account")
        if let account, !state.hasAccount(account) {
            throw APIError.badRequest(
                "account",
                "no account named \"\(account)\" (configured: \(state.configuration.accounts.map(\.name).joined(separator: ", ")))"
            )
        }
        let t = state.now()
        let blocks = try await ledger.activeBlocks(account: account, now: t)
        return ControlAPI.json(BlocksAnswer(now: t, blocks: blocks.map(Self.blockBody)))
    }

    /// Lifts a block by hand. The operator's call: a block was learned from a 429, so lifting it
    /// early may earn another 429; the rules' safety margin still applies from now.
    func liftBlock(id text: String) async throws -> Response {
        guard let id = Int64(text), id > 0 else {
            throw APIError.badRequest("id", "\"\(text)\" is not a block id (a positive integer)")
        }
        guard let lifted = try await ledger.liftBlock(id: id, now: state.now()) else {
            throw APIError(.notFound, "block_not_found", "no block \(id) is in force (GET /v1/blocks lists them)")
        }
        state.logger.notice(
            "a block learned from SendGrid was lifted by hand",
            metadata: [
                "block": "\(id)", "account": "\(lifted.account)", "segment": "\(lifted.segmentID ?? "(whole account)")",
            ])
        state.rereadLedger()
        return ControlAPI.json(BlockEnvelope(block: Self.blockBody(lifted)))
    }

    func refreshes(query: Parameters) async throws -> Response {
        var since = state.now().addingTimeInterval(-7 * 86400)
        if let text = query.get("since") {
            guard let parsed = Timestamp.parseRFC3339(text) else {
                throw APIError.badRequest(
                    "since", "\"\(text)\" is not an RFC 3339 instant such as 2026-11-25T06:00:00Z")
            }
            since = parsed
        }
        var segment: String?
        if let text = query.get("segment") {
            guard let normalized = JobFile.normalizedUUID(text) else {
                throw APIError.badRequest("segment", "\"\(text)\" is not a segment id (a UUID)")
            }
            segment = normalized
        }
        let limit = try intParameter(query, "limit", default: 100, range: 1...1000)
        let attempts = try await ledger.attempts(
            since: since, account: query.get("account"), segmentID: segment, limit: limit)
        return ControlAPI.json(RefreshesAnswer(refreshes: attempts.map(Self.refreshBody)))
    }

    private func intParameter(_ query: Parameters, _ name: String, default value: Int, range: ClosedRange<Int>) throws
        -> Int
    {
        guard let text = query.get(name) else { return value }
        guard let parsed = Int(text), range.contains(parsed) else {
            throw APIError.badRequest(
                name, "\"\(text)\" is not a whole number in \(range.lowerBound)...\(range.upperBound)")
        }
        return parsed
    }
}

/// The last plan's JSON and the key it was computed for; requests while it is being computed wait
/// for that one computation.
/// One computed plan: the JSON body of GET /v1/plan and each queued job's forecast in it.
struct PlanSnapshot: Sendable {
    let body: ByteBuffer
    let forecasts: [Int64: JobForecast]
}

/// When a queued job is expected to go out (or why it will not), as GET /v1/plan says it.
final class PlanCache: @unchecked Sendable {
    /// What a plan depends on besides "now".
    struct Key: Equatable, Sendable {
        var ledger: UInt64
        var settings: UInt64
        var paused: [String]
    }

    /// A plan is served at most this long after it was computed (it is a forecast from then).
    static let maxAge: TimeInterval = 10
    private let lock = NSLock()
    private var entry: (key: Key, at: Date, task: Task<PlanSnapshot, any Error>)?
    private var started = 0

    /// How many plans were computed (not served from the cache) since start.
    var computations: Int { lock.withLock { started } }

    func value(for key: Key, now: Date, compute: @escaping @Sendable () async throws -> PlanSnapshot) async throws
        -> PlanSnapshot
    {
        let task = lock.withLock { () -> Task<PlanSnapshot, any Error> in
            if let entry, entry.key == key, now >= entry.at, now.timeIntervalSince(entry.at) < Self.maxAge {
                return entry.task
            }
            let task = Task { try await compute() }
            entry = (key, now, task)
            started += 1
            return task
        }
        do {
            return try await task.value
        } catch {
            lock.withLock { if entry?.task == task { entry = nil } }
            throw error
        }
    }
}

extension ControlAPI {
    /// The control API's OpenAPI 3.1 document, served at /v1/openapi.json: the bytes of
    /// Resources/openapi.json (docs/openapi.json links to it; scripts/openapi.py writes it), embedded
    /// in the binary by SwiftPM (`.embedInCode`), so no file beside the executable is needed.
    public static var openAPIDocument: [UInt8] { PackageResources.openapi_json }
}
