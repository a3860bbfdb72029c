import Foundation
import InspectorOutput
import NIOCore
import Testing
import WebSocketWire

@Suite struct FormatterTests {
    static let close = FrameEvent(
        connection: 3,
        time: Timestamp(nanoseconds: 1_700_000_000_123_456_000),
        packet: 12,
        direction: .clientToServer,
        header: FrameHeader(opcode: .close, maskingKey: MaskingKey(rawValue: 0x0102_0304), payloadLength: 5),
        payload: ByteBuffer(bytes: [0x03, 0xE8] + Array("bye".utf8)),
        payloadTruncated: false,
        close: CloseBody(code: .normalClosure, reason: "bye"),
        pingRoundTrip: nil,
        findings: [Finding(.frameAfterClose, "quote \" and newline\n")]
    )

    @Test func frameEventAsJSONLine() {
        var writer = JSONWriter()
        JSONLinesFormatter().append(.frame(Self.close), to: &writer)
        let line = String(decoding: writer.bytes, as: UTF8.self)
        let expected =
            #"{"type":"frame","time":1700000000.123456,"connection":3,"packet":12,"direction":"client-to-server","fin":true,"rsv1":false,"rsv2":false,"rsv3":false,"opcode":8,"opcodeName":"close","masked":true,"maskingKey":"01020304","payloadLength":5,"lengthEncoding":"7-bit","payloadBase64":"A+hieWU=","payloadTruncated":false,"compressed":false,"closeCode":1000,"closeCodeName":"Normal Closure","closeReason":"bye","findings":[{"kind":"frame-after-close","message":"quote \" and newline\n"}]}"#
        #expect(line == expected + "\n")
    }

    /// Flag fields are written as one fragment for common headers and one
    /// by one otherwise: both read the same.
    @Test func flagFieldsReadTheSameEitherWay() {
        for (fin, rsv1, rsv2, rsv3, truncated) in [
            (true, false, false, false, false), (false, true, false, false, true), (true, false, true, true, false),
            (false, false, false, true, true),
        ] {
            var frame = Self.close
            frame.header = FrameHeader(fin: fin, rsv1: rsv1, rsv2: rsv2, rsv3: rsv3, opcode: .binary, maskingKey: nil, payloadLength: 5)
            frame.payloadTruncated = truncated
            var writer = JSONWriter()
            JSONLinesFormatter().append(.frame(frame), to: &writer)
            let line = String(decoding: writer.bytes, as: UTF8.self)
            #expect(line.contains(#""fin":\#(fin),"rsv1":\#(rsv1),"rsv2":\#(rsv2),"rsv3":\#(rsv3),"opcode":2,"#))
            #expect(line.contains(#""payloadTruncated":\#(truncated),"compressed":false"#))
        }
    }

    @Test func frameLineInTextView() {
        let text = TextFormatter().format(.frame(Self.close))
        #expect(
            text == """
                22:13:20.123456 #3 C→S close        FIN mask=01020304 len=5 1000 Normal Closure "bye"
                    ! frame-after-close: quote " and newline\n

                """
        )
    }

    @Test func colourOnlyWhenAsked() {
        var options = TextFormatter.Options()
        options.color = true
        #expect(TextFormatter(options: options).format(.frame(Self.close)).contains("\u{1B}["))
        #expect(!TextFormatter().format(.frame(Self.close)).contains("\u{1B}["))
    }

    @Test func base64MatchesRFC4648Vectors() {
        let vectors = ["": "", "f": "Zg==", "fo": "Zm8=", "foo": "Zm9v", "foob": "Zm9vYg==", "fooba": "Zm9vYmE=", "foobar": "Zm9vYmFy"]
        for (input, output) in vectors {
            #expect(Base64.encode(Array(input.utf8)) == output)
        }
    }

    @Test func filterSelectsDirectionOpcodeAndPattern() throws {
        var filter = EventFilter()
        filter.directions = [.serverToClient]
        #expect(!filter.admits(.frame(Self.close)))
        filter.directions = nil
        filter.opcodes = [.close]
        #expect(filter.admits(.frame(Self.close)))
        filter.pattern = try Regex("by+e")
        #expect(filter.admits(.frame(Self.close)))
        filter.pattern = try Regex("hello")
        #expect(!filter.admits(.frame(Self.close)))
    }
}

@Suite struct JSONWriterTests {
    /// Special characters at every offset, so the eight-byte fast path and the
    /// byte loop both meet each of them.
    @Test(arguments: ["\"", "\\", "\n", "\u{01}", "é", "\u{7F}"])
    func escapesEverywhere(special: String) throws {
        for offset in 0..<17 {
            let text = String(repeating: "a", count: offset) + special + String(repeating: "b", count: 20 - offset)
            var writer = JSONWriter()
            writer.beginObject()
            writer.field("t", text)
            writer.endObject()
            let decoded = try JSONSerialization.jsonObject(with: Data(writer.bytes)) as? [String: String]
            #expect(decoded?["t"] == text)
        }
    }

    @Test func replacesInvalidUTF8SoLinesStayJSON() throws {
        var writer = JSONWriter()
        writer.beginObject()
        writer.field("t", utf8: ByteBuffer(bytes: Array("ok ".utf8) + [0xFF, 0xC3] + Array(" more text here".utf8)))
        writer.endObject()
        let decoded = try JSONSerialization.jsonObject(with: Data(writer.bytes)) as? [String: String]
        #expect(decoded?["t"] == "ok \u{FFFD}\u{FFFD} more text here")
    }

    /// Long mixed text: runs of plain bytes between specials of every kind,
    /// multi-byte characters across the writer's 4 KiB blocks, lone invalid
    /// bytes (each replaced by U+FFFD), and strings of every short length.
    @Test func escapesLongMixedTextAcrossBlocks() throws {
        let pieces: [[UInt8]] = [
            Array("plain words ".utf8), Array("\"".utf8), Array("\\".utf8), [0x0A], [0x0D], [0x09], [0x01], [0x1F],
            Array("é".utf8), Array("€".utf8), Array("𝄞".utf8), [0xFF], [0x80], Array("{\"k\":1}".utf8),
        ]
        var bytes: [UInt8] = []
        var expected = ""
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        while bytes.count < 9000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let piece = pieces[Int(state >> 33) % pieces.count]
            bytes += piece
            expected += piece.count == 1 && piece[0] >= 0x80 ? "\u{FFFD}" : String(decoding: piece, as: UTF8.self)
        }
        for length in [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 4095, 4096, 4097] + [bytes.count] {
            let prefix = Array(bytes.prefix(length))
            var writer = JSONWriter(capacity: 16)
            writer.beginObject()
            writer.field("t", utf8: ByteBuffer(bytes: prefix))
            writer.endObject()
            let decoded = try JSONSerialization.jsonObject(with: Data(writer.bytes)) as? [String: String]
            let clean = prefix.allSatisfy { $0 < 0x80 } || length == bytes.count
            if clean {
                #expect(decoded?["t"] == (length == bytes.count ? expected : String(decoding: prefix, as: UTF8.self)), "length \(length)")
            }
            #expect(decoded != nil, "length \(length)")
        }
    }

    @Test func fixedPointKeepsSixDecimals() {
        var writer = JSONWriter()
        writer.beginObject()
        writer.field("time", fixed: 1_700_000_000_012_345_678, scale: 1_000_000_000, decimals: 6)
        writer.field("rtt", fixed: -2_500_000, scale: 1_000_000, decimals: 3)
        writer.field("zero", fixed: 0, scale: 1_000_000_000, decimals: 6)
        writer.endObject()
        #expect(String(decoding: writer.bytes, as: UTF8.self) == #"{"time":1700000000.012345,"rtt":-2.500,"zero":0.000000}"#)
    }

    /// Integers are written two digits at a time: every digit count.
    @Test func writesIntegersOfEveryLength() throws {
        var values: [Int64] = [0, 9, 10, 99, 100, -1, -10, Int64.max, Int64.min + 1]
        var power: Int64 = 1
        for _ in 0..<18 {
            power *= 10
            values += [power - 1, power, power + 1, -power]
        }
        for value in values {
            var writer = JSONWriter()
            writer.beginObject()
            writer.field("n", value)
            writer.field("u", UInt64(value.magnitude))
            writer.endObject()
            #expect(String(decoding: writer.bytes, as: UTF8.self) == "{\"n\":\(value),\"u\":\(value.magnitude)}")
        }
    }

    /// RFC 4648 §10 vectors, then every length to 40 against Foundation's
    /// encoder: the encoder takes six bytes per step, then three, then the tail.
    @Test func encodesBase64LikeFoundation() {
        let vectors = ["": "", "f": "Zg==", "fo": "Zm8=", "foo": "Zm9v", "foob": "Zm9vYg==", "fooba": "Zm9vYmE=", "foobar": "Zm9vYmFy"]
        for (input, expected) in vectors {
            #expect(Base64.encode(Array(input.utf8)) == expected)
        }
        for length in 0...40 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 97 &+ 13) }
            #expect(Base64.encode(bytes) == Data(bytes).base64EncodedString(), "length \(length)")
        }
    }

    /// A payload written again (a message that repeats its frame) copies the
    /// earlier text; other bytes of the same length, a slice of the same
    /// storage, and a payload after `clear()` are encoded afresh.
    @Test func reusesBase64OnlyForTheSameBytes() {
        let storage = ByteBuffer(bytes: Array("abcdefabcXYZ".utf8))
        let first = storage.getSlice(at: 0, length: 6)!
        let sameStorageOtherBytes = storage.getSlice(at: 6, length: 6)!
        let otherStorage = ByteBuffer(bytes: Array("abcdef".utf8))
        var writer = JSONWriter()
        writer.beginObject()
        writer.field("a", base64: first)
        writer.field("b", base64: first)
        writer.field("c", base64: sameStorageOtherBytes)
        writer.field("d", base64: otherStorage)
        writer.field("e", base64: ByteBuffer())
        writer.endObject()
        #expect(String(decoding: writer.bytes, as: UTF8.self) == #"{"a":"YWJjZGVm","b":"YWJjZGVm","c":"YWJjWFla","d":"YWJjZGVm","e":""}"#)
        writer.clear()
        writer.beginObject()
        writer.field("f", base64: sameStorageOtherBytes)
        writer.endObject()
        #expect(String(decoding: writer.bytes, as: UTF8.self) == #"{"f":"YWJjWFla"}"#)
    }
}
