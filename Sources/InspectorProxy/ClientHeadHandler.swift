import FaultInjection
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import WebSocketWire

/// The first handler on an accepted connection: reads the client's request
/// head, connects to the upstream, sends the head on (Host rewritten) and
/// then turns both channels into a relay watched by a ``ConnectionTap``.
/// When the upstream cannot be reached the client gets a 502.
final class ClientHeadHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let configuration: ProxyConfiguration
    private let upstreamTLS: NIOSSLContext?
    private let id: Int
    private let sink: @Sendable (InspectorEvent) -> Void
    private let diagnostics: @Sendable (String) -> Void
    private let faults: FaultController?
    private var buffered = ByteBuffer()
    private var connecting = false
    /// The client half-closed before the relay was in place; pass it on then.
    private var clientInputClosed = false
    private var timeout: Scheduled<Void>?

    init(
        configuration: ProxyConfiguration,
        upstreamTLS: NIOSSLContext?,
        id: Int,
        sink: @escaping @Sendable (InspectorEvent) -> Void,
        diagnostics: @escaping @Sendable (String) -> Void,
        faults: FaultController?
    ) {
        self.faults = faults
        self.configuration = configuration
        self.upstreamTLS = upstreamTLS
        self.id = id
        self.sink = sink
        self.diagnostics = diagnostics
    }

    func channelActive(context: ChannelHandlerContext) {
        let seconds = configuration.handshakeTimeout
        let diagnostics = self.diagnostics
        let id = self.id
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        timeout = context.eventLoop.scheduleTask(in: .seconds(seconds)) {
            diagnostics("connection \(id): no complete request head within \(seconds) s; closing")
            loopBoundContext.value.close(promise: nil)
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            clientInputClosed = true
            if !connecting {
                // Closed before a whole request head arrived: nothing to relay.
                context.close(promise: nil)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffered.writeBuffer(&bytes)
        guard !connecting else { return }
        switch buffered.withUnsafeReadableBytes(HTTPHead.parse) {
        case .incomplete:
            return
        case .invalid(let reason):
            diagnostics("connection \(id): not an HTTP request (\(reason)); closing")
            respond(context, status: "400 Bad Request", body: "wsinspect: the request is not HTTP/1.1: \(reason)\n")
        case .complete(let head, let headLength):
            let decision = Route.decide(
                for: head,
                configuration: configuration,
                clientAddress: context.channel.remoteAddress?.ipAddress
            )
            switch decision {
            case .reject(let status, let reason):
                diagnostics("connection \(id): \(reason)")
                respond(context, status: status, body: "wsinspect: \(reason)\n")
            case .route(let route):
                timeout?.cancel()
                let request = HandshakeRequest(head: head)
                if let faults {
                    var random = SplitMix64(seed: faults.seed ^ UInt64(truncatingIfNeeded: id))
                    if let rule = faults.rules.refuses(connection: id, target: request.target, random: &random) {
                        refuse(context, rule: rule, target: request.target)
                        return
                    }
                }
                connecting = true
                connectUpstream(context, route: route, headLength: headLength, request: request)
            }
        }
    }

    /// A `refuse` rule (Toxiproxy's "down"): the client is reset before the
    /// upstream hears of it.
    private func refuse(_ context: ChannelHandlerContext, rule: FaultRule, target: String) {
        sink(
            .fault(
                FaultEvent(
                    connection: id,
                    time: ConnectionTap.now(),
                    rule: rule.id,
                    action: rule.action.name,
                    direction: nil,
                    detail:
                        "refused \(target) from \(context.channel.remoteAddress.map(Self.describe) ?? "the client") before contacting the upstream"
                )
            )
        )
        if let provider = context.channel as? SocketOptionProvider {
            _ = provider.setSoLinger(linger(l_onoff: 1, l_linger: 0))
        }
        context.close(promise: nil)
    }

    private func connectUpstream(_ context: ChannelHandlerContext, route: Route, headLength: Int, request: HandshakeRequest) {
        let upstream = route.target
        // Stop reading from the client until the relay is in place.
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        let tls = upstream.usesTLS && !route.tunnel ? upstreamTLS : nil
        // SNI carries a host name, never an address (RFC 6066 §3).
        let serverName =
            upstream.host.contains(":") || upstream.host.allSatisfy({ $0.isNumber || $0 == "." })
            ? nil : upstream.host
        // With TLS the connection counts as made once the handshake is done,
        // so a certificate problem is answered with a 502 like a refusal.
        let handshake = context.eventLoop.makePromise(of: Void.self)
        if tls == nil { handshake.succeed(()) }
        ClientBootstrap(group: context.eventLoop)
            .channelInitializer { channel in
                guard let tls else { return channel.eventLoop.makeSucceededVoidFuture() }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverName))
                    try channel.pipeline.syncOperations.addHandler(TLSHandshakeWaiter(handshake))
                }
            }
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.autoRead, value: false)
            .channelOption(.tcpOption(.tcp_nodelay), value: configuration.nagle.initialNoDelay ? 1 : 0)
            .channelOption(.recvAllocator, value: ProxyConfiguration.readSizes)
            .connectTimeout(.seconds(10))
            .connect(host: upstream.host, port: upstream.port)
            .flatMap { channel in
                handshake.futureResult.map { channel }.flatMapErrorThrowing { error in
                    channel.close(promise: nil)
                    throw error
                }
            }
            .whenComplete { result in
                let context = loopBoundContext.value
                let handler = loopBoundSelf.value
                switch result {
                case .success(let upstreamChannel):
                    handler.startRelay(context, upstreamChannel: upstreamChannel, route: route, headLength: headLength, request: request)
                case .failure(let error):
                    let reason = describeNetworkError(error)
                    handler.diagnostics("connection \(handler.id): cannot reach the upstream \(upstream): \(reason)")
                    handler.respond(
                        context,
                        status: "502 Bad Gateway",
                        body: "wsinspect: cannot reach the upstream \(upstream): \(reason)\n"
                    )
                }
            }
    }

    private func startRelay(
        _ context: ChannelHandlerContext,
        upstreamChannel: Channel,
        route: Route,
        headLength: Int,
        request: HandshakeRequest
    ) {
        let client = context.channel.remoteAddress.map(Self.describe) ?? "unknown"
        let server = upstreamChannel.remoteAddress.map(Self.describe) ?? route.target.hostHeader
        let tap = ConnectionTap(
            id: id,
            client: client,
            server: server,
            configuration: configuration.observer,
            decodes: configuration.decodesTraffic,
            sink: sink
        )
        if route.tunnel {
            let id = self.id
            let diagnostics = self.diagnostics
            let target = route.target.hostHeader
            tap.onTLSTunnel = {
                diagnostics("connection \(id): the CONNECT tunnel to \(target) carries TLS; relayed without decoding")
            }
        }
        let clientSide: ChannelHandler
        let upstreamSide: ChannelHandler
        var faultRelay: FaultRelay?
        if let faults, !route.tunnel {
            let session = FaultSession(
                connection: id,
                target: request.target,
                isUpgradeRequest: request.isUpgrade,
                seed: faults.seed,
                maskingKey: { MaskingKey(rawValue: UInt32.random(in: 0...UInt32.max)) }
            )
            let relay = FaultRelay(
                session: session,
                tap: tap,
                controller: faults,
                eventLoop: context.eventLoop,
                endpoints: ConnectionEndpoints(client: client, server: server),
                sink: sink
            )
            (clientSide, upstreamSide) = relay.makeHandlers(nagle: configuration.nagle)
            faultRelay = relay
        } else {
            (clientSide, upstreamSide) = RelayHandler.pair(tap: tap, nagle: configuration.nagle) { reason in
                tap.finish(reason)
            }
        }
        do {
            try upstreamChannel.pipeline.syncOperations.addHandler(upstreamSide)
            if configuration.idleTimeout > 0 {
                try upstreamChannel.pipeline.syncOperations.addHandler(
                    IdleStateHandler(allTimeout: .seconds(configuration.idleTimeout)),
                    position: .first
                )
                try context.pipeline.syncOperations.addHandler(
                    IdleStateHandler(allTimeout: .seconds(configuration.idleTimeout)),
                    position: .first
                )
                try context.pipeline.syncOperations.addHandler(IdleCloser())
                try upstreamChannel.pipeline.syncOperations.addHandler(IdleCloser())
            }
            try context.pipeline.syncOperations.addHandler(clientSide)
        } catch {
            context.close(promise: nil)
            upstreamChannel.close(promise: nil)
            return
        }
        // The head goes out rewritten; the tap sees exactly what the client
        // sent, so the log shows the client's own request. A CONNECT head is
        // answered here and goes nowhere: the tunnel's bytes follow it.
        let original = buffered.readSlice(length: headLength)!
        var head: ByteBuffer
        if route.tunnel {
            head = context.channel.allocator.buffer(capacity: buffered.readableBytes)
            context.writeAndFlush(
                wrapOutboundOut(context.channel.allocator.buffer(string: "HTTP/1.1 200 Connection Established\r\n\r\n")),
                promise: nil
            )
        } else {
            head = context.channel.allocator.buffer(bytes: route.rewriter.rewrite(Array(original.readableBytesView)))
            tap.observe(original, .clientToServer)
        }
        if let faultRelay {
            // What followed the head is the session's to cut into frames.
            if head.readableBytes > 0 { upstreamChannel.writeAndFlush(head, promise: nil) }
            if buffered.readableBytes > 0 { faultRelay.receive(buffered, from: .clientToServer) }
            if clientInputClosed { faultRelay.receiveEnd(from: .clientToServer, full: false) }
        } else {
            if buffered.readableBytes > 0 {
                tap.observe(buffered, .clientToServer)
                head.writeImmutableBuffer(buffered)
            }
            if head.readableBytes > 0 { upstreamChannel.writeAndFlush(head, promise: nil) }
        }
        if clientInputClosed && faultRelay == nil {
            upstreamChannel.close(mode: .output, promise: nil)
        }
        buffered.clear()
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
        context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
        upstreamChannel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
        context.read()
        upstreamChannel.read()
    }

    private func respond(_ context: ChannelHandlerContext, status: String, body: String) {
        let text =
            "HTTP/1.1 \(status)\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: text))).whenComplete { _ in
            context.close(promise: nil)
        }
    }

    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}

/// Closes a connection that has been idle for the configured time.
final class IdleCloser: ChannelInboundHandler {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}

/// Completes a promise when the upstream's TLS handshake is done, or fails
/// it with the handshake's error; passes everything else on.
final class TLSHandshakeWaiter: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    private var promise: EventLoopPromise<Void>?

    init(_ promise: EventLoopPromise<Void>) {
        self.promise = promise
    }

    // The upstream channel does not read by itself until the relay is in
    // place; the handshake needs reads, so ask for them until it is done.
    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        context.read()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.fireChannelReadComplete()
        if promise != nil { context.read() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            promise?.succeed(())
            promise = nil
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let promise {
            self.promise = nil
            promise.fail(error)
            return
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise?.fail(ChannelError.eof)
        promise = nil
        context.fireChannelInactive()
    }
}
