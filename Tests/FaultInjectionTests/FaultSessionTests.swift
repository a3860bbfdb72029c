import FaultInjection
import Foundation
import NIOCore
import Testing
import WebSocketWire

private func rules(_ json: String) throws -> [FaultRule] {
    try RuleFile.parse(Data(json.utf8), yaml: false).rules
}

/// A receiver's inflater for the server's messages, as a client keeps it
/// with context takeover (RFC 7692 §7.2.2).
private func inflate(_ payload: [UInt8], with inflater: Inflater) throws -> String {
    var out: [UInt8] = []
    try (payload + Inflater.messageTail).withUnsafeBytes { bytes in try inflater.inflate(bytes) { out += $0 } }
    return String(decoding: out, as: UTF8.self)
}

@Suite struct FaultSessionTests {
    /// "Hello" compressed, and "Hello" again referring back to the first
    /// (RFC 7692 §7.2.3.1 and §7.2.3.2).
    static let hello: [UInt8] = [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]
    static let helloAgain: [UInt8] = [0xF2, 0x00, 0x11, 0x00, 0x00]

    @Test(arguments: [1, 2, 3, 1000])
    func untouchedTrafficPassesByteForByte(pieceSize: Int) throws {
        var harness = try SessionHarness(rules: rules(#"[{"action": "drop", "match": {"text": "never"}}]"#))
        let key = MaskingKey(0x01, 0x02, 0x03, 0x04)
        // A fragmented text message with a ping between its fragments, then a
        // binary frame with a 16-bit length (RFC 6455 §5.4, §5.2).
        let stream =
            Wire.text("Hel", fin: false, mask: key) + Wire.frame(0x9, [], mask: key)
            + Wire.frame(0x0, Array("lo".utf8), mask: key) + Wire.frame(0x2, [UInt8](repeating: 7, count: 300), mask: key)
        harness.feed(stream, from: .clientToServer, inPiecesOf: pieceSize)
        #expect(harness.take(.clientToServer) == stream)
        #expect(harness.events.isEmpty)
    }

    @Test func handshakeResponsePassesUnchanged() throws {
        var session = FaultSession(connection: 1, target: "/", isUpgradeRequest: true, seed: 0) { SessionHarness.key }
        let response = Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".utf8)
        let now = Timestamp(nanoseconds: 1)
        // The client's first frame arrives before the server's answer: it waits.
        session.receive(ByteBuffer(bytes: Wire.text("early", mask: SessionHarness.key)), from: .clientToServer, at: now)
        #expect(session.nextDelivery(.clientToServer, at: now) == nil)
        session.receive(ByteBuffer(bytes: response), from: .serverToClient, at: now)
        #expect(session.nextDelivery(.serverToClient, at: now) == .bytes(ByteBuffer(bytes: response)))
        #expect(session.nextDelivery(.clientToServer, at: now) == .bytes(ByteBuffer(bytes: Wire.text("early", mask: SessionHarness.key))))
    }

    @Test func dropRemovesOnlyMatchingMessagesAndSaysSo() throws {
        var harness = try SessionHarness(
            rules: rules(#"[{"id": "no-b", "action": "drop", "direction": "to-client", "match": {"text": "^b"}}]"#)
        )
        harness.feed(Wire.text("a1") + Wire.text("b2") + Wire.text("a3"), from: .serverToClient)
        #expect(harness.take(.serverToClient) == Wire.text("a1") + Wire.text("a3"))
        #expect(harness.events.map(\.rule) == ["no-b"])
        #expect(harness.events.first?.message == 2)
        #expect(harness.events.first?.direction == .serverToClient)
    }

    @Test func delayHoldsAMessageAndWhatFollowsIt() throws {
        var harness = try SessionHarness(rules: rules(#"[{"action": "delay", "ms": 300, "match": {"nth": 1}}]"#))
        harness.feed(Wire.text("first") + Wire.text("second"), from: .serverToClient)
        #expect(harness.take(.serverToClient).isEmpty)
        harness.advance(milliseconds: 299)
        #expect(harness.take(.serverToClient).isEmpty)
        harness.advance(milliseconds: 1)
        #expect(harness.take(.serverToClient) == Wire.text("first") + Wire.text("second"))
    }

    @Test func fragmentReframesAndMasksClientFrames() throws {
        var harness = try SessionHarness(rules: rules(#"[{"action": "fragment", "size": 2}]"#))
        harness.feed(Wire.text("hello", mask: MaskingKey(9, 9, 9, 9)), from: .clientToServer)
        let frames = Wire.frames(harness.take(.clientToServer))
        #expect(frames.map(\.byte0) == [0x01, 0x00, 0x80])
        #expect(frames.allSatisfy { $0.masked })
        #expect(frames.flatMap(\.payload) == Array("hello".utf8))
    }

    @Test func injectWaitsForTheEndOfAPassingMessage() throws {
        var harness = try SessionHarness(rules: [])
        // A frame too large to hold passes as it arrives; an injection must
        // not land inside it (RFC 6455 §5.4).
        let size = FaultSession.largestHeldFrame + 1
        var header: [UInt8] = [0x82, 127]
        for shift in stride(from: 56, through: 0, by: -8) { header.append(UInt8(truncatingIfNeeded: UInt64(size) >> UInt64(shift))) }
        harness.feed(header + [1, 2, 3], from: .serverToClient)
        harness.session.inject(InjectedMessage(opcode: .text, payload: Array("hi".utf8)), to: .serverToClient, at: harness.now)
        harness.pump()
        #expect(harness.take(.serverToClient) == header + [1, 2, 3])
        harness.feed([UInt8](repeating: 0, count: size - 3), from: .serverToClient)
        let all = harness.take(.serverToClient)
        #expect(all.count == size - 3 + 4)
        #expect(Array(all.suffix(4)) == Wire.text("hi"))
    }

    @Test func closeRuleSendsCodeAndStopsThatSide() throws {
        var harness = try SessionHarness(
            rules: rules(#"[{"action": "close", "code": 4000, "reason": "bye", "direction": "to-client", "match": {"text": "x"}}]"#)
        )
        harness.feed(Wire.text("x") + Wire.text("after"), from: .serverToClient)
        #expect(harness.take(.serverToClient) == Wire.text("x") + Wire.frame(0x8, [0x0F, 0xA0] + Array("bye".utf8)))
    }

    @Test func limitClosesAfterMessages() throws {
        var harness = try SessionHarness(rules: rules(#"[{"action": "limit", "messages": 2, "direction": "to-client"}]"#))
        harness.feed(Wire.text("1") + Wire.text("2") + Wire.text("3"), from: .serverToClient)
        #expect(harness.take(.serverToClient) == Wire.text("1") + Wire.text("2"))
        #expect(harness.ends[.serverToClient] == [.closeBoth])
    }

    @Test func throttleSpacesBytesByRate() throws {
        var harness = try SessionHarness(rules: rules(#"[{"action": "throttle", "bytes_per_second": 1000, "direction": "to-client"}]"#))
        let message = Wire.frame(0x2, [UInt8](repeating: 1, count: 98))  // 100 bytes on the wire
        harness.advance(milliseconds: 100)  // the 77-byte 101 response went out at that rate too
        _ = harness.take(.serverToClient)
        harness.feed(message + message, from: .serverToClient)
        harness.advance(milliseconds: 99)
        #expect(harness.take(.serverToClient).isEmpty)
        harness.advance(milliseconds: 1)
        #expect(harness.take(.serverToClient) == message)
        harness.advance(milliseconds: 100)
        #expect(harness.take(.serverToClient) == message)
    }

    @Test func stallHoldsEverythingForAWhile() throws {
        var harness = try SessionHarness(rules: rules(#"[{"action": "stall", "ms": 500, "at_ms": 0, "direction": "to-server"}]"#))
        let key = MaskingKey(1, 1, 1, 1)
        harness.feed(Wire.text("held", mask: key), from: .clientToServer)
        #expect(harness.take(.clientToServer).isEmpty)
        harness.advance(milliseconds: 500)
        #expect(harness.take(.clientToServer) == Wire.text("held", mask: key))
    }

    @Test func corruptionsBreakFramesAsAsked() throws {
        var harness = try SessionHarness(
            rules: rules(
                #"""
                [{"action": "corrupt", "kind": "invalid-utf8", "match": {"nth": 1}},
                 {"action": "corrupt", "kind": "rsv2", "match": {"nth": 2}},
                 {"action": "corrupt", "kind": "reserved-opcode", "match": {"nth": 3}},
                 {"action": "corrupt", "kind": "masked", "match": {"nth": 4}}]
                """#
            )
        )
        harness.feed(Wire.text("ab") + Wire.text("cd") + Wire.text("ef") + Wire.text("gh"), from: .serverToClient)
        let frames = Wire.frames(harness.take(.serverToClient))
        #expect(frames.map(\.byte0) == [0x81, 0xA1, 0x83, 0x81])
        #expect(frames[0].payload == [0x61, 0xFF, 0x62])
        #expect(frames.map(\.masked) == [false, false, false, true])
    }

    @Test func sameSeedSameFaults() throws {
        func dropped(seed: UInt64) throws -> [Int] {
            var harness = try SessionHarness(rules: rules(#"[{"action": "drop", "probability": 0.5}]"#), seed: seed)
            for index in 0..<64 { harness.feed(Wire.text("m\(index)"), from: .serverToClient) }
            return harness.events.compactMap(\.message)
        }
        #expect(try dropped(seed: 7) == dropped(seed: 7))
        #expect(try dropped(seed: 7) != dropped(seed: 8))
        #expect(try (16...48).contains(dropped(seed: 7).count))
    }

    /// Dropping a compressed message breaks the receiver's LZ77 window
    /// (RFC 7692 §7.2.2); the session must then compress for the sender so
    /// that what the receiver gets still inflates.
    @Test func dropUnderContextTakeoverKeepsTheReceiverInflating() throws {
        var harness = try SessionHarness(
            rules: rules(#"[{"action": "drop", "match": {"nth": 1}, "direction": "to-client"}]"#),
            deflate: "permessage-deflate"
        )
        harness.feed(Wire.frame(0x1, Self.hello, rsv1: true) + Wire.frame(0x1, Self.helloAgain, rsv1: true), from: .serverToClient)
        let frames = Wire.frames(harness.take(.serverToClient))
        #expect(frames.count == 1)
        #expect(frames[0].byte0 == 0xC1)
        #expect(try inflate(frames[0].payload, with: Inflater()) == "Hello")
    }

    /// Without a fault that breaks the window, compressed messages pass as
    /// they were; a rewritten one goes uncompressed, and the ones after are
    /// compressed by the proxy.
    @Test func rewriteUnderContextTakeover() throws {
        var harness = try SessionHarness(
            rules: rules(#"[{"action": "rewrite", "set": "Howdy", "match": {"nth": 2}}]"#),
            deflate: "permessage-deflate"
        )
        harness.feed(Wire.frame(0x1, Self.hello, rsv1: true) + Wire.frame(0x1, Self.helloAgain, rsv1: true), from: .serverToClient)
        harness.feed(Wire.frame(0x1, Self.helloAgain, rsv1: true), from: .serverToClient)
        let frames = Wire.frames(harness.take(.serverToClient))
        #expect(frames.map(\.byte0) == [0xC1, 0x81, 0xC1])
        #expect(frames[0].payload == Self.hello)
        #expect(frames[1].payload == Array("Howdy".utf8))
        let receiver = Inflater()
        #expect(try inflate(frames[0].payload, with: receiver) == "Hello")
        #expect(try inflate(frames[2].payload, with: receiver) == "Hello")
    }

    @Test func timedInjectionsRepeat() throws {
        var harness = try SessionHarness(
            rules: rules(#"[{"action": "inject", "opcode": "ping", "text": "hb", "every_ms": 100, "direction": "to-client"}]"#)
        )
        harness.advance(milliseconds: 350)
        #expect(harness.take(.serverToClient) == Array(repeating: Wire.frame(0x9, Array("hb".utf8)), count: 3).flatMap { $0 })
    }

    @Test func slowCloseDelaysTheEnd() throws {
        var harness = try SessionHarness(rules: rules(#"[{"action": "slow-close", "ms": 200}]"#))
        harness.session.receiveEnd(from: .serverToClient, full: false, at: harness.now)
        harness.pump()
        #expect(harness.ends[.serverToClient] == nil)
        harness.advance(milliseconds: 200)
        #expect(harness.ends[.serverToClient] == [.endOutput])
    }

    @Test func abortEndsTheConnection() throws {
        var harness = try SessionHarness(rules: rules(#"[{"action": "abort", "match": {"text": "boom"}}]"#))
        harness.feed(Wire.text("ok") + Wire.text("boom"), from: .serverToClient)
        #expect(harness.take(.serverToClient) == Wire.text("ok"))
        #expect(harness.session.termination == .abort)
    }
}

@Suite struct InterleavedControlFrameTests {
    /// A ping between fragments (RFC 6455 §5.4) keeps its place when the
    /// message passes unchanged, and goes first when the message is dropped.
    @Test(arguments: [1, 5, 100])
    func pingBetweenFragments(pieceSize: Int) throws {
        let stream = Wire.text("secret-", fin: false) + Wire.frame(0x9, Array("mid".utf8)) + Wire.frame(0x0, Array("part".utf8))
        var passing = try SessionHarness(rules: rules(#"[{"action": "drop", "match": {"text": "^public"}}]"#))
        passing.feed(stream, from: .serverToClient, inPiecesOf: pieceSize)
        #expect(passing.take(.serverToClient) == stream)

        var dropping = try SessionHarness(rules: rules(#"[{"action": "drop", "match": {"text": "^secret"}}]"#))
        dropping.feed(stream, from: .serverToClient, inPiecesOf: pieceSize)
        #expect(dropping.take(.serverToClient) == Wire.frame(0x9, Array("mid".utf8)))
        #expect(dropping.events.map(\.action) == ["drop"])
    }
}

@Suite struct CombinedFaultTests {
    /// Rules apply in order to one message: a rewritten, duplicated
    /// compressed message goes out rewritten each time, uncompressed.
    @Test func duplicateOfARewrittenCompressedMessage() throws {
        var harness = try SessionHarness(
            rules: rules(#"[{"action": "rewrite", "set": "Howdy"}, {"action": "duplicate", "copies": 1}]"#),
            deflate: "permessage-deflate"
        )
        harness.feed(Wire.frame(0x1, FaultSessionTests.hello, rsv1: true), from: .serverToClient)
        let frames = Wire.frames(harness.take(.serverToClient))
        #expect(frames.map(\.byte0) == [0x81, 0x81])
        #expect(frames.map(\.payload) == [Array("Howdy".utf8), Array("Howdy".utf8)])
    }
}

@Suite struct RuleLifecycleTests {
    /// A timed rule removed and added again under the same id starts afresh
    /// instead of inheriting a fire time already past (found by fuzzing:
    /// the relay's timer then fired over and over).
    @Test func readdedRuleStartsAfresh() throws {
        let book = try RuleBook()
        var session = FaultSession(connection: 1, target: "/", isUpgradeRequest: true, seed: 1) { SessionHarness.key }
        var now = Timestamp(nanoseconds: 1_000_000_000)
        session.receive(
            ByteBuffer(bytes: Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".utf8)),
            from: .serverToClient,
            at: now
        )
        try book.add(rules(#"[{"id": "tick", "action": "inject", "text": "t", "every_ms": 100, "direction": "to-client"}]"#))
        session.update(rules: book.snapshot.rules, at: now)
        _ = book.remove(id: "tick")
        session.update(rules: book.snapshot.rules, at: now)
        try book.add(rules(#"[{"id": "tick", "action": "drop", "match": {"text": "never"}}]"#))
        session.update(rules: book.snapshot.rules, at: now)
        now = Timestamp(nanoseconds: now.nanoseconds + 500_000_000)
        session.advance(to: now)
        while session.nextDelivery(.serverToClient, at: now) != nil {}
        #expect(session.nextWakeUp == nil)
    }

    /// A rewrite never makes a control frame longer than RFC 6455 §5.5 allows.
    @Test func rewrittenPingStaysWithin125Bytes() throws {
        var harness = try SessionHarness(
            rules: rules(#"[{"action": "rewrite", "set": "\#(String(repeating: "x", count: 200))", "match": {"opcode": "ping"}}]"#)
        )
        harness.feed(Wire.frame(0x9, Array("hi".utf8)), from: .serverToClient)
        let frames = Wire.frames(harness.take(.serverToClient))
        #expect(frames.map(\.payload.count) == [125])
    }
}

@Suite struct CompressionEdgeTests {
    /// An empty message compressed by the proxy is one empty block, 0x00
    /// (RFC 7692 §7.2.3.6), and the next message still inflates after it.
    @Test func emptyMessageAfterReencodingIsOneEmptyBlock() throws {
        var harness = try SessionHarness(
            rules: rules(#"[{"action": "drop", "match": {"nth": 1}, "direction": "to-client"}]"#),
            deflate: "permessage-deflate"
        )
        let sender = Deflater()
        let messages = ["dropped", "", "after"].map { sender.compressMessage(Array($0.utf8)) }
        harness.feed(messages.flatMap { Wire.frame(0x1, $0, rsv1: true) }, from: .serverToClient)
        let frames = Wire.frames(harness.take(.serverToClient))
        #expect(frames.map(\.byte0) == [0xC1, 0xC1])
        #expect(frames[0].payload == [0x00])
        let receiver = Inflater()
        #expect(try inflate(frames[0].payload, with: receiver) == "")
        #expect(try inflate(frames[1].payload, with: receiver) == "after")
    }

    /// A deflate bomb is passed on untouched instead of being inflated
    /// into memory without end.
    @Test func deflateBombPassesUntouched() throws {
        var harness = try SessionHarness(rules: rules(#"[{"action": "drop", "match": {"text": "never"}}]"#), deflate: "permessage-deflate")
        let bomb = Deflater().compressMessage([UInt8](repeating: 0, count: 4 * FaultSession.largestHeldFrame + 1))
        let frame = Wire.frame(0x2, bomb, rsv1: true)
        harness.feed(frame, from: .serverToClient)
        #expect(harness.take(.serverToClient) == frame)
    }
}

@Suite struct ResponseHeadTests {
    /// The 101 (after an interim 100) arriving a byte at a time still opens
    /// the WebSocket phase, and passes unchanged.
    @Test func headFedByteByByte() {
        var session = FaultSession(connection: 1, target: "/", isUpgradeRequest: true, seed: 0) { SessionHarness.key }
        let now = Timestamp(nanoseconds: 1)
        let head = Array(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".utf8
        )
        for byte in head { session.receive(ByteBuffer(bytes: [byte]), from: .serverToClient, at: now) }
        #expect(session.isUpgraded)
        var out: [UInt8] = []
        while case .bytes(let bytes) = session.nextDelivery(.serverToClient, at: now) { out += Array(bytes.readableBytesView) }
        #expect(out == head)
    }
}
