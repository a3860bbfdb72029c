import FuzzSupport
import PacketCapture

/// Builds link-layer/IP/TCP packets from compact records, so that the fuzzer
/// spends its effort on TCP reassembly and WebSocket decoding rather than on
/// finding valid headers.
///
/// Record: a control byte `c` — bits 0–1 the flow (four connections: 0 and 1
/// over IPv4, 2 and 3 over IPv6; servers on port 80 for flows 0 and 2, 8080
/// for 1 and 3; flow 1 starts near the sequence wrap), bit 2 sent by the
/// server, bit 3 SYN, bit 4 FIN, bit 5 RST, bit 6 ACK, bit 7 an option byte
/// `e` follows. Then one byte, the payload length, and the payload.
///
/// Option bits 0–2, the sequence number: 0 and 7 next in order; 1 the
/// previous segment's start again; 2 a hole of one more than the byte after
/// the payload; 3 back by one more than that byte; 4 the 4 bytes after the
/// payload; 5 half the sequence space away; 6 in order without advancing.
/// Bits 3–5, what the capture cut: 0, 1, 4, 16 or 64 payload bytes, all of
/// it, the end of the TCP header; 7: nothing, but the IP length is 0 (as with
/// TSO) and the original length past 2 GiB. Bit 6: an IPv4 fragment or an
/// IPv6 hop-by-hop header. Bit 7: an 802.1Q tag on Ethernet.
struct PacketBuilder {
    struct Packet {
        var bytes: [UInt8]
        var originalLength: Int
    }

    static let initialSequence: [[UInt32]] = [
        [1000, 5000], [0xFFFF_FF00, 0xFFFF_FFF0], [0x7FFF_FFF0, 0], [123_456, 0x8000_0000],
    ]

    var linkType: LinkType
    /// Per flow and direction: the next sequence number and the last segment's start.
    var next: [[UInt32?]] = Array(repeating: [nil, nil], count: 4)
    var lastStart: [[UInt32]] = Array(repeating: [0, 0], count: 4)

    init(linkType: LinkType) {
        self.linkType = linkType
    }

    mutating func nextPacket(_ reader: inout FuzzReader) -> Packet? {
        guard let control = reader.byte() else { return nil }
        let flow = Int(control & 3)
        let fromServer = control & 4 != 0
        let side = fromServer ? 1 : 0
        let syn = control & 0x08 != 0
        let fin = control & 0x10 != 0
        let rst = control & 0x20 != 0
        let ack = control & 0x40 != 0
        let option = control & 0x80 != 0 ? reader.byte() ?? 0 : 0
        let length = Int(reader.byte() ?? 0)
        let payload = reader.take(length)

        let isn = PacketBuilder.initialSequence[flow][side]
        let base = next[flow][side] ?? isn &+ 1
        var sequence: UInt32
        var advances = true
        if syn {
            sequence = isn
        } else {
            switch option & 7 {
            case 1: sequence = lastStart[flow][side]
            case 2: sequence = base &+ UInt32(reader.byte() ?? 0) &+ 1
            case 3: sequence = base &- UInt32(reader.byte() ?? 0) &- 1
            case 4: sequence = UInt32(truncatingIfNeeded: reader.integer(width: 4))
            case 5: sequence = base &+ 0x8000_0000
            case 6:
                sequence = base
                advances = false
            default: sequence = base
            }
        }
        lastStart[flow][side] = sequence
        if advances {
            let end = sequence &+ (syn ? 1 : 0) &+ UInt32(payload.count) &+ (fin ? 1 : 0)
            if let current = next[flow][side], Int32(bitPattern: end &- current) <= 0 {
                // Behind what was sent already: a retransmission does not move on.
            } else {
                next[flow][side] = end
            }
        }
        let peerNext = next[flow][1 - side] ?? 0

        let cutChoice = Int(option >> 3 & 7)
        let captured: Int
        switch cutChoice {
        case 0...4: captured = max(0, payload.count - [0, 1, 4, 16, 64][cutChoice])
        case 7: captured = payload.count
        default: captured = 0
        }
        let jumbo = cutChoice == 7
        let oddHeader = option & 0x40 != 0
        let tagged = option & 0x80 != 0

        let ipv6 = flow >= 2
        var tcp: [UInt8] = []
        let clientPort = UInt16(40000 + flow)
        let serverPort: UInt16 = flow & 1 == 0 ? 80 : 8080
        let (sourcePort, destinationPort) = fromServer ? (serverPort, clientPort) : (clientPort, serverPort)
        tcp += bigEndian(sourcePort) + bigEndian(destinationPort)
        tcp += bigEndian(sequence) + bigEndian(ack ? peerNext : 0)
        let flags: UInt8 = (fin ? 0x01 : 0) | (syn ? 0x02 : 0) | (rst ? 0x04 : 0) | 0x08 | (ack ? 0x10 : 0)
        tcp += [0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0]

        var ip: [UInt8]
        let segmentLength = tcp.count + payload.count
        let clientAddress: [UInt8]
        let serverAddress: [UInt8]
        if ipv6 {
            clientAddress = [0xFD, 0] + Array(repeating: 0, count: 13) + [1]
            serverAddress = [0xFD, 0] + Array(repeating: 0, count: 13) + [2]
            let extensionLength = oddHeader ? 8 : 0
            let declared = jumbo ? 0 : segmentLength + extensionLength
            ip = [0x60, 0, 0, 0] + bigEndian(UInt16(truncatingIfNeeded: declared)) + [oddHeader ? 0 : 6, 64]
            ip += fromServer ? serverAddress + clientAddress : clientAddress + serverAddress
            if oddHeader { ip += [6, 0, 1, 4, 0, 0, 0, 0] }  // Hop-by-hop, PadN.
        } else {
            clientAddress = [192, 0, 2, 1]
            serverAddress = [192, 0, 2, 2]
            let declared = jumbo ? 0 : 20 + segmentLength
            let fragment: UInt16 = oddHeader ? 0x2000 : 0x4000  // More fragments, or don't fragment.
            ip = [0x45, 0] + bigEndian(UInt16(truncatingIfNeeded: declared)) + [0, 1] + bigEndian(fragment) + [64, 6, 0, 0]
            ip += fromServer ? serverAddress + clientAddress : clientAddress + serverAddress
        }

        let link = linkHeader(ipv6: ipv6, tagged: tagged)
        let headers = link.count + ip.count + tcp.count
        var bytes = link + ip + tcp
        var originalLength = headers + payload.count
        if cutChoice == 6 {
            bytes = Array(bytes.prefix(headers - tcp.count + 10))  // Cut inside the TCP header.
        } else {
            bytes += payload.prefix(captured)
        }
        if jumbo { originalLength += 0x8000_0000 }
        return Packet(bytes: bytes, originalLength: originalLength)
    }

    func linkHeader(ipv6: Bool, tagged: Bool) -> [UInt8] {
        let etherType: UInt16 = ipv6 ? 0x86DD : 0x0800
        let mac: [UInt8] = [0x02, 0, 0, 0, 0, 1]
        switch linkType {
        case .linuxSLL:
            return [0, 0, 0, 1, 0, 6] + mac + [0, 0] + bigEndian(etherType)
        case .linuxSLL2:
            return bigEndian(etherType) + [0, 0, 0, 0, 0, 1, 0, 1, 0, 6] + mac + [0, 0]
        case .null:
            return ipv6 ? [24, 0, 0, 0] : [2, 0, 0, 0]
        case .loop:
            return ipv6 ? [0, 0, 0, 24] : [0, 0, 0, 2]
        case .raw, .rawDLT12, .rawDLT14, .ipv4, .ipv6:
            return []
        default:
            var header = mac + mac
            if tagged { header += [0x81, 0x00, 0x00, 0x2A] }
            return header + bigEndian(etherType)
        }
    }
}

func bigEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.bigEndian, Array.init)
}
