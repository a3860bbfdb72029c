import FaultInjection
import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL
import Synchronization
import WebSocketWire

#if canImport(Glibc)
import Glibc
#endif

/// The reverse proxy: accepts connections, relays each to the upstream and
/// logs every frame through the shared decoder. Bytes are forwarded
/// unchanged except the request head's Host (and path base).
public final class ProxyServer: Sendable {
    public let configuration: ProxyConfiguration
    private let group: MultiThreadedEventLoopGroup
    /// The proxy's event loops, for servers that run beside it (the control API).
    public var eventLoopGroup: EventLoopGroup { group }
    private let channel: Channel
    private let recording: NIOWritePCAPHandler.SynchronizedFileSink?
    /// Fault injection, when on: its rules and live connections. `nil`
    /// relays every byte unchanged.
    public let faults: FaultController?

    public struct StartError: Error, CustomStringConvertible {
        public enum Kind: Sendable {
            case addressInUse, permissionDenied, badAddress, cannotRecord, badCertificate, invalidCertificate, other
        }
        public var kind: Kind
        public var description: String
    }

    /// The address actually bound (port 0 picks one).
    public var localAddress: String {
        channel.localAddress.map(ClientHeadHandler.describe) ?? "\(configuration.listenHost):\(configuration.listenPort)"
    }

    /// Binds and starts accepting. `sink` receives every event, on event-loop
    /// threads: it must be quick and thread-safe. `diagnostics` gets
    /// human-readable problems (an unreachable upstream, a timeout).
    public init(
        configuration: ProxyConfiguration,
        threads: Int = System.coreCount,
        faults: FaultController? = nil,
        sink: @escaping @Sendable (InspectorEvent) -> Void,
        diagnostics: @escaping @Sendable (String) -> Void
    ) throws {
        self.configuration = configuration
        self.faults = faults
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let counter = IDCounter()
        let (serverTLS, upstreamTLS) = try ProxyServer.makeTLSContexts(configuration)
        var recording: NIOWritePCAPHandler.SynchronizedFileSink?
        if let path = configuration.pcapPath {
            do {
                recording = try NIOWritePCAPHandler.SynchronizedFileSink.fileSinkWritingToFile(path: path) { error in
                    diagnostics("\(path): recording stopped: \(error)")
                }
            } catch {
                try? group.syncShutdownGracefully()
                throw StartError(kind: .cannotRecord, description: "\(path): cannot write the pcap file: \(error)")
            }
        }
        self.recording = recording
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            // TCP-level options (`.socketOption(.tcp_nodelay)` would set
            // SOL_SOCKET option 1, SO_DEBUG); accepted sockets inherit the
            // listener's, and get their own too.
            .serverChannelOption(.tcpOption(.tcp_nodelay), value: configuration.nagle.initialNoDelay ? 1 : 0)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: configuration.nagle.initialNoDelay ? 1 : 0)
            .childChannelOption(.recvAllocator, value: ProxyConfiguration.readSizes)
            .childChannelInitializer { channel in
                let id = counter.next()
                return channel.eventLoop.makeCompletedFuture {
                    if let serverTLS {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: serverTLS))
                    }
                    if let recording {
                        // First in the pipeline: records the bytes exactly as the client sent and got them.
                        try channel.pipeline.syncOperations.addHandler(
                            NIOWritePCAPHandler(mode: .server, fileSink: recording.write(buffer:))
                        )
                    }
                    try channel.pipeline.syncOperations.addHandler(
                        ClientHeadHandler(
                            configuration: configuration,
                            upstreamTLS: upstreamTLS,
                            id: id,
                            sink: sink,
                            diagnostics: diagnostics,
                            faults: faults
                        )
                    )
                }
            }
        do {
            channel = try bootstrap.bind(host: configuration.listenHost, port: configuration.listenPort).wait()
        } catch {
            try? group.syncShutdownGracefully()
            try? recording?.syncClose()
            let kind: StartError.Kind
            if let io = error as? IOError, io.errnoCode == EADDRINUSE {
                kind = .addressInUse
            } else if let io = error as? IOError, io.errnoCode == EACCES {
                kind = .permissionDenied
            } else if error is SocketAddressError {
                kind = .badAddress
            } else {
                kind = .other
            }
            throw StartError(
                kind: kind,
                description: "cannot listen on \(configuration.listenHost):\(configuration.listenPort): \(describeNetworkError(error))"
            )
        }
        self.group = group
    }

    /// TLS for accepting clients (`--tls-cert/--tls-key`) and for a `wss://`
    /// upstream (system trust store, `--ca-file`, or none with `--insecure`).
    private static func makeTLSContexts(_ configuration: ProxyConfiguration) throws -> (NIOSSLContext?, NIOSSLContext?) {
        var server: NIOSSLContext?
        var upstream: NIOSSLContext?
        if let (chain, key) = configuration.listenCertificate {
            let certificates = try load("--tls-cert", chain, "a PEM certificate chain") {
                try NIOSSLCertificate.fromPEMFile(chain).map { NIOSSLCertificateSource.certificate($0) }
            }
            let privateKey = try load("--tls-key", key, "a PEM private key") {
                try NIOSSLPrivateKey(file: key, format: .pem)
            }
            let tls = TLSConfiguration.makeServerConfiguration(certificateChain: certificates, privateKey: .privateKey(privateKey))
            do {
                server = try NIOSSLContext(configuration: tls)
            } catch {
                throw StartError(
                    kind: .invalidCertificate,
                    description:
                        "--tls-cert \(chain) with --tls-key \(key): cannot set up TLS (\(error)); does the key belong to the certificate?"
                )
            }
        }
        if configuration.upstream?.usesTLS == true {
            var tls = TLSConfiguration.makeClientConfiguration()
            if let file = configuration.upstreamCAFile {
                tls.trustRoots = .certificates(try load("--ca-file", file, "PEM certificates") { try NIOSSLCertificate.fromPEMFile(file) })
            }
            if configuration.upstreamInsecure {
                tls.certificateVerification = .none
            }
            do {
                upstream = try NIOSSLContext(configuration: tls)
            } catch {
                throw StartError(kind: .invalidCertificate, description: "cannot set up TLS for the upstream: \(error)")
            }
        }
        return (server, upstream)
    }

    /// Loads a PEM file for `flag`, telling a file that cannot be read (and
    /// why, from errno) from one that holds no `what`.
    private static func load<T>(_ flag: String, _ path: String, _ what: String, _ body: () throws -> T) throws -> T {
        guard let file = fopen(path, "r") else {
            throw StartError(kind: .badCertificate, description: "\(flag) \(path): cannot read it: \(String(cString: strerror(errno)))")
        }
        fclose(file)
        do {
            return try body()
        } catch {
            throw StartError(kind: .invalidCertificate, description: "\(flag) \(path): not \(what) (\(error))")
        }
    }

    /// Runs until the listening socket closes (see ``stopListening()``).
    public func wait() throws {
        try channel.closeFuture.wait()
    }

    /// Stops accepting; ``wait()`` returns. Safe from any thread.
    public func stopListening() {
        channel.close(promise: nil)
    }

    /// Closes every relayed connection — each is logged as closed — and
    /// stops the event loops. Call once, after ``wait()`` returned.
    public func shutdown() {
        channel.close(promise: nil)
        try? group.syncShutdownGracefully()
        try? recording?.syncClose()
    }
}

/// Numbers connections in accept order, from any event loop.
private final class IDCounter: Sendable {
    private let value = Atomic<Int>(1)
    func next() -> Int { value.wrappingAdd(1, ordering: .relaxed).oldValue }
}

/// A short reason for a network error: the OS's words for an errno, not the
/// call that failed.
func describeNetworkError(_ error: Error) -> String {
    if let error = error as? IOError {
        return String(cString: strerror(error.errnoCode)).lowercased()
    }
    if let error = error as? NIOConnectionError {
        if let first = error.connectionErrors.first {
            return describeNetworkError(first.error)
        }
        if let dns = error.dnsAAAAError ?? error.dnsAError { return "cannot resolve \(error.host): \(dns)" }
        return "cannot connect to \(error.host):\(error.port)"
    }
    if error is ChannelError, case ChannelError.connectTimeout = error {
        return "connection timed out"
    }
    if let error = error as? NIOSSLError, case .handshakeFailed(let reason) = error {
        return "TLS handshake failed: \(reason)"
    }
    return "\(error)"
}
