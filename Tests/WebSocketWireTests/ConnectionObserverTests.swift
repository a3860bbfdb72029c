import NIOCore
import Testing
import WebSocketWire

@Suite struct ConnectionObserverTests {
    @Test func opensOnHandshakeAndChecksAccept() throws {
        var harness = ObserverHarness()
        harness.handshake()
        let opened = try #require(harness.opened)
        #expect(opened.origin == .handshake)
        #expect(opened.request?.target == "/chat")
        #expect(opened.request?.protocols == ["chat", "superchat"])
        #expect(opened.response?.selectedProtocol == "chat")
        #expect(opened.acceptIsValid == true)
        #expect(opened.findings.isEmpty)
    }

    @Test func flagsWrongAccept() {
        var harness = ObserverHarness()
        harness.send(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            .clientToServer
        )
        harness.send(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: wrong=\r\n\r\n",
            .serverToClient
        )
        #expect(harness.opened?.acceptIsValid == false)
        #expect(harness.allFindingKinds == [.acceptMismatch])
    }

    @Test func showsRejectedUpgradeAndKeepsReadingHTTP() {
        var harness = ObserverHarness()
        let request =
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        harness.send(request, .clientToServer)
        harness.send("HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!", .serverToClient)
        harness.send(request, .clientToServer)
        harness.send(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            .serverToClient
        )
        let rejected = harness.events.compactMap { event -> HandshakeRejected? in
            if case .handshakeRejected(let rejected) = event { return rejected }
            return nil
        }
        #expect(rejected.map(\.response.status) == [403])
        #expect(harness.opened != nil)
    }

    @Test func frameInSameSegmentAsResponseIsDecoded() {
        var harness = ObserverHarness()
        harness.send(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            .clientToServer
        )
        let response = Array(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                .utf8
        )
        harness.send(response + frameBytes(opcode: .ping, payload: [1, 2]), .serverToClient)
        #expect(harness.frames.map(\.header.opcode) == [.ping])
    }

    @Test func matchesPongToPingWithRoundTrip() {
        var harness = ObserverHarness()
        harness.handshake()
        harness.send(frameBytes(opcode: .ping, payload: Array("abc".utf8)), .serverToClient)
        harness.send(frameBytes(opcode: .pong, key: key, payload: Array("abc".utf8)), .clientToServer, afterMilliseconds: 25)
        #expect(harness.frames.last?.pingRoundTrip == 25_000_000)
    }

    @Test func reportsMaskingViolations() {
        var harness = ObserverHarness()
        harness.handshake()
        harness.send(frameBytes(opcode: .text, payload: Array("hi".utf8)), .clientToServer)
        harness.send(frameBytes(opcode: .text, key: key, payload: Array("hi".utf8)), .serverToClient)
        #expect(harness.allFindingKinds == [.unmaskedClientFrame, .maskedServerFrame])
    }

    @Test func assemblesFragmentsAroundInterleavedControlFrames() {
        var harness = ObserverHarness()
        harness.handshake()
        var bytes = frameBytes(fin: false, opcode: .text, key: key, payload: Array("Frag".utf8))
        bytes += frameBytes(opcode: .ping, key: key, payload: [])
        bytes += frameBytes(opcode: .continuation, key: key, payload: Array("Tail".utf8))
        for chunks in Feeding.chunkings(bytes) {
            var run = harness
            for chunk in chunks { run.send(chunk, .clientToServer) }
            #expect(run.messages.map { String(buffer: $0.payload) } == ["FragTail"])
            #expect(run.messages.first?.frameCount == 2)
            #expect(run.allFindingKinds.isEmpty)
        }
    }

    @Test func reportsFragmentationViolations() {
        var harness = ObserverHarness()
        harness.handshake()
        harness.send(frameBytes(opcode: .continuation, payload: [1]), .serverToClient)
        harness.send(frameBytes(fin: false, opcode: .binary, payload: [1]), .serverToClient)
        harness.send(frameBytes(opcode: .text, payload: Array("x".utf8)), .serverToClient)
        #expect(harness.allFindingKinds == [.continuationWithoutStart, .dataFrameInsideMessage])
    }

    @Test func findsInvalidUTF8SplitAcrossFragments() {
        var harness = ObserverHarness()
        harness.handshake()
        // "é" is C3 A9: split it across frames (fine), then end inside a sequence.
        harness.send(frameBytes(fin: false, opcode: .text, payload: [0x61, 0xC3]), .serverToClient)
        harness.send(frameBytes(opcode: .continuation, payload: [0xA9]), .serverToClient)
        #expect(harness.allFindingKinds.isEmpty)
        harness.send(frameBytes(fin: false, opcode: .text, payload: [0x61, 0xE2]), .serverToClient)
        harness.send(frameBytes(opcode: .continuation, payload: [0x82]), .serverToClient)
        #expect(harness.allFindingKinds == [.invalidUTF8])
        harness.send(frameBytes(opcode: .text, payload: [0xED, 0xA0, 0x80]), .serverToClient)
        #expect(harness.allFindingKinds == [.invalidUTF8, .invalidUTF8])
    }

    @Test(
        arguments: [
            ([0x03], Finding.Kind.closePayloadTooShort, nil as UInt16?),
            ([0x03, 0xED], .invalidCloseCode, 1005),
            ([0x03, 0xE8, 0xFF], .invalidCloseReason, 1000),
            ([0x0B, 0xB8], .invalidCloseCode, 3000 - 0),
        ] as [([UInt8], Finding.Kind, UInt16?)]
    )
    func checksClosePayloads(payload: [UInt8], kind: Finding.Kind, code: UInt16?) {
        var harness = ObserverHarness()
        harness.handshake()
        harness.send(frameBytes(opcode: .close, payload: payload), .serverToClient)
        #expect(harness.frames.first?.close?.code?.code == code)
        if code == 3000 {
            #expect(harness.allFindingKinds.isEmpty)  // 3000 is a valid application code
        } else {
            #expect(harness.allFindingKinds == [kind])
        }
    }

    @Test func flagsFramesAfterClose() {
        var harness = ObserverHarness()
        harness.handshake()
        harness.send(frameBytes(opcode: .close, payload: [0x03, 0xE8]), .serverToClient)
        harness.send(frameBytes(opcode: .text, payload: Array("late".utf8)), .serverToClient)
        #expect(harness.allFindingKinds == [.frameAfterClose])
        harness.send(frameBytes(opcode: .close, key: key, payload: [0x03, 0xE8]), .clientToServer)
        harness.finish()
        guard case .connectionClosed(let closed) = harness.events.last else {
            Issue.record("no close event")
            return
        }
        #expect(closed.reason == .closeHandshake)
        #expect(closed.serverToClient.close?.code == .normalClosure)
    }

    @Test func flagsRSVBitsWithoutExtension() {
        var harness = ObserverHarness()
        harness.handshake()
        harness.send(frameBytes(rsv1: true, opcode: .text, payload: Array("x".utf8)), .serverToClient)
        #expect(harness.allFindingKinds == [.unexpectedRSVBits])
    }

    @Test func inflatesPermessageDeflateWithContextTakeover() {
        var harness = ObserverHarness()
        harness.handshake(extensions: "permessage-deflate")
        // RFC 7692 §7.2.3.2: two "Hello" messages sharing the window; then the
        // §7.2.3.1 fragmented form.
        harness.send(frameBytes(rsv1: true, opcode: .text, payload: [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]), .serverToClient)
        harness.send(frameBytes(rsv1: true, opcode: .text, payload: [0xF2, 0x00, 0x11, 0x00, 0x01, 0x00]), .serverToClient)
        harness.send([0x41, 0x03, 0xF2, 0x48, 0xCD] + [0x80, 0x04, 0xC9, 0xC9, 0x07, 0x00], .clientToServer)
        #expect(harness.opened?.deflate?.variant == .perMessage)
        #expect(harness.messages.map { String(buffer: $0.payload) } == ["Hello", "Hello", "Hello"])
        #expect(harness.messages.allSatisfy { $0.compressed && $0.inflateError == nil })
        // The client frames were not masked: that is the only finding.
        #expect(Set(harness.allFindingKinds) == [.unmaskedClientFrame])
        #expect(harness.frames.first?.inflated?.length == 5)
    }

    @Test func reportsRSV1OnContinuationUnderDeflate() {
        var harness = ObserverHarness()
        harness.handshake(extensions: "permessage-deflate")
        harness.send([0x41, 0x03, 0xF2, 0x48, 0xCD] + [0xC0, 0x04, 0xC9, 0xC9, 0x07, 0x00], .serverToClient)
        #expect(harness.allFindingKinds == [.unexpectedRSVBits])
    }

    @Test func gapInCompressedStreamStopsInflatingUntilContextReset() {
        var harness = ObserverHarness()
        harness.handshake(extensions: "permessage-deflate")
        let hello: [UInt8] = [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]
        let first = frameBytes(rsv1: true, opcode: .text, payload: hello)
        harness.send(Array(first[..<4]), .serverToClient)
        harness.gap(UInt64(first.count - 4 - 1), .serverToClient)
        harness.send(Array(first.suffix(1)), .serverToClient)
        harness.send(frameBytes(rsv1: true, opcode: .text, payload: hello), .serverToClient)
        #expect(harness.messages.count == 2)
        #expect(harness.messages.allSatisfy { $0.inflateError != nil })
        #expect(harness.frames.first?.payloadTruncated == true)
    }

    @Test func recognisesFramingMidStreamAndFindsTheClientByMasking() throws {
        var harness = ObserverHarness(startsAtBeginning: false)
        // The caller guessed the roles wrong: masked frames arrive as "server" bytes.
        harness.send([0x99, 0x98] + frameBytes(opcode: .text, key: key, payload: Array("hi there".utf8)), .serverToClient)
        harness.send(frameBytes(opcode: .text, payload: Array("yo".utf8)), .clientToServer)
        let opened = try #require(harness.opened)
        #expect(opened.origin == .midStream)
        #expect(opened.endpoints.client == "127.0.0.1:8080")
        #expect(harness.frames.map(\.direction) == [.clientToServer, .serverToClient])
        #expect(harness.frames.map { String(buffer: $0.payload) } == ["hi there", "yo"])
    }

    @Test func ignoresTrafficThatIsNeitherHTTPNorWebSocket() {
        var harness = ObserverHarness()
        harness.send(Array(repeating: 0x16, count: 64), .clientToServer)
        #expect(!harness.observer.wantsData)
        #expect(harness.events.isEmpty)
    }

    /// Found by fuzzing: a pong centuries after its ping overflowed the round trip.
    @Test func roundTripOfAbsurdTimesDoesNotTrap() {
        var harness = ObserverHarness()
        harness.handshake()
        harness.clock = -9_000_000_000_000_000_000
        harness.send([0x89, 0x00], .serverToClient)
        harness.clock = 9_000_000_000_000_000_000
        harness.send([0x8A, 0x80, 0x37, 0xFA, 0x21, 0x3D], .clientToServer, afterMilliseconds: 0)
        #expect(harness.frames.last?.pingRoundTrip == .max)
    }

    /// An empty compressed message carries no deflate block: feeding the bare
    /// tail to zlib would leave it inside a stored block and break every
    /// later message.
    @Test func emptyCompressedMessageKeepsTheContext() {
        var harness = ObserverHarness()
        harness.handshake(extensions: "permessage-deflate")
        harness.send([0xC2, 0x00], .serverToClient)
        harness.send([0xC1, 0x07, 0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00], .serverToClient)
        #expect(harness.messages.last.map { String(buffer: $0.payload) } == "Hello")
        #expect(harness.messages.allSatisfy { $0.inflateError == nil })
    }

    @Test func reportsFrameCutByEndOfConnection() {
        var harness = ObserverHarness()
        harness.handshake()
        let frame = frameBytes(opcode: .binary, payload: Array(repeating: 7, count: 50))
        harness.send(Array(frame[..<20]), .serverToClient)
        harness.finish()
        #expect(harness.frames.first?.payloadTruncated == true)
        #expect(harness.allFindingKinds == [.truncatedFrame])
    }
}

@Suite struct PerFrameDeflateTests {
    /// x-webkit-deflate-frame compresses frame by frame: a plain first frame
    /// and a compressed continuation make one message.
    @Test func mixesPlainAndCompressedFrames() {
        var harness = ObserverHarness()
        harness.handshake(extensions: "x-webkit-deflate-frame")
        harness.send(frameBytes(fin: false, opcode: .text, payload: Array("Hel".utf8)), .serverToClient)
        // "lo", raw deflate with a sync flush, its 00 00 FF FF tail removed (RFC 7692 §7.2.1).
        harness.send(frameBytes(rsv1: true, opcode: .continuation, payload: [0xCA, 0xC9, 0x07, 0x00]), .serverToClient)
        #expect(harness.messages.map { String(buffer: $0.payload) } == ["Hello"])
        #expect(!harness.allFindingKinds.contains(.invalidUTF8))
    }

    /// Found by fuzzing (fuzz/regressions/FuzzFrameDecoder): an empty RSV1
    /// frame, then a plain message whose empty RSV1 continuation fed the
    /// inflater a bare tail.
    @Test func neverInflatesIntoAnUncompressedMessage() {
        var harness = ObserverHarness()
        harness.handshake(extensions: "x-webkit-deflate-frame")
        harness.send([0xE2, 0x00, 0x01, 0x00, 0xC0, 0x00], .serverToClient)
        #expect(harness.messages.count == 2)
        for message in harness.messages where !message.compressed {
            #expect(message.length == message.wireLength)
            #expect(message.inflateError == nil)
        }
    }
}

@Suite struct RetentionLimitTests {
    /// A masked binary frame longer than the retention limit: the kept
    /// prefix is unmasked (RFC 6455 §5.3) and the rest only counted,
    /// whatever the pieces the bytes arrive in.
    @Test(arguments: [1, 7, 64, 10_000])
    func keepsAnUnmaskedPrefixOfALongMaskedFrame(pieceSize: Int) {
        let payload = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let bytes =
            frameBytes(opcode: .binary, key: key, payload: payload) + frameBytes(opcode: .text, key: key, payload: Array("after".utf8))
        var configuration = ObserverConfiguration()
        configuration.maximumRetainedPayload = 100
        var harness = ObserverHarness(configuration: configuration)
        harness.handshake()
        harness.send(bytes, .clientToServer, inPiecesOf: pieceSize)
        let frames = harness.frames.filter { $0.direction == .clientToServer }
        #expect(frames.map(\.header.opcode) == [.binary, .text])
        #expect(Array(frames[0].payload.readableBytesView) == Array(payload.prefix(100)))
        #expect(frames[0].payloadTruncated)
        let messages = harness.messages.filter { $0.direction == .clientToServer }
        #expect(messages.map(\.length) == [3000, 5])
        #expect(Array(messages[0].payload.readableBytesView) == Array(payload.prefix(100)))
        #expect(String(buffer: messages[1].payload) == "after")
        #expect(harness.allFindingKinds.isEmpty)
    }

    /// A binary limit below the text one (the proxy's log): binary messages,
    /// continuations included, keep less; text keeps its own limit.
    @Test(arguments: [5, 10_000])
    func binaryMessagesKeepTheirOwnLimit(pieceSize: Int) {
        let text = Array(repeating: UInt8(ascii: "t"), count: 300)
        let binary = (0..<300).map { UInt8(truncatingIfNeeded: $0) }
        let bytes =
            frameBytes(opcode: .text, key: key, payload: text)
            + frameBytes(fin: false, opcode: .binary, key: key, payload: Array(binary[..<20]))
            + frameBytes(opcode: .continuation, key: key, payload: Array(binary[20...]))
        var configuration = ObserverConfiguration()
        configuration.maximumRetainedPayload = 200
        configuration.maximumRetainedBinaryPayload = 50
        var harness = ObserverHarness(configuration: configuration)
        harness.handshake()
        harness.send(bytes, .clientToServer, inPiecesOf: pieceSize)
        let frames = harness.frames.filter { $0.direction == .clientToServer }
        #expect(frames.map(\.payload.readableBytes) == [200, 20, 50])
        let messages = harness.messages.filter { $0.direction == .clientToServer }
        #expect(messages.map(\.length) == [300, 300])
        #expect(Array(messages[0].payload.readableBytesView) == Array(text.prefix(200)))
        #expect(Array(messages[1].payload.readableBytesView) == Array(binary.prefix(50)))
        #expect(messages.allSatisfy { $0.payloadTruncated })
    }
}
