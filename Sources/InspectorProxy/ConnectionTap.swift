import NIOCore
import WebSocketWire

#if canImport(Glibc)
import Glibc
#endif

/// Watches one relayed connection: every byte the relay forwards is also fed,
/// unchanged, to a ``ConnectionObserver``, whose events go to the log sink.
/// Lives on the connection's event loop; both relay handlers share it.
final class ConnectionTap {
    private var observer: ConnectionObserver
    private let sink: @Sendable (InspectorEvent) -> Void
    /// False with `--no-log`: bytes are relayed and nothing is decoded.
    private let decodes: Bool
    private var finished = false
    /// A reset was seen on either side: the connection ends as reset,
    /// whichever side's closing is noticed first.
    var sawReset = false
    /// For a CONNECT tunnel: called once if the client's first bytes are a
    /// TLS record (RFC 8446 §5.1, content type 22), which cannot be decoded.
    var onTLSTunnel: (() -> Void)?

    init(
        id: Int,
        client: String,
        server: String,
        configuration: ObserverConfiguration,
        decodes: Bool = true,
        sink: @escaping @Sendable (InspectorEvent) -> Void
    ) {
        self.decodes = decodes
        observer = ConnectionObserver(
            id: id,
            endpoints: ConnectionEndpoints(client: client, server: server),
            startsAtBeginning: true,
            configuration: configuration
        )
        self.sink = sink
    }

    func observe(_ bytes: ByteBuffer, _ direction: Direction) {
        guard !finished else { return }
        if let onTLSTunnel, direction == .clientToServer, let first = bytes.readableBytesView.first {
            self.onTLSTunnel = nil
            if first == 0x16 { onTLSTunnel() }
        }
        guard decodes else { return }
        observer.receive(bytes, from: direction, at: ConnectionTap.now())
        drain()
    }

    func finish(_ reason: ConnectionClosed.Reason) {
        guard !finished else { return }
        finished = true
        guard decodes else { return }
        observer.finish(sawReset ? .tcpReset : reason, at: ConnectionTap.now())
        drain()
    }

    private func drain() {
        while let event = observer.nextEvent() { sink(event) }
    }

    /// Wall-clock time for the log; the observer itself never reads a clock.
    static func now() -> Timestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Timestamp(nanoseconds: Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec))
    }
}
