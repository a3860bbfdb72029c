import Crypto

/// The client's opening handshake (RFC 6455 §4.1, §4.2.1) as captured.
public struct HandshakeRequest: Hashable, Sendable {
    public var head: HTTPHead

    public init(head: HTTPHead) {
        self.head = head
    }

    public var method: String {
        if case .request(let method, _, _) = head.startLine { return method }
        return ""
    }

    public var target: String {
        if case .request(_, let target, _) = head.startLine { return target }
        return ""
    }

    public var host: String? { head.first("Host") }
    public var origin: String? { head.first("Origin") ?? head.first("Sec-WebSocket-Origin") }
    public var userAgent: String? { head.first("User-Agent") }
    public var key: String? { head.first("Sec-WebSocket-Key")?.trimmingSpaces() }
    public var version: String? { head.first("Sec-WebSocket-Version") }
    public var protocols: [String] { head.listElements("Sec-WebSocket-Protocol") }
    public var extensions: [WebSocketExtension] { WebSocketExtension.parse(head.values("Sec-WebSocket-Extensions")) }

    /// A GET whose Upgrade header names websocket (RFC 6455 §4.2.1 items 1, 3).
    public var isUpgrade: Bool {
        head.listElements("Upgrade").contains { $0.caseInsensitiveEquals("websocket") }
    }

    /// What the request gets wrong as an opening handshake (RFC 6455 §4.2.1).
    public var problems: [String] {
        var problems: [String] = []
        if method != "GET" { problems.append("method is \(method), not GET") }
        if !isUpgrade { problems.append("no 'Upgrade: websocket' header") }
        if !head.listElements("Connection").contains(where: { $0.caseInsensitiveEquals("upgrade") }) {
            problems.append("no 'Connection: Upgrade' header")
        }
        if key == nil { problems.append("no Sec-WebSocket-Key header") }
        if version == nil { problems.append("no Sec-WebSocket-Version header") }
        if head.usesBareLF { problems.append("header lines end in a bare LF") }
        return problems
    }
}

/// The server's answer to an opening handshake (RFC 6455 §4.1, §4.2.2).
public struct HandshakeResponse: Hashable, Sendable {
    public var head: HTTPHead

    public init(head: HTTPHead) {
        self.head = head
    }

    public var status: Int {
        if case .response(_, let status, _) = head.startLine { return status }
        return 0
    }

    public var reason: String {
        if case .response(_, _, let reason) = head.startLine { return reason }
        return ""
    }

    public var accept: String? { head.first("Sec-WebSocket-Accept")?.trimmingSpaces() }
    public var selectedProtocol: String? { head.first("Sec-WebSocket-Protocol")?.trimmingSpaces() }
    public var extensions: [WebSocketExtension] { WebSocketExtension.parse(head.values("Sec-WebSocket-Extensions")) }

    /// 101 Switching Protocols with an Upgrade header naming websocket.
    public var isUpgrade: Bool {
        status == 101 && head.listElements("Upgrade").contains { $0.caseInsensitiveEquals("websocket") }
    }

    /// The Accept value a server must send for `key`:
    /// base64(SHA-1(key + the RFC's GUID)) (RFC 6455 §4.2.2 item 5.4).
    public static func expectedAccept(forKey key: String) -> String {
        let digest = Insecure.SHA1.hash(data: Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))
        return Base64.encode(digest)
    }
}
