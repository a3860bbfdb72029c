import WebSocketWire

/// Rewrites a client's request head for the upstream (sans-IO): the Host
/// header names the upstream, the path gets the upstream's base, and an
/// X-Forwarded-For may be added. Everything else goes out as it came in.
struct RequestHeadRewriter {
    var upstream: UpstreamURL
    var forwardedFor: String?

    func rewrite(_ head: HTTPHead) -> [UInt8] {
        guard case .request(let method, let target, let version) = head.startLine else { return [] }
        var path = target
        if !upstream.basePath.isEmpty && target.hasPrefix("/") {
            path = upstream.basePath + target
        }
        var out = "\(method) \(path) \(version)\r\n"
        var wroteHost = false
        for field in head.fields {
            if field.name.lowercased() == "host" {
                if !wroteHost { out += "Host: \(upstream.hostHeader)\r\n" }
                wroteHost = true
                continue
            }
            out += "\(field.name): \(field.value)\r\n"
        }
        if !wroteHost { out += "Host: \(upstream.hostHeader)\r\n" }
        if let forwardedFor {
            out += "X-Forwarded-For: \(forwardedFor)\r\n"
        }
        out += "\r\n"
        return Array(out.utf8)
    }
}
