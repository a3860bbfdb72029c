import FaultInjection
import NIOCore
import WebSocketWire

#if canImport(Glibc)
import Glibc
#endif

/// The relay of one connection when faults are on: both sides' bytes go
/// into a ``FaultSession`` and this class only carries out what it returns —
/// writes, half-closes, closes, resets — at the times it names. The tap sees
/// what each receiver is actually sent, so the log shows the frames as
/// faulted. Confined to the connection's event loop.
final class FaultRelay {
    private var session: FaultSession
    private let tap: ConnectionTap
    private let controller: FaultController
    private let eventLoop: EventLoop
    private let sink: @Sendable (InspectorEvent) -> Void
    private let endpoints: ConnectionEndpoints
    private var rulesVersion = -1
    private var timer: Scheduled<Void>?
    private var timerDue: Timestamp?
    private var client: FaultRelayHandler?
    private var upstream: FaultRelayHandler?
    private var openSides = 2
    private var finished = false
    /// The sender stops being read while this much waits for its receiver.
    private static let queueLimit = 1024 * 1024

    init(
        session: FaultSession,
        tap: ConnectionTap,
        controller: FaultController,
        eventLoop: EventLoop,
        endpoints: ConnectionEndpoints,
        sink: @escaping @Sendable (InspectorEvent) -> Void
    ) {
        self.session = session
        self.tap = tap
        self.controller = controller
        self.eventLoop = eventLoop
        self.endpoints = endpoints
        self.sink = sink
    }

    /// The two handlers: the client side's reads travel to the server.
    func makeHandlers(nagle: ProxyConfiguration.Nagle) -> (client: FaultRelayHandler, upstream: FaultRelayHandler) {
        let client = FaultRelayHandler(relay: self, direction: .clientToServer, nagle: nagle)
        let upstream = FaultRelayHandler(relay: self, direction: .serverToClient, nagle: nagle)
        self.client = client
        self.upstream = upstream
        controller.register(self, id: session.connection, on: eventLoop)
        return (client, upstream)
    }

    var info: FaultController.ConnectionInfo {
        func direction(_ d: Direction) -> FaultController.ConnectionInfo.DirectionInfo {
            let stats = session.statistics(d)
            return .init(messages: stats.messages, bytes: stats.bytes, paused: stats.paused)
        }
        return FaultController.ConnectionInfo(
            id: session.connection,
            client: endpoints.client,
            server: endpoints.server,
            path: session.target,
            state: session.isClosing ? "closing" : session.isUpgraded ? "open" : "handshake",
            toServer: direction(.clientToServer),
            toClient: direction(.serverToClient)
        )
    }

    // MARK: From the handlers and the controller

    func receive(_ bytes: ByteBuffer, from direction: Direction) {
        let now = ConnectionTap.now()
        syncRules(at: now)
        session.receive(bytes, from: direction, at: now)
        pump()
    }

    func receiveEnd(from direction: Direction, full: Bool) {
        session.receiveEnd(from: direction, full: full, at: ConnectionTap.now())
        pump()
    }

    func inject(_ message: InjectedMessage, to direction: Direction) throws {
        guard !finished else {
            throw FaultController.ControlError(kind: .closed, description: "connection \(session.connection) is closing")
        }
        guard session.isUpgraded else {
            throw FaultController.ControlError(
                kind: .notUpgraded,
                description: "connection \(session.connection) has not upgraded to WebSocket yet"
            )
        }
        guard session.inject(message, to: direction, at: ConnectionTap.now()) else {
            throw FaultController.ControlError(
                kind: .closed,
                description: "the \(direction == .clientToServer ? "server" : "client") side of connection \(session.connection) is closed"
            )
        }
        pump()
    }

    func setPaused(_ paused: Bool, _ direction: Direction) {
        session.setPaused(paused, direction, at: ConnectionTap.now())
        pump()
    }

    /// A side closed for good. The log's close event waits for both, so that
    /// frames still held for delivery are logged first.
    func sideClosed(_ direction: Direction) {
        openSides -= 1
        if openSides == 0 { finish(.tcpFin) }
    }

    func sawReset(from direction: Direction) {
        tap.sawReset = true
        terminate(.abort)
    }

    // MARK: Carrying out

    private func syncRules(at now: Timestamp) {
        guard controller.rules.version != rulesVersion else { return }
        let (version, rules) = controller.rules.snapshot
        rulesVersion = version
        session.update(rules: rules, at: now)
    }

    /// Delivers what is due, logs applied faults, and sets the timer for
    /// what is due later.
    func pump() {
        guard !finished else { return }
        let now = ConnectionTap.now()
        syncRules(at: now)
        session.advance(to: now)
        if let termination = session.termination {
            drainEvents()
            terminate(termination)
            return
        }
        for direction in Direction.allCases {
            guard let receiver = handler(receiving: direction) else { continue }
            var wrote = false
            while let delivery = session.nextDelivery(direction, at: now) {
                switch delivery {
                case .bytes(let bytes):
                    tap.observe(bytes, direction)
                    receiver.write(bytes)
                    wrote = true
                case .endOutput:
                    receiver.flush()
                    receiver.closeOutput()
                case .closeReceiver:
                    receiver.flush()
                    receiver.close()
                case .closeBoth:
                    receiver.flush()
                    terminate(.close)
                    return
                case .log(let event):
                    sink(.fault(event))
                }
            }
            if wrote { receiver.flush() }
        }
        drainEvents()
        schedule(now: now)
        client?.readIfAllowed()
        upstream?.readIfAllowed()
    }

    private func drainEvents() {
        while let event = session.nextEvent() { sink(.fault(event)) }
    }

    private func schedule(now: Timestamp) {
        guard let due = session.nextWakeUp, due.nanoseconds < Int64.max / 2 else {
            timer?.cancel()
            timer = nil
            timerDue = nil
            return
        }
        if let timerDue, timerDue == due { return }
        timer?.cancel()
        timerDue = due
        let wait = max(0, due - now)
        let loopBound = NIOLoopBound(self, eventLoop: eventLoop)
        timer = eventLoop.scheduleTask(in: .nanoseconds(wait)) {
            let relay = loopBound.value
            relay.timer = nil
            relay.timerDue = nil
            relay.pump()
        }
    }

    private func terminate(_ termination: FaultSession.Termination) {
        guard !finished else { return }
        if termination == .abort {
            tap.sawReset = true
            client?.reset()
            upstream?.reset()
        }
        client?.close()
        upstream?.close()
        finish(termination == .abort ? .tcpReset : .tcpFin)
    }

    private func finish(_ reason: ConnectionClosed.Reason) {
        guard !finished else { return }
        finished = true
        timer?.cancel()
        timer = nil
        for event in session.abandon() { sink(.fault(event)) }
        tap.finish(reason)
        controller.unregister(id: session.connection)
        client = nil
        upstream = nil
    }

    /// Whether the sender in `direction` may be read: its receiver can take
    /// more and not too much waits for it.
    func mayRead(_ direction: Direction) -> Bool {
        guard let receiver = handler(receiving: direction) else { return true }
        return receiver.isWritable && session.queuedBytes(direction) < FaultRelay.queueLimit
    }

    private func handler(receiving direction: Direction) -> FaultRelayHandler? {
        direction == .clientToServer ? upstream : client
    }
}

/// One side of a faulting relay: hands what it reads to the ``FaultRelay``
/// and writes what the relay tells it to.
final class FaultRelayHandler: ChannelDuplexHandler, NagleSwitched {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let relay: FaultRelay
    /// Which way the bytes this handler reads travel.
    private let direction: Direction
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var closed = false
    /// When this handler's socket may gather small writes.
    var nagle: NagleSwitch

    init(relay: FaultRelay, direction: Direction, nagle: ProxyConfiguration.Nagle) {
        self.relay = relay
        self.direction = direction
        self.nagle = NagleSwitch(policy: nagle)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        nagle.peerSent()
        relay.receive(unwrapInboundIn(data), from: direction)
    }

    func channelInactive(context: ChannelHandlerContext) {
        guard !closed else { return }
        closed = true
        relay.receiveEnd(from: direction, full: true)
        relay.sideClosed(direction)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            relay.receiveEnd(from: direction, full: false)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let error = error as? IOError, error.errnoCode == ECONNRESET {
            relay.sawReset(from: direction)
        }
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // The other side may have been waiting for this one to drain.
        if context.channel.isWritable { relay.pump() }
    }

    func read(context: ChannelHandlerContext) {
        if relay.mayRead(direction) {
            context.read()
        } else {
            pendingRead = true
        }
    }

    func readIfAllowed() {
        guard pendingRead, let context, relay.mayRead(direction) else { return }
        pendingRead = false
        context.read()
    }

    var isWritable: Bool { context?.channel.isWritable ?? false }

    func write(_ bytes: ByteBuffer) {
        nagle.willWrite(bytes.readableBytes)
        context?.write(wrapOutboundOut(bytes), promise: nil)
    }

    func flush() {
        guard let context else { return }
        flushSwitchingNagle(context)
    }

    func closeOutput() {
        context?.close(mode: .output, promise: nil)
    }

    func close() {
        context?.close(promise: nil)
    }

    /// The next close resets the connection (SO_LINGER 0).
    func reset() {
        if let provider = context?.channel as? SocketOptionProvider {
            _ = provider.setSoLinger(linger(l_onoff: 1, l_linger: 0))
        }
    }
}
