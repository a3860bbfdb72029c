import WebSocketWire

/// How the proxy listens, where it forwards and how it logs; the CLI maps
/// its flags onto this.
public struct ProxyConfiguration: Sendable {
    /// Address to listen on.
    public var listenHost = "127.0.0.1"
    /// Port to listen on; 0 picks a free one (the readiness line says which).
    public var listenPort = 9000
    public var upstream: UpstreamURL
    /// Add an X-Forwarded-For header naming the client (RFC 7239's older cousin).
    public var addForwardedFor = false
    /// Seconds a client may take to send its request head.
    public var handshakeTimeout: Int64 = 10
    /// Seconds without traffic either way before a connection is closed; 0 = never.
    public var idleTimeout: Int64 = 0
    /// Record every client connection's traffic (as the client saw it) to
    /// this pcap file, which `wsinspect read` and Wireshark decode.
    public var pcapPath: String?
    /// How the decoder that logs frames behaves.
    public var observer = ObserverConfiguration()

    public init(upstream: UpstreamURL) {
        self.upstream = upstream
    }
}
