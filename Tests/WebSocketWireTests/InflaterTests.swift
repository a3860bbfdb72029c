import NIOCore
import Testing
import WebSocketWire

@Suite struct InflaterTests {
    func inflate(_ inflater: Inflater, _ bytes: [UInt8]) throws -> String {
        var out: [UInt8] = []
        try bytes.withUnsafeBytes { try inflater.inflate($0) { out += $0 } }
        try Inflater.messageTail.withUnsafeBytes { try inflater.inflate($0) { out += $0 } }
        return String(decoding: out, as: UTF8.self)
    }

    /// RFC 7692 §7.2.3.1–§7.2.3.5: each payload inflates to "Hello".
    @Test(
        arguments: [
            [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00],
            [0x00, 0x05, 0x00, 0xFA, 0xFF, 0x48, 0x65, 0x6C, 0x6C, 0x6F, 0x00],
            [0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00],
            [0xF2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xCA, 0xC9, 0xC9, 0x07, 0x00],
        ] as [[UInt8]]
    )
    func inflatesRFC7692Examples(payload: [UInt8]) throws {
        #expect(try inflate(Inflater(), payload) == "Hello")
    }

    @Test func sharesTheWindowAcrossMessages() throws {
        // RFC 7692 §7.2.3.2: the second "Hello" refers back to the first.
        let inflater = Inflater()
        #expect(try inflate(inflater, [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]) == "Hello")
        #expect(try inflate(inflater, [0xF2, 0x00, 0x11, 0x00, 0x01, 0x00]) == "Hello")
        // Without the first message's context the back-reference fails.
        #expect(throws: Inflater.Error.self) { try inflate(Inflater(), [0xF2, 0x00, 0x11, 0x00, 0x01, 0x00]) }
    }
}
