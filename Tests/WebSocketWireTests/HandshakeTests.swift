import Testing
import WebSocketWire

@Suite struct HandshakeTests {
    @Test func acceptValueMatchesRFCExample() {
        // RFC 6455 §1.3.
        #expect(HandshakeResponse.expectedAccept(forKey: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test func parsesHeadsWithCRLFAndBareLF() {
        for separator in ["\r\n", "\n"] {
            let text = [
                "GET /chat?x=1 HTTP/1.1", "Host: a", "upgrade: WebSocket", "Sec-WebSocket-Protocol: a, b", "Sec-WebSocket-Protocol: c", "",
                "rest",
            ]
            .joined(separator: separator)
            let bytes = Array(text.utf8)
            guard case .complete(let head, let length) = bytes.withUnsafeBytes(HTTPHead.parse) else {
                Issue.record("not parsed")
                return
            }
            #expect(length == bytes.count - 4)
            #expect(head.startLine == .request(method: "GET", target: "/chat?x=1", version: "HTTP/1.1"))
            #expect(head.usesBareLF == (separator == "\n"))
            let request = HandshakeRequest(head: head)
            #expect(request.isUpgrade)
            #expect(request.protocols == ["a", "b", "c"])
        }
    }

    @Test func incompleteHeadWaits() {
        let bytes = Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n".utf8)
        #expect(bytes.withUnsafeBytes(HTTPHead.parse) == .incomplete)
    }

    @Test func parsesExtensionOffersWithQuotedValues() {
        let parsed = WebSocketExtension.parse([
            "permessage-deflate; client_max_window_bits; server_max_window_bits=\"10\", x-webkit-deflate-frame",
            "foo;bar=\"a,b\"",
        ])
        #expect(parsed.map(\.name) == ["permessage-deflate", "x-webkit-deflate-frame", "foo"])
        #expect(parsed[0].parameter("server_max_window_bits")?.value == "10")
        #expect(parsed[0].parameter("client_max_window_bits")?.value == nil)
        #expect(parsed[2].parameter("bar")?.value == "a,b")
    }

    @Test func negotiatesDeflateParameters() throws {
        let accepted = WebSocketExtension.parse([
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=10; server_max_window_bits=16"
        ])
        let (parameters, problems) = try #require(DeflateParameters.negotiated(from: accepted))
        #expect(parameters.serverNoContextTakeover)
        #expect(!parameters.clientNoContextTakeover)
        #expect(parameters.clientMaxWindowBits == 10)
        #expect(parameters.inflateWindowBits(for: .clientToServer) == 10)
        #expect(problems.count == 1)  // 16 is out of range
    }
}
