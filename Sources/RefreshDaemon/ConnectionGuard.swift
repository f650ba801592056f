import NIOCore
import NIOHTTPTypes
import Synchronization

/// The connections one control API listener holds, so it can never be exhausted.
///
/// A local user (any member of the socket's group; anyone once `listen` is set) can open
/// connections and say nothing. Unbounded, a thousand of them used up the process's descriptors:
/// the API stopped answering and spool intake could not open its directory. So each listener holds
/// at most `limit` connections. A new connection past the limit closes the connection that has
/// been idle longest (no request in progress: a fresh one that sent nothing, or one between
/// requests), so a real client always gets in; when every connection is in the middle of a request
/// the new one is closed instead. Requests in progress are bounded by the request timeout.
final class ConnectionRegistry: Sendable {
    private struct Entry {
        let channel: any Channel
        /// Since when the connection has had no request in progress; nil while one is.
        var idleSince: NIODeadline?
    }

    let limit: Int
    private let entries = Mutex<[ObjectIdentifier: Entry]>([:])

    init(limit: Int) { self.limit = limit }

    /// How many connections are held.
    var count: Int { entries.withLock { $0.count } }

    /// Registers a new connection; false when it must be closed (the limit is reached and no
    /// connection is idle). May close the longest-idle connection to make room.
    func admit(_ channel: any Channel) -> Bool {
        let (admitted, evicted) = entries.withLock { entries -> (Bool, (any Channel)?) in
            var evicted: (any Channel)?
            if entries.count >= limit {
                let idle = entries.compactMap { key, entry in entry.idleSince.map { (key, entry.channel, $0) } }
                guard let oldest = idle.min(by: { $0.2 < $1.2 }) else { return (false, nil) }
                entries[oldest.0] = nil
                evicted = oldest.1
            }
            entries[ObjectIdentifier(channel)] = Entry(channel: channel, idleSince: .now())
            return (true, evicted)
        }
        evicted?.close(promise: nil)
        return admitted
    }

    func setBusy(_ channel: any Channel, _ busy: Bool) {
        entries.withLock { $0[ObjectIdentifier(channel)]?.idleSince = busy ? nil : .now() }
    }

    func remove(_ channel: any Channel) {
        _ = entries.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }
}

/// Sits after HTTP decoding on every control API connection: registers it with its listener's
/// `ConnectionRegistry`, and closes it when a request is not complete (head and body) within
/// `requestTimeout` of the connection opening or of the request's head. Between requests the
/// server's idle timeout applies.
final class ConnectionGuardHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let registry: ConnectionRegistry
    private let requestTimeout: TimeAmount
    private var registered = false
    private var removed = false
    private var timer: Scheduled<Void>?

    init(registry: ConnectionRegistry, requestTimeout: TimeAmount) {
        self.registry = registry
        self.requestTimeout = requestTimeout
    }

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
        arm(context: context)
    }

    private func arm(context: ChannelHandlerContext) {
        timer?.cancel()
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: requestTimeout) { channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            registry.setBusy(context.channel, true)
            arm(context: context)
        case .end:
            timer?.cancel()
            timer = nil
        case .body:
            break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { registry.setBusy(context.channel, false) }
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
        timer?.cancel()
        timer = nil
        guard registered, !removed else { return }
        removed = true
        registry.remove(context.channel)
    }
}
