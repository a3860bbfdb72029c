import ArgumentParser
import Dispatch
import InspectorOutput
import InspectorProxy
import WebSocketWire

#if canImport(Glibc)
import Glibc
#endif

struct ProxyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "proxy",
        abstract: "Relay WebSocket connections to an upstream server and log every frame.",
        discussion: """
            Reverse-proxy mode: every connection to --listen is relayed to --upstream. Bytes \
            pass unchanged except the request's Host header (and the upstream's base path); \
            the log decodes both directions with the same decoder as `read`. A readiness \
            line goes to standard output once listening. Ctrl-C stops and prints the summary.
            """
    )

    @Option(name: .long, help: "Address to listen on, HOST:PORT (port 0 picks a free port).")
    var listen: String = "127.0.0.1:9000"

    @Option(name: .long, help: "Upstream WebSocket server, e.g. ws://127.0.0.1:8080, ws://host:8080/base or wss://host (reverse mode).")
    var upstream: String?

    @Option(name: .long, help: "reverse (every connection goes to --upstream) or forward (clients use wsinspect as their HTTP proxy: absolute URIs and CONNECT).")
    var mode: ProxyConfiguration.Mode = .reverse

    @Option(name: .long, help: "For a wss:// upstream: trust the CA certificates in this PEM file instead of the system's.")
    var caFile: String?

    @Flag(name: .long, help: "For a wss:// upstream: do not verify its certificate (testing only).")
    var insecure = false

    @Option(name: .long, help: "Accept clients over TLS with this PEM certificate chain (with --tls-key).")
    var tlsCert: String?

    @Option(name: .long, help: "The PEM private key for --tls-cert.")
    var tlsKey: String?

    @Option(name: .long, help: "Write the log to this file instead of standard output.")
    var log: String?

    @Option(name: .long, help: "Record the proxied traffic (as each client saw it) to this pcap file.")
    var writePcap: String?

    @Option(name: .long, help: "Also write the listening address to this file once ready.")
    var readyFile: String?

    @Flag(name: .long, help: "Add an X-Forwarded-For header naming the client.")
    var forwardedFor = false

    @Option(name: .long, help: "Seconds a client may take to send its request head.")
    var handshakeTimeout: Int64 = 10

    @Option(name: .long, help: "Close connections idle for this many seconds (0 = never).")
    var idleTimeout: Int64 = 0

    @Option(name: .long, help: "Payload bytes kept per frame and per message for the log.")
    var maxPayload: Int = 1024 * 1024

    @OptionGroup var view: ViewOptions

    func validate() throws {
        _ = try listenAddress()
        switch (mode, upstream) {
        case (.reverse, nil):
            throw ValidationError("--upstream is required in reverse mode (or use --mode forward)")
        case (.forward, .some):
            throw ValidationError("--upstream is for reverse mode; in forward mode clients name their targets")
        case (_, .some(let upstream)):
            do {
                _ = try UpstreamURL(parsing: upstream)
            } catch {
                throw ValidationError("--upstream: \(error)")
            }
        default:
            break
        }
        if (tlsCert == nil) != (tlsKey == nil) {
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        if handshakeTimeout <= 0 { throw ValidationError("--handshake-timeout must be positive") }
        if idleTimeout < 0 { throw ValidationError("--idle-timeout must not be negative") }
    }

    func listenAddress() throws -> (host: String, port: Int) {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
            (0...65535).contains(port)
        else {
            throw ValidationError("--listen must be HOST:PORT, e.g. 127.0.0.1:9000, not '\(listen)'")
        }
        var host = String(listen[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }

    static var stopSignals: sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        return set
    }

    func run() throws {
        // Before any thread exists, so that every thread inherits the mask and
        // the signals wait for sigwait below instead of killing the process.
        var signals = ProxyCommand.stopSignals
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        var descriptor = STDOUT_FILENO
        if let log {
            descriptor = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            if descriptor < 0 {
                printError("\(log): cannot write the log: \(String(cString: strerror(errno)))")
                throw ExitCodes.ioError
            }
        }
        let proxyLog = ProxyLog(printer: try EventPrinter(view: view, descriptor: descriptor))
        let (host, port) = try listenAddress()
        var configuration = ProxyConfiguration(upstream: try upstream.map { try UpstreamURL(parsing: $0) }, mode: mode)
        configuration.listenHost = host
        configuration.listenPort = port
        configuration.addForwardedFor = forwardedFor
        configuration.handshakeTimeout = handshakeTimeout
        configuration.idleTimeout = idleTimeout
        configuration.observer.maximumRetainedPayload = maxPayload
        configuration.pcapPath = writePcap
        configuration.upstreamCAFile = caFile
        configuration.upstreamInsecure = insecure
        if let tlsCert, let tlsKey { configuration.listenCertificate = (tlsCert, tlsKey) }

        let server: ProxyServer
        do {
            server = try ProxyServer(
                configuration: configuration,
                sink: { proxyLog.add($0) },
                diagnostics: { printError($0) }
            )
        } catch let error as ProxyServer.StartError {
            printError(error.description)
            switch error.kind {
            case .addressInUse: throw ExitCodes.addressInUse
            case .permissionDenied: throw ExitCodes.permissionDenied
            case .cannotRecord: throw ExitCodes.ioError
            case .badCertificate: throw ExitCodes.noInput
            default: throw ExitCodes.unavailable
            }
        }

        // SIGINT and SIGTERM were blocked before any thread started (see the
        // top of run()), so one sent at any time — even right as the readiness
        // line appears — waits for this thread to take it.
        DispatchQueue.global().async {
            var signals = ProxyCommand.stopSignals
            var received: Int32 = 0
            sigwait(&signals, &received)
            server.stopListening()
        }

        let address = server.localAddress
        let upstreamJSON = configuration.upstream.map { "\"\($0)\"" } ?? "null"
        let ready = view.format == .jsonl
            ? "{\"type\":\"listening\",\"address\":\"\(address)\",\"mode\":\"\(mode.rawValue)\",\"upstream\":\(upstreamJSON)}\n"
            : "wsinspect proxy listening on \(address) → \(configuration.upstream.map(\.description) ?? "any target (forward proxy)")\n"
        if descriptor == STDOUT_FILENO {
            proxyLog.line(ready)
        } else {
            var stdout = OutputStream()
            stdout.write(ready)
            stdout.flush()
        }
        if let readyFile {
            let file = fopen(readyFile, "w")
            if let file {
                fputs(address + "\n", file)
                fclose(file)
            } else {
                printError("\(readyFile): cannot write the ready file")
            }
        }

        try server.wait()
        // Close what is still open, so every connection gets its close event
        // before the summary.
        server.shutdown()
        let dropped = proxyLog.finish()
        if dropped > 0 {
            printError("the log fell behind: \(dropped) log records were dropped (relayed bytes never are)")
        }
        if descriptor != STDOUT_FILENO { close(descriptor) }
    }
}

extension ProxyConfiguration.Mode: ExpressibleByArgument {}
