import Testing
import WebSocketWire

@Suite struct CloseCodeTests {
    @Test(arguments: [
        (UInt16(1000), "Normal Closure", true),
        (1001, "Going Away", true),
        (1002, "Protocol Error", true),
        (1004, "Reserved", false),
        (1005, "No Status Received", false),
        (1006, "Abnormal Closure", false),
        (1009, "Message Too Big", true),
        (1011, "Internal Error", true),
        (1014, "Bad Gateway", true),
        (1015, "TLS Handshake", false),
        (999, "Unused", false),
        (1016, "Reserved for the protocol", false),
        (2999, "Reserved for the protocol", false),
        (3000, "Application", true),
        (4000, "Private", true),
        (4999, "Private", true),
        (5000, "Undefined", false),
    ])
    func namesAndWireRules(code: UInt16, name: String, allowed: Bool) {
        let closeCode = WebSocketCloseCode(code: code)
        #expect(closeCode.code == code)
        #expect(closeCode.name == name)
        #expect(closeCode.isAllowedOnWire == allowed)
    }

    @Test func opcodeNamesKeepReservedValues() {
        #expect(WebSocketOpcode(rawValue: 0xB).name == "reserved-0xB")
        #expect(WebSocketOpcode(rawValue: 0xB).isControl)
        #expect(WebSocketOpcode(rawValue: 0x3).startsMessage)
        #expect(!WebSocketOpcode.continuation.startsMessage)
    }
}

@Suite struct TimestampTests {
    /// Found by fuzzing: a pong hundreds of years after its ping overflowed
    /// the round-trip subtraction.
    @Test func intervalsSaturateInsteadOfTrapping() {
        let early = Timestamp(nanoseconds: .min + 5)
        let late = Timestamp(nanoseconds: .max - 5)
        #expect(late - early == .max)
        #expect(early - late == .min)
        #expect(Timestamp(nanoseconds: 10) - Timestamp(nanoseconds: 4) == 6)
    }
}
