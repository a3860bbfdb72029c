import NIOCore
import Testing
import WebSocketWire

@Suite struct FrameDecoderTests {
    /// The examples of RFC 6455 §5.7, with what each must decode to.
    struct Vector: CustomTestStringConvertible, Sendable {
        var name: String
        var bytes: [UInt8]
        var expected: [(fin: Bool, opcode: WebSocketOpcode, key: MaskingKey?, payload: [UInt8])]
        var testDescription: String { name }
    }

    static let hello = Array("Hello".utf8)

    static let vectors: [Vector] = [
        Vector(
            name: "single-frame unmasked text",
            bytes: [0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F],
            expected: [(true, .text, nil, hello)]
        ),
        Vector(
            name: "single-frame masked text",
            bytes: [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58],
            expected: [(true, .text, MaskingKey(0x37, 0xFA, 0x21, 0x3D), hello)]
        ),
        Vector(
            name: "fragmented unmasked text",
            bytes: [0x01, 0x03, 0x48, 0x65, 0x6C] + [0x80, 0x02, 0x6C, 0x6F],
            expected: [(false, .text, nil, Array("Hel".utf8)), (true, .continuation, nil, Array("lo".utf8))]
        ),
        Vector(
            name: "unmasked ping",
            bytes: [0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F],
            expected: [(true, .ping, nil, hello)]
        ),
        Vector(
            name: "masked pong",
            bytes: [0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58],
            expected: [(true, .pong, MaskingKey(0x37, 0xFA, 0x21, 0x3D), hello)]
        ),
        Vector(
            name: "256-byte binary, 16-bit length",
            bytes: [0x82, 0x7E, 0x01, 0x00] + Array(repeating: 0xAB, count: 256),
            expected: [(true, .binary, nil, Array(repeating: 0xAB, count: 256))]
        ),
        Vector(
            name: "empty close",
            bytes: [0x88, 0x00],
            expected: [(true, .close, nil, [])]
        ),
    ]

    @Test(arguments: vectors)
    func decodesRFCExamplesWholeSplitAndByteByByte(vector: Vector) {
        for chunks in Feeding.chunkings(vector.bytes) {
            let frames = decodeFrames(chunks)
            #expect(frames.count == vector.expected.count, "chunks: \(chunks.map(\.count))")
            for (frame, expected) in zip(frames, vector.expected) {
                #expect(frame.header.fin == expected.fin)
                #expect(frame.header.opcode == expected.opcode)
                #expect(frame.header.maskingKey == expected.key)
                #expect(frame.payload == expected.payload)
                #expect(frame.header.intrinsicFindings.isEmpty)
            }
        }
    }

    @Test func decodes64KiBBinaryWith64BitLength() {
        let payload = (0..<65536).map { UInt8(truncatingIfNeeded: $0) }
        let bytes: [UInt8] = [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0] + payload
        for chunks in [[bytes], [Array(bytes[..<5]), Array(bytes[5..<40000]), Array(bytes[40000...])]] {
            let frames = decodeFrames(chunks)
            #expect(frames.count == 1)
            #expect(frames[0].header.lengthEncoding == .extended64)
            #expect(frames[0].header.usesMinimalLength)
            #expect(frames[0].payload == payload)
        }
    }

    @Test func masksAcrossChunkBoundariesAtEveryOffset() {
        let payload = (0..<37).map { UInt8($0 * 7 % 256) }
        let bytes = frameBytes(opcode: .binary, key: MaskingKey(rawValue: 0xDEAD_BEEF), payload: payload)
        for chunks in Feeding.chunkings(bytes) {
            #expect(decodeFrames(chunks).first?.payload == payload)
        }
    }

    /// Whole-frame outputs against piece-wise ones (``decodeFrames`` checks
    /// both) for masked frames in a row, split at every byte: a split inside
    /// the second payload leaves it unmasked ahead only in part.
    @Test func wholeFramesMatchPiecesForMaskedFramesSplitAnywhere() {
        let first = frameBytes(opcode: .text, key: MaskingKey(rawValue: 0x1234_5678), payload: Array("one frame".utf8))
        let second = frameBytes(opcode: .binary, key: MaskingKey(rawValue: 0x9ABC_DEF0), payload: (0..<23).map { UInt8($0 * 11) })
        let third = frameBytes(opcode: .ping, key: MaskingKey(rawValue: 0x0F0F_F0F0), payload: [])
        for chunks in Feeding.chunkings(first + second + third) {
            let frames = decodeFrames(chunks)
            #expect(frames.map(\.payload) == [Array("one frame".utf8), (0..<23).map { UInt8($0 * 11) }, []])
        }
    }

    /// Masked payloads are unmasked in the decoder's buffer, several frames
    /// at a time; the bytes the caller still holds (a relay forwards them)
    /// must stay exactly as they were.
    @Test func unmasksInPlaceWithoutTouchingTheCallersBytes() {
        let frames: [(WebSocketOpcode, MaskingKey?, [UInt8])] = [
            (.text, MaskingKey(rawValue: 0x0102_0304), Array("first".utf8)),
            (.binary, MaskingKey(rawValue: 0xA5A5_5A5A), (0..<200).map { UInt8(truncatingIfNeeded: $0 &* 31) }),
            (.ping, nil, Array("an unmasked frame between".utf8)),
            (.text, MaskingKey(rawValue: 0xFFFF_0000), Array("last, split across chunks".utf8)),
        ]
        let bytes = frames.flatMap { frameBytes(opcode: $0.0, key: $0.1, payload: $0.2) }
        for chunks in [
            [bytes], [Array(bytes[..<150]), Array(bytes[150...])], [Array(bytes[..<(bytes.count - 9)]), Array(bytes.suffix(9))],
        ] {
            let buffers = chunks.map { ByteBuffer(bytes: $0) }
            var decoder = FrameDecoder(senderMasks: true)
            var payloads: [[UInt8]] = []
            for buffer in buffers {
                decoder.append(buffer)
                while let output = decoder.next() {
                    switch output {
                    case .header: payloads.append([])
                    case .payload(let piece): payloads[payloads.count - 1] += Array(buffer: piece)
                    default: break
                    }
                }
            }
            #expect(payloads == frames.map(\.2), "chunks: \(chunks.map(\.count))")
            #expect(zip(buffers, chunks).allSatisfy { Array(buffer: $0) == $1 }, "the caller's bytes changed")
        }
    }

    @Test func reportsButDecodesHeaderViolations() {
        // Reserved opcode 0x3, RSV2 set, 16-bit length for 5 bytes (non-minimal).
        let reserved: [UInt8] = [0xA3, 0x7E, 0x00, 0x05] + Self.hello
        let frames = decodeFrames([reserved])
        #expect(frames.count == 1)
        #expect(frames[0].payload == Self.hello)
        #expect(frames[0].header.rsv2)
        let kinds = frames[0].header.intrinsicFindings.map(\.kind)
        #expect(kinds == [.reservedOpcode, .nonMinimalLength])

        // A ping with 126 bytes and FIN=0: too long and fragmented.
        let ping: [UInt8] = [0x09, 0x7E, 0x00, 0x7E] + Array(repeating: 0, count: 126)
        let pingKinds = decodeFrames([ping])[0].header.intrinsicFindings.map(\.kind)
        #expect(pingKinds == [.controlFrameTooLong, .fragmentedControlFrame])
    }

    @Test func encodesHeadersBackToTheSameBytes() {
        let header = FrameHeader(fin: false, rsv1: true, opcode: .text, maskingKey: key, payloadLength: 300)
        let parsed = header.bytes.withUnsafeBytes { FrameHeader.parse($0) }
        #expect(parsed?.header == header)
        #expect(parsed?.length == 8)
    }

    @Test func gapInsidePayloadKeepsFraming() {
        var decoder = FrameDecoder(senderMasks: false)
        let first = frameBytes(opcode: .binary, payload: Array(repeating: 1, count: 100))
        let second = frameBytes(opcode: .text, payload: Self.hello)
        decoder.append(ByteBuffer(bytes: Array(first[..<30])))
        while decoder.next() != nil {}
        #expect(decoder.skip(50) == .insidePayload)
        decoder.append(ByteBuffer(bytes: Array(first[80...]) + second))
        var outputs: [FrameDecoder.Output] = []
        while let output = decoder.next() { outputs.append(output) }
        #expect(outputs.count == 6)  // loss, payload, end, header, payload, end
        #expect(outputs.first == .payloadLoss(50))
        if case .header(let header) = outputs[3] { #expect(header.opcode == .text) } else { Issue.record("no header") }
    }

    @Test func resynchronisesAtNextPlausibleFrameAfterLostFraming() {
        var decoder = FrameDecoder(senderMasks: true)
        let lost = frameBytes(opcode: .binary, key: key, payload: Array(repeating: 9, count: 40))
        let next = frameBytes(opcode: .text, key: key, payload: Self.hello)
        decoder.append(ByteBuffer(bytes: Array(lost[..<10])))
        while decoder.next() != nil {}
        // The gap swallows the rest of this frame and 3 bytes more: framing is gone.
        #expect(decoder.skip(UInt64(lost.count - 10 + 3)) == .resynchronizing)
        decoder.append(ByteBuffer(bytes: [0x55, 0x66, 0x77] + next + next))
        var skipped = 0
        var texts = 0
        while let output = decoder.next() {
            if case .skipped(let count) = output { skipped += count }
            if case .header(let header) = output, header.opcode == .text { texts += 1 }
        }
        #expect(skipped == 3)
        #expect(texts == 2)
    }

    @Test func snapshotLengthCutsKeepFramingPacketByPacket() {
        // Each "packet" holds one frame whose payload the capture cut after 4 bytes.
        var decoder = FrameDecoder(senderMasks: true, synchronized: false)
        var payloads: [[UInt8]] = []
        var losses: [UInt64] = []
        for text in ["first frame text", "second frame, longer text"] {
            let frame = frameBytes(opcode: .text, key: key, payload: Array(text.utf8))
            var payload: [UInt8] = []
            func drain() {
                while let output = decoder.next() {
                    if case .payload(let piece) = output { payload += Array(buffer: piece) }
                    if case .payloadLoss(let count) = output { losses.append(count) }
                }
            }
            decoder.append(ByteBuffer(bytes: Array(frame[..<10])))
            drain()
            // The first packet is judged as the gap arrives; later ones are in frame.
            #expect(decoder.skip(UInt64(frame.count - 10)) != .resynchronizing)
            drain()
            payloads.append(payload)
        }
        #expect(payloads == [Array("firs".utf8), Array("seco".utf8)])
        #expect(losses == [12, 21])
    }

    @Test func midStreamDecoderFindsFirstFrame() {
        var decoder = FrameDecoder(senderMasks: true, synchronized: false)
        let frame = frameBytes(opcode: .text, key: key, payload: Self.hello)
        decoder.append(ByteBuffer(bytes: [0x01, 0x02, 0x03, 0x04, 0x05] + frame))
        var headers = 0
        while let output = decoder.next() {
            if case .header = output { headers += 1 }
        }
        #expect(headers == 1)
    }
}
