import ArgumentParser
import Dispatch
import FaultInjection
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

            Fault injection: --rules FILE (JSON or YAML; examples in samples/rules) and the \
            --control API delay, drop, inject, rewrite, re-fragment, corrupt, throttle and close \
            messages; every applied fault is logged.
            """
    )

    @Option(name: .long, help: "Address to listen on, HOST:PORT (port 0 picks a free port).")
    var listen: String = "127.0.0.1:9000"

    @Option(name: .long, help: "Upstream WebSocket server, e.g. ws://127.0.0.1:8080, ws://host:8080/base or wss://host (reverse mode).")
    var upstream: String?

    @Option(
        name: .long,
        help:
            "reverse (every connection goes to --upstream) or forward (clients use wsinspect as their HTTP proxy: absolute URIs and CONNECT)."
    )
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

    @Flag(name: .long, help: "Relay only: decode and log nothing (the readiness line, errors and applied faults still appear).")
    var noLog = false

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

    @Option(
        name: .long,
        help: ArgumentHelp(
            "When Nagle's algorithm may gather small writes into fewer segments.",
            discussion: """
                auto (the default): only while the receiving peer is two or more writes behind, and for at most 1 ms; \
                the first writes after it spoke, and writes of 8 KiB or more, go out at once. on: always, as socat \
                does by default; a frame written as header then payload, or a message right after one the server \
                does not answer, can wait ~40 ms for a delayed ACK. off: never (TCP_NODELAY), one segment per read.
                """
        )
    )
    var nagle = ProxyConfiguration.Nagle.auto

    @Option(
        name: .long,
        help:
            "Payload bytes the log keeps per frame and per message: a preview, so that logging keeps up with large messages (the relay always carries everything). Default: 16 KiB of text, 4 KiB of binary."
    )
    var maxPayload: Int?

    @Option(name: .long, help: "Fault rules (JSON, or YAML for .yaml/.yml): delay, drop, inject, rewrite, … frames (see samples/rules).")
    var rules: String?

    @Option(
        name: .long,
        help:
            "Seed for every probability and jitter decision; the same seed replays the same faults (default: random, printed on the readiness line)."
    )
    var seed: UInt64?

    @Option(
        name: .long,
        help: "Serve the control API (HTTP + JSON) on [HOST:]PORT (loopback unless a host is named), e.g. 9091; turns fault injection on."
    )
    var control: String?

    @Option(
        name: .long,
        help:
            "Require 'Authorization: Bearer TOKEN' on control requests (needed when --control is not loopback; default: $WSINSPECT_CONTROL_TOKEN)."
    )
    var controlToken: String?

    @Option(name: .long, help: "Also write the control API's address to this file once ready.")
    var controlReadyFile: String?

    @OptionGroup var view: ViewOptions

    func validate() throws {
        _ = try listenAddress()
        if let maxPayload, maxPayload < 0 { throw ValidationError("--max-payload must not be negative") }
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
        if control != nil {
            let (host, _) = try controlAddress()
            if effectiveControlToken == nil && !Self.isLoopback(host) {
                throw ValidationError(
                    "--control on \(host) is reachable from other machines: give --control-token (or WSINSPECT_CONTROL_TOKEN), or listen on 127.0.0.1"
                )
            }
        }
        if controlReadyFile != nil && control == nil { throw ValidationError("--control-ready-file needs --control") }
        if noLog && log != nil { throw ValidationError("--no-log and --log exclude each other") }
        if idleTimeout < 0 { throw ValidationError("--idle-timeout must not be negative") }
    }

    func listenAddress() throws -> (host: String, port: Int) {
        try Self.hostAndPort(listen, option: "--listen")
    }

    static func hostAndPort(_ text: String, option: String) throws -> (host: String, port: Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else {
            throw ValidationError("\(option) must be HOST:PORT, e.g. 127.0.0.1:9000, not '\(text)'")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "0.0.0.0" : host, port)
    }

    /// `--control` on loopback unless a host is named: `9091` and `:9091`
    /// mean 127.0.0.1:9091.
    func controlAddress() throws -> (host: String, port: Int) {
        guard let control else { return ("127.0.0.1", 0) }
        if let port = Int(control), (0...65535).contains(port) { return ("127.0.0.1", port) }
        let (host, port) = try Self.hostAndPort(control, option: "--control")
        return (control.hasPrefix(":") ? "127.0.0.1" : host, port)
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    var effectiveControlToken: String? {
        controlToken ?? getenv("WSINSPECT_CONTROL_TOKEN").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// The fault controller when rules or a control API are asked for.
    func makeFaultController() throws -> FaultController? {
        guard rules != nil || control != nil else { return nil }
        var file = RuleFile(rules: [])
        if let rules {
            do {
                file = try RuleFile.load(path: rules)
            } catch let error as RuleFile.LoadError {
                printError(error.description)
                throw error.kind == .unreadable ? ExitCodes.noInput : ExitCode.validationFailure
            }
        }
        do {
            return FaultController(rules: try RuleBook(file.rules), seed: seed ?? file.seed ?? UInt64.random(in: 0...UInt64.max))
        } catch {
            printError("\(rules ?? "rules"): \(error)")
            throw ExitCode.validationFailure
        }
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
        let faults = try makeFaultController()
        let proxyLog = ProxyLog(printer: try EventPrinter(view: view, descriptor: descriptor), countsFaults: faults != nil)
        let (host, port) = try listenAddress()
        var configuration = ProxyConfiguration(upstream: try upstream.map { try UpstreamURL(parsing: $0) }, mode: mode)
        configuration.listenHost = host
        configuration.listenPort = port
        configuration.addForwardedFor = forwardedFor
        configuration.handshakeTimeout = handshakeTimeout
        configuration.idleTimeout = idleTimeout
        configuration.nagle = nagle
        // Text is kept longer than binary: typical JSON messages are then
        // logged whole, while large binary messages, previewed in base64
        // twice (frame and message), would make the log heavier than the
        // traffic it describes.
        configuration.observer.maximumRetainedPayload = maxPayload ?? 16 * 1024
        configuration.observer.maximumRetainedBinaryPayload = maxPayload ?? 4 * 1024
        configuration.pcapPath = writePcap
        configuration.decodesTraffic = !noLog
        configuration.upstreamCAFile = caFile
        configuration.upstreamInsecure = insecure
        if let tlsCert, let tlsKey { configuration.listenCertificate = (tlsCert, tlsKey) }

        let server: ProxyServer
        do {
            server = try ProxyServer(
                configuration: configuration,
                faults: faults,
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
            case .invalidCertificate: throw ExitCodes.invalidInput
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

        var controlServer: ControlServer?
        if control != nil, let faults {
            let (controlHost, controlPort) = try controlAddress()
            do {
                controlServer = try ControlServer(
                    controller: faults,
                    host: controlHost,
                    port: controlPort,
                    token: effectiveControlToken,
                    eventLoopGroup: server.eventLoopGroup
                )
            } catch {
                printError("\(error)")
                server.stopListening()
                server.shutdown()
                throw ExitCodes.addressInUse
            }
        }

        let address = server.localAddress
        let upstreamJSON = configuration.upstream.map { "\"\($0)\"" } ?? "null"
        var extraJSON = ""
        var extraText = ""
        if let controlServer {
            extraJSON += ",\"control\":\"\(controlServer.address)\""
            extraText += "; control API on http://\(controlServer.address)"
        }
        if let faults {
            extraJSON += ",\"seed\":\(faults.seed),\"rules\":\(faults.rules.snapshot.rules.count)"
            extraText += "; \(faults.rules.snapshot.rules.count) fault rule(s), seed \(faults.seed)"
        }
        let ready =
            view.format == .jsonl
            ? "{\"type\":\"listening\",\"address\":\"\(address)\",\"mode\":\"\(mode.rawValue)\",\"upstream\":\(upstreamJSON)\(extraJSON)}\n"
            : "wsinspect proxy listening on \(address) → \(configuration.upstream.map(\.description) ?? "any target (forward proxy)")\(extraText)\n"
        if descriptor == STDOUT_FILENO {
            proxyLog.line(ready)
        } else {
            var stdout = OutputStream()
            stdout.write(ready)
            stdout.flush()
        }
        for (path, line) in [(controlReadyFile, controlServer?.address), (readyFile, address)] {
            guard let path, let line else { continue }
            if let file = fopen(path, "w") {
                fputs(line + "\n", file)
                fclose(file)
            } else {
                printError("\(path): cannot write the ready file")
            }
        }

        try server.wait()
        controlServer?.stop()
        // Close what is still open, so every connection gets its close event
        // before the summary.
        server.shutdown()
        let dropped = proxyLog.finish(summary: !noLog)
        if dropped > 0 {
            printError("the log fell behind: \(dropped) log records were dropped (relayed bytes never are)")
        }
        if descriptor != STDOUT_FILENO { close(descriptor) }
    }
}

extension ProxyConfiguration.Mode: ExpressibleByArgument {}
extension ProxyConfiguration.Nagle: ExpressibleByArgument {}
