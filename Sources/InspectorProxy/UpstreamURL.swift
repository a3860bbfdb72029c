/// Where the reverse proxy sends connections: `ws://host:port/base`, or
/// `wss://` for an upstream that speaks TLS.
public struct UpstreamURL: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// The upstream speaks TLS (`wss://` or `https://`).
    public var usesTLS: Bool
    /// A path prefix put before every request's path ("" for none).
    public var basePath: String

    public struct ParseError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Accepts `ws://`, `wss://`, `http://` and `https://` (the same wire until
    /// the upgrade), with an IPv6 host in brackets.
    public init(parsing text: String) throws {
        let lower = text.lowercased()
        let schemes: [(prefix: String, port: Int, tls: Bool)] = [
            ("ws://", 80, false), ("wss://", 443, true), ("http://", 80, false), ("https://", 443, true),
        ]
        guard let scheme = schemes.first(where: { lower.hasPrefix($0.prefix) }) else {
            throw ParseError(description: "'\(text)' is not a ws:// or wss:// URL (e.g. ws://127.0.0.1:8080)")
        }
        let rest = text.dropFirst(scheme.prefix.count)
        let defaultPort = scheme.port
        usesTLS = scheme.tls
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        var path = String(rest[slash...])
        if path.hasSuffix("/") { path.removeLast() }
        var host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw ParseError(description: "'\(text)': unclosed '[' in the IPv6 host")
            }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        guard !host.isEmpty else { throw ParseError(description: "'\(text)' has no host") }
        var port = defaultPort
        if let portText {
            guard let value = Int(portText), (1...65535).contains(value) else {
                throw ParseError(description: "'\(text)': '\(portText)' is not a port number")
            }
            port = value
        }
        self.host = String(host)
        self.port = port
        self.basePath = path
    }

    /// The Host header value for requests to this upstream (RFC 9110 §7.2).
    public var hostHeader: String {
        let shownHost = host.contains(":") ? "[\(host)]" : host
        return port == (usesTLS ? 443 : 80) ? shownHost : "\(shownHost):\(port)"
    }

    public var description: String { (usesTLS ? "wss://" : "ws://") + hostHeader + basePath }
}
