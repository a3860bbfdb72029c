import PacketCapture
import Testing

@Suite struct PacketDecoderTests {
    /// IPv4 + TCP from 10.0.0.1:40000 to 10.0.0.2:80, seq 1000, flags ACK|PSH, payload "hi".
    static let ipv4: [UInt8] = [
        0x45, 0x00, 0x00, 0x2A, 0x00, 0x01, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00,  // version/IHL … TTL, TCP
        10, 0, 0, 1, 10, 0, 0, 2,  // addresses
        0x9C, 0x40, 0x00, 0x50,  // ports 40000 → 80
        0x00, 0x00, 0x03, 0xE8, 0x00, 0x00, 0x00, 0x00,  // seq 1000, ack 0
        0x50, 0x18, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00,  // data offset 5, ACK|PSH
        0x68, 0x69,  // "hi"
    ]

    static let ethernetHeader: [UInt8] = Array(repeating: 0xAA, count: 12)

    static let framings: [(String, LinkType, [UInt8])] = [
        ("Ethernet", .ethernet, ethernetHeader + [0x08, 0x00] + ipv4),
        ("802.1Q", .ethernet, ethernetHeader + [0x81, 0x00, 0x00, 0x05, 0x08, 0x00] + ipv4),
        ("QinQ", .ethernet, ethernetHeader + [0x88, 0xA8, 0x00, 0x05, 0x81, 0x00, 0x00, 0x06, 0x08, 0x00] + ipv4),
        ("Linux SLL", .linuxSLL, [0, 0, 0, 1, 0, 6] + Array(repeating: 0, count: 8) + [0x08, 0x00] + ipv4),
        ("Linux SLL2", .linuxSLL2, [0x08, 0x00, 0, 0, 0, 0, 0, 1, 0, 1, 0, 6] + Array(repeating: 0, count: 8) + ipv4),
        ("BSD NULL", .null, [2, 0, 0, 0] + ipv4),
        ("OpenBSD LOOP", .loop, [0, 0, 0, 2] + ipv4),
        ("raw IP", .raw, ipv4),
        // Ethernet pads short frames: the padding must not become payload.
        ("Ethernet with padding", .ethernet, ethernetHeader + [0x08, 0x00] + ipv4 + [0, 0, 0, 0]),
    ]

    @Test(arguments: 0..<framings.count)
    func decodesTCPUnderEveryLinkLayer(index: Int) throws {
        let (_, linkType, bytes) = Self.framings[index]
        let result = bytes.withUnsafeBytes { raw in
            PacketDecoder.decode(raw, linkType: linkType, originalLength: bytes.count).map { segment in
                (
                    segment.source.description, segment.destination.description, segment.sequenceNumber, Array(segment.payload),
                    segment.missingPayload
                )
            }
        }
        let (source, destination, sequence, payload, missing) = try result.get()
        #expect(source == "10.0.0.1:40000")
        #expect(destination == "10.0.0.2:80")
        #expect(sequence == 1000)
        #expect(payload == Array("hi".utf8))
        #expect(missing == 0)
    }

    @Test func decodesIPv6WithExtensionHeaders() throws {
        var packet: [UInt8] = [0x60, 0, 0, 0, 0x00, 0x1E, 0x00, 0x40]  // payload length 30, next header hop-by-hop
        packet += Array(repeating: 0, count: 15) + [1]  // ::1
        packet += Array(repeating: 0, count: 15) + [1]
        packet += [0x06, 0x00, 0, 0, 0, 0, 0, 0]  // hop-by-hop, next = TCP, 8 bytes
        packet += Array(Self.ipv4[20...])
        let endpoints = try packet.withUnsafeBytes { raw in
            try PacketDecoder.decode(raw, linkType: .raw, originalLength: packet.count).map {
                ($0.source.description, Array($0.payload))
            }.get()
        }
        #expect(endpoints.0 == "[::1]:40000")
        #expect(endpoints.1 == Array("hi".utf8))
    }

    @Test func reportsSnaplenCut() throws {
        let bytes = Self.ethernetHeader + [0x08, 0x00] + Self.ipv4.dropLast()
        let missing = try bytes.withUnsafeBytes { raw in
            try PacketDecoder.decode(raw, linkType: .ethernet, originalLength: bytes.count + 1).map(\.missingPayload).get()
        }
        #expect(missing == 1)
    }

    /// Found by fuzzing: a record header claiming a 2 GiB packet made the
    /// missing-payload count overflow TCP sequence arithmetic.
    @Test func boundsMissingPayloadByTheIPLimit() throws {
        var tso = Self.ipv4
        tso[2] = 0  // total length 0, as TSO captures show it
        tso[3] = 0
        let missing = try tso.withUnsafeBytes { raw in
            try PacketDecoder.decode(raw, linkType: .raw, originalLength: Int(Int32.max)).map(\.missingPayload).get()
        }
        #expect(missing <= 65_535)
    }

    @Test func skipsWhatIsNotTCP() {
        let arp = Self.ethernetHeader + [0x08, 0x06] + Array(repeating: 0, count: 28)
        var udp = Self.ipv4
        udp[9] = 17
        #expect(
            arp.withUnsafeBytes { PacketDecoder.decode($0, linkType: .ethernet, originalLength: arp.count) }
                == .failure(.notIP(etherType: 0x0806))
        )
        #expect(
            udp.withUnsafeBytes { PacketDecoder.decode($0, linkType: .raw, originalLength: udp.count) }
                == .failure(.notTCP(protocolNumber: 17))
        )
        #expect(
            udp.withUnsafeBytes { PacketDecoder.decode($0, linkType: LinkType(rawValue: 147), originalLength: udp.count) }
                == .failure(.unsupportedLinkType(LinkType(rawValue: 147)))
        )
    }
}

extension Result where Success == TCPSegmentView, Failure == PacketSkipReason {
    static func == (lhs: Self, rhs: Self) -> Bool {
        switch (lhs, rhs) {
        case (.failure(let a), .failure(let b)): return a == b
        default: return false
        }
    }
}
