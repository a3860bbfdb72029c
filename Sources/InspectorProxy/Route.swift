import WebSocketWire

/// Where one client connection goes and how its request head travels on,
/// decided from the head alone (sans-IO).
struct Route {
    /// The server to connect to.
    var target: UpstreamURL
    /// A `CONNECT` tunnel: the proxy answers the head itself and relays
    /// what follows, whatever it is.
    var tunnel: Bool
    var rewriter: RequestHeadRewriter

    enum Decision {
        case route(Route)
        case reject(status: String, reason: String)
    }

    static func decide(for head: HTTPHead, configuration: ProxyConfiguration, clientAddress: String?) -> Decision {
        guard case .request(let method, let requestTarget, _) = head.startLine else {
            return .reject(status: "400 Bad Request", reason: "expected an HTTP request")
        }
        let forwardedFor = configuration.addForwardedFor ? clientAddress : nil
        switch configuration.mode {
        case .reverse:
            guard let upstream = configuration.upstream else {
                return .reject(status: "502 Bad Gateway", reason: "no upstream configured")
            }
            return .route(
                Route(target: upstream, tunnel: false, rewriter: RequestHeadRewriter(upstream: upstream, forwardedFor: forwardedFor))
            )
        case .forward:
            if method == "CONNECT" {
                // RFC 9110 §9.3.6: the target is host:port.
                guard let target = try? UpstreamURL(parsing: "ws://" + requestTarget), requestTarget.contains(":") else {
                    return .reject(status: "400 Bad Request", reason: "CONNECT needs host:port, not '\(requestTarget)'")
                }
                return .route(Route(target: target, tunnel: true, rewriter: RequestHeadRewriter(upstream: target, forwardedFor: nil)))
            }
            let lower = requestTarget.lowercased()
            guard lower.hasPrefix("http://") || lower.hasPrefix("ws://") else {
                if lower.hasPrefix("https://") || lower.hasPrefix("wss://") {
                    return .reject(
                        status: "400 Bad Request",
                        reason: "use CONNECT for TLS targets, not an absolute \(requestTarget.prefix(8))… URI"
                    )
                }
                return .reject(status: "400 Bad Request", reason: "a forward proxy needs an absolute URI (http://host/path) or CONNECT")
            }
            guard let target = try? UpstreamURL(parsing: requestTarget) else {
                return .reject(status: "400 Bad Request", reason: "cannot read the URI '\(requestTarget)'")
            }
            var rewriter = RequestHeadRewriter(upstream: target, forwardedFor: forwardedFor)
            // RFC 9112 §3.2.2: origin servers get the origin form; the client's
            // Host stays as it is.
            rewriter.originForm = true
            rewriter.keepsHost = true
            return .route(Route(target: target, tunnel: false, rewriter: rewriter))
        }
    }
}
