import NIOCore
import WebSocketWire

/// How the proxy listens, where it forwards and how it logs; the CLI maps
/// its flags onto this.
public struct ProxyConfiguration: Sendable {
    /// Address to listen on.
    public var listenHost = "127.0.0.1"
    /// Port to listen on; 0 picks a free one (the readiness line says which).
    public var listenPort = 9000
    public enum Mode: String, Sendable, CaseIterable {
        /// Every connection goes to ``upstream``.
        case reverse
        /// Clients name the target themselves, as with any HTTP proxy:
        /// absolute-URI requests and `CONNECT host:port` tunnels.
        case forward
    }

    public var mode = Mode.reverse
    /// Where connections go in reverse mode; unused in forward mode.
    public var upstream: UpstreamURL?
    /// Add an X-Forwarded-For header naming the client (RFC 7239's older cousin).
    public var addForwardedFor = false
    /// Seconds a client may take to send its request head.
    public var handshakeTimeout: Int64 = 10
    /// Seconds without traffic either way before a connection is closed; 0 = never.
    public var idleTimeout: Int64 = 0
    /// When Nagle's algorithm (RFC 896) may gather the proxy's small writes
    /// into fewer segments, on both sockets of every connection.
    public enum Nagle: String, Sendable, CaseIterable {
        /// Only while the peer is behind, never for the first writes after
        /// it spoke, and never for more than a millisecond (``NagleSwitch``):
        /// segments as few as socat's under a pipeline of small messages,
        /// without its delayed-ACK waits.
        case auto
        /// Always, as socat does by default: a frame written as header, then
        /// payload, or a message right after one the server does not answer,
        /// waits ~40 ms for the server's delayed ACK (RFC 1122 4.2.3.2).
        case on
        /// Never (TCP_NODELAY): every read is sent at once, one segment each.
        case off

        /// TCP_NODELAY when a connection opens.
        var initialNoDelay: Bool { self != .on }
    }

    public var nagle = Nagle.auto
    /// For a `wss://` upstream: a PEM file of CA certificates to trust instead
    /// of the system's; `nil` uses the system trust store.
    public var upstreamCAFile: String?
    /// For a `wss://` upstream: skip certificate verification (testing only).
    public var upstreamInsecure = false
    /// PEM certificate chain and key to accept clients over TLS (`wss://` to
    /// the proxy); `nil` listens in plain text.
    public var listenCertificate: (chain: String, key: String)?

    /// Record every client connection's traffic (as the client saw it, after
    /// TLS is removed) to
    /// this pcap file, which `wsinspect read` and Wireshark decode.
    public var pcapPath: String?
    /// How the decoder that logs frames behaves.
    public var observer = ObserverConfiguration()
    /// False relays without decoding or logging anything (`--no-log`): the
    /// proxy then costs what a plain byte relay costs.
    public var decodesTraffic = true

    /// How much one read takes from a socket: it starts small and adapts to
    /// the traffic, up to 256 KiB as `socat -b 262144`, so large messages
    /// take a quarter of the reads (and writes) that NIO's default 64 KiB
    /// ceiling would, while an idle connection holds no buffer at all.
    static let readSizes = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 256 << 10)

    public init(upstream: UpstreamURL?, mode: Mode = .reverse) {
        self.upstream = upstream
        self.mode = mode
    }
}
