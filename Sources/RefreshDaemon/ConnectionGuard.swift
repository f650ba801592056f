import NIOConcurrencyHelpers
import NIOCore
import NIOHTTPTypes
import NIOPosix

/// The connections one control API listener holds, so it can never be exhausted.
///
/// A local user (any member of the socket's group; anyone once `listen` is set) can open
/// connections and say nothing. Unbounded, a thousand of them used up the process's descriptors:
/// the API stopped answering and spool intake could not open its directory. So each listener holds
/// at most `limit` connections. A new connection past the limit closes the connection that has
/// been idle longest (no request in progress: a fresh one that sent nothing, or one between
/// requests), so a real client always gets in; when every connection is in the middle of a request
/// the new one is closed instead.
///
/// A request must be complete (head and body) within `requestTimeout` of the connection opening or
/// of its head. Deadlines are checked by one sweep per listener, scheduled only while some
/// connection has one (no timer per request, no wake-up when nobody is connected).
final class ConnectionRegistry: Sendable {
    private struct Entry {
        let channel: any Channel
        /// Since when the connection has had no request in progress; nil while one is.
        var idleSince: NIODeadline?
        /// By when the request being received must be complete; nil between requests.
        var deadline: NIODeadline?
    }

    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        var sweepScheduled = false
    }

    let limit: Int
    let requestTimeout: TimeAmount
    private let state = NIOLockedValueBox(State())
    private let loop: any EventLoop

    init(limit: Int, requestTimeout: TimeAmount, loop: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()) {
        self.limit = limit
        self.requestTimeout = requestTimeout
        self.loop = loop
    }

    /// How many connections are held.
    var count: Int { state.withLockedValue { $0.entries.count } }

    /// Registers a new connection; false when it must be closed (the limit is reached and no
    /// connection is idle). May close the longest-idle connection to make room.
    func admit(_ channel: any Channel) -> Bool {
        let now = NIODeadline.now()
        let (admitted, evicted, sweep) = state.withLockedValue { state -> (Bool, (any Channel)?, Bool) in
            var evicted: (any Channel)?
            if state.entries.count >= limit {
                let idle = state.entries.compactMap { key, entry in entry.idleSince.map { (key, entry.channel, $0) } }
                guard let oldest = idle.min(by: { $0.2 < $1.2 }) else { return (false, nil, false) }
                state.entries[oldest.0] = nil
                evicted = oldest.1
            }
            state.entries[ObjectIdentifier(channel)] = Entry(
                channel: channel, idleSince: now, deadline: now + requestTimeout)
            let sweep = !state.sweepScheduled
            state.sweepScheduled = true
            return (true, evicted, sweep)
        }
        evicted?.close(promise: nil)
        if sweep { scheduleSweep() }
        return admitted
    }

    /// A request's head arrived: the connection is busy, and the request must be complete in time.
    func requestStarted(_ channel: any Channel) {
        let now = NIODeadline.now()
        state.withLockedValue {
            guard var entry = $0.entries[ObjectIdentifier(channel)] else { return }
            entry.idleSince = nil
            entry.deadline = entry.deadline ?? now + requestTimeout
            $0.entries[ObjectIdentifier(channel)] = entry
        }
    }

    /// The whole request arrived: no deadline until the next one.
    func requestReceived(_ channel: any Channel) {
        state.withLockedValue { $0.entries[ObjectIdentifier(channel)]?.deadline = nil }
    }

    /// The answer went out: the connection is idle (evictable) again.
    func answered(_ channel: any Channel) {
        let now = NIODeadline.now()
        state.withLockedValue { $0.entries[ObjectIdentifier(channel)]?.idleSince = now }
    }

    func remove(_ channel: any Channel) {
        _ = state.withLockedValue { $0.entries.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    private func scheduleSweep() {
        loop.scheduleTask(in: .milliseconds(500)) { self.sweep() }
    }

    /// Closes connections past their deadline; runs again while any connection has a deadline.
    private func sweep() {
        let now = NIODeadline.now()
        let (late, again) = state.withLockedValue { state -> ([any Channel], Bool) in
            let late = state.entries.values.filter { ($0.deadline ?? .distantFuture) < now }.map(\.channel)
            let again = state.entries.values.contains { $0.deadline != nil }
            state.sweepScheduled = again
            return (late, again)
        }
        for channel in late { channel.close(promise: nil) }
        if again { scheduleSweep() }
    }
}

/// Sits after HTTP decoding on every control API connection and reports it to its listener's
/// `ConnectionRegistry`: opened, request started and received, answered, closed.
final class ConnectionGuardHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let registry: ConnectionRegistry
    private var registered = false
    private var removed = false

    init(registry: ConnectionRegistry) { self.registry = registry }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    private func start(context: ChannelHandlerContext) {
        guard !registered else { return }
        registered = true
        guard registry.admit(context.channel) else {
            removed = true
            context.close(promise: nil)
            return
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: registry.requestStarted(context.channel)
        case .end: registry.requestReceived(context.channel)
        case .body: break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { registry.answered(context.channel) }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(context: context)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finish(context: context)
    }

    private func finish(context: ChannelHandlerContext) {
        guard registered, !removed else { return }
        removed = true
        registry.remove(context.channel)
    }
}
