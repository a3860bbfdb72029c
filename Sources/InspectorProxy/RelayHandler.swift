import NIOCore
import WebSocketWire

#if canImport(Glibc)
import Glibc
#endif

/// One half of a byte relay between two channels on the same event loop (the
/// "glue" pattern of swift-nio-examples' connect-proxy): what one side reads
/// the other writes, unchanged and in order. Reads are only asked for while
/// the partner can take more (back-pressure, bounded memory), half-closes
/// pass through, and every byte is shown to the tap on its way.
final class RelayHandler: ChannelDuplexHandler, NagleSwitched {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: RelayHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    /// What this read cycle relayed, for the tap once it is flushed on:
    /// decoding for the log never stands between a read and its write.
    private var unobserved: [ByteBuffer] = []
    private let tap: ConnectionTap
    /// Which way the bytes this handler reads travel.
    private let direction: Direction
    private let onClose: (ConnectionClosed.Reason) -> Void
    /// When this handler's socket may gather small writes.
    var nagle: NagleSwitch

    private init(
        tap: ConnectionTap,
        direction: Direction,
        nagle: ProxyConfiguration.Nagle,
        onClose: @escaping (ConnectionClosed.Reason) -> Void
    ) {
        self.tap = tap
        self.direction = direction
        self.nagle = NagleSwitch(policy: nagle)
        self.onClose = onClose
    }

    /// A pair for the client side and the upstream side of one connection.
    static func pair(
        tap: ConnectionTap,
        nagle: ProxyConfiguration.Nagle,
        onClose: @escaping (ConnectionClosed.Reason) -> Void
    ) -> (client: RelayHandler, upstream: RelayHandler) {
        let client = RelayHandler(tap: tap, direction: .clientToServer, nagle: nagle, onClose: onClose)
        let upstream = RelayHandler(tap: tap, direction: .serverToClient, nagle: nagle, onClose: onClose)
        client.partner = upstream
        upstream.partner = client
        return (client, upstream)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        nagle.peerSent()
        let bytes = unwrapInboundIn(data)
        partner?.partnerWrite(bytes)
        unobserved.append(bytes)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
        observeRelayed()
    }

    private func observeRelayed() {
        for bytes in unobserved { tap.observe(bytes, direction) }
        unobserved.removeAll(keepingCapacity: true)
    }

    func channelInactive(context: ChannelHandlerContext) {
        observeRelayed()
        onClose(.tcpFin)
        partner?.partnerClose()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, case .inputClosed = event {
            // The peer half-closed: pass its FIN on, keep the other way open.
            partner?.partnerWriteEOF()
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let error = error as? IOError, error.errnoCode == ECONNRESET {
            // A reset on one side becomes a reset on the other (SO_LINGER 0).
            tap.sawReset = true
            partner?.partnerReset()
        }
        partner?.partnerClose()
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            partner?.partnerBecameWritable()
        }
    }

    func read(context: ChannelHandlerContext) {
        if let partner, partner.partnerWritable {
            context.read()
        } else {
            pendingRead = true
        }
    }

    private func partnerWrite(_ bytes: ByteBuffer) {
        nagle.willWrite(bytes.readableBytes)
        context?.write(wrapOutboundOut(bytes), promise: nil)
    }

    private func partnerFlush() {
        guard let context else { return }
        flushSwitchingNagle(context)
    }

    private func partnerWriteEOF() {
        context?.close(mode: .output, promise: nil)
    }

    private func partnerClose() {
        context?.close(promise: nil)
    }

    private func partnerReset() {
        if let provider = context?.channel as? SocketOptionProvider {
            _ = provider.setSoLinger(linger(l_onoff: 1, l_linger: 0))
        }
    }

    private func partnerBecameWritable() {
        if pendingRead, let context {
            pendingRead = false
            context.read()
        }
    }

    private var partnerWritable: Bool {
        context?.channel.isWritable ?? false
    }
}
