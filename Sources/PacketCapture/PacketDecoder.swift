/// A TCP segment lifted out of a captured packet; the payload points into the
/// packet bytes and is valid only as long as they are.
public struct TCPSegmentView {
    public var source: Endpoint
    public var destination: Endpoint
    public var sequenceNumber: UInt32
    public var acknowledgementNumber: UInt32
    public var flags: UInt8
    /// Captured payload bytes.
    public var payload: UnsafeRawBufferPointer
    /// Payload bytes the IP header announces but the capture cut (snaplen).
    public var missingPayload: Int

    public var syn: Bool { flags & 0x02 != 0 }
    public var ack: Bool { flags & 0x10 != 0 }
    public var fin: Bool { flags & 0x01 != 0 }
    public var rst: Bool { flags & 0x04 != 0 }
}

/// Why a packet carried no TCP segment we could use; counted in the summary.
public enum PacketSkipReason: Error, Hashable, Sendable {
    case unsupportedLinkType(LinkType)
    case notIP(etherType: UInt16)
    case notTCP(protocolNumber: UInt8)
    case ipFragment
    case truncatedHeaders
    case malformed
    /// Data for a connection that has already ended (both FINs, or a reset),
    /// from before where it ended: a late retransmission. It is not the start
    /// of a new connection, which would begin with a SYN.
    case afterConnectionEnded
}

/// Link-layer, IP and TCP header decoding (RFC 791, RFC 8200, RFC 9293):
/// pure functions over a packet's captured bytes.
public enum PacketDecoder {
    public static func decode(
        _ bytes: UnsafeRawBufferPointer,
        linkType: LinkType,
        originalLength: Int
    ) -> Result<TCPSegmentView, PacketSkipReason> {
        guard let (etherType, offset) = networkLayer(bytes, linkType: linkType) else {
            return .failure(.unsupportedLinkType(linkType))
        }
        // An IP packet is at most 64 KiB (jumbograms aside), whatever length a
        // damaged capture header claims for the packet.
        let cut = min(max(0, originalLength - bytes.count), 65_535)
        let rest = UnsafeRawBufferPointer(rebasing: bytes[min(offset, bytes.count)...])
        switch etherType {
        case 0x0800: return ipv4(rest, cut: cut)
        case 0x86DD: return ipv6(rest, cut: cut)
        case 0: return .failure(.truncatedHeaders)
        default: return .failure(.notIP(etherType: etherType))
        }
    }

    /// The EtherType of the network layer and where it starts, or `nil` for
    /// link types we do not read. 0 stands for "headers cut short".
    static func networkLayer(_ bytes: UnsafeRawBufferPointer, linkType: LinkType) -> (UInt16, Int)? {
        func u16(_ at: Int) -> UInt16 { UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1]) }
        switch linkType {
        case .ethernet:
            guard bytes.count >= 14 else { return (0, 0) }
            var offset = 12
            var type = u16(offset)
            // 802.1Q, 802.1ad (QinQ) and the old 0x9100 tag: skip each 4-byte tag.
            while type == 0x8100 || type == 0x88A8 || type == 0x9100 {
                offset += 4
                guard bytes.count >= offset + 2 else { return (0, 0) }
                type = u16(offset)
            }
            return (type, offset + 2)
        case .linuxSLL:
            guard bytes.count >= 16 else { return (0, 0) }
            return (u16(14), 16)
        case .linuxSLL2:
            guard bytes.count >= 20 else { return (0, 0) }
            return (u16(0), 20)
        case .null, .loop:
            guard bytes.count >= 4 else { return (0, 0) }
            // NULL stores the address family in the writer's byte order, LOOP in
            // network order; the values for IPv4 and IPv6 tell which is which.
            let little = UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24
            let big = little.byteSwapped
            let family = (little <= 0xFF) ? little : big
            switch family {
            case 2: return (0x0800, 4)
            case 10, 24, 28, 30: return (0x86DD, 4)
            default: return (UInt16(truncatingIfNeeded: family), 4)
            }
        case .raw, .rawDLT12, .rawDLT14, .ipv4, .ipv6:
            guard let first = bytes.first else { return (0, 0) }
            return (first >> 4 == 6 ? 0x86DD : 0x0800, 0)
        default:
            return nil
        }
    }

    static func ipv4(_ bytes: UnsafeRawBufferPointer, cut: Int) -> Result<TCPSegmentView, PacketSkipReason> {
        guard bytes.count >= 20 else { return .failure(.truncatedHeaders) }
        guard bytes[0] >> 4 == 4 else { return .failure(.malformed) }
        let headerLength = Int(bytes[0] & 0x0F) * 4
        let totalLength = Int(bytes[2]) << 8 | Int(bytes[3])
        let flagsAndOffset = UInt16(bytes[6]) << 8 | UInt16(bytes[7])
        guard headerLength >= 20, bytes.count >= headerLength else { return .failure(.truncatedHeaders) }
        if flagsAndOffset & 0x3FFF != 0 { return .failure(.ipFragment) }
        guard bytes[9] == 6 else { return .failure(.notTCP(protocolNumber: bytes[9])) }
        let source = IPAddress.v4(bytes.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
        let destination = IPAddress.v4(bytes.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
        // TSO captures can show a total length of 0; trust the capture then.
        let declared = totalLength >= headerLength ? totalLength : bytes.count + cut
        return tcp(bytes, from: headerLength, declaredEnd: declared, source: source, destination: destination)
    }

    static func ipv6(_ bytes: UnsafeRawBufferPointer, cut: Int) -> Result<TCPSegmentView, PacketSkipReason> {
        guard bytes.count >= 40 else { return .failure(.truncatedHeaders) }
        guard bytes[0] >> 4 == 6 else { return .failure(.malformed) }
        let payloadLength = Int(bytes[4]) << 8 | Int(bytes[5])
        var next = bytes[6]
        var offset = 40
        // Walk the extension header chain (RFC 8200 §4).
        while true {
            switch next {
            case 6:
                let source = IPAddress.v6(bytes.loadUnaligned(fromByteOffset: 8, as: (UInt64, UInt64).self))
                let destination = IPAddress.v6(bytes.loadUnaligned(fromByteOffset: 24, as: (UInt64, UInt64).self))
                let declared = payloadLength == 0 ? bytes.count + cut : 40 + payloadLength
                return tcp(bytes, from: offset, declaredEnd: declared, source: source, destination: destination)
            case 0, 43, 60:
                guard bytes.count >= offset + 2 else { return .failure(.truncatedHeaders) }
                next = bytes[offset]
                offset += (Int(bytes[offset + 1]) + 1) * 8
            case 51:
                guard bytes.count >= offset + 2 else { return .failure(.truncatedHeaders) }
                next = bytes[offset]
                offset += (Int(bytes[offset + 1]) + 2) * 4
            case 44:
                guard bytes.count >= offset + 8 else { return .failure(.truncatedHeaders) }
                let fragmentOffset = UInt16(bytes[offset + 2]) << 8 | UInt16(bytes[offset + 3])
                if fragmentOffset & 0xFFF9 != 0 { return .failure(.ipFragment) }
                next = bytes[offset]
                offset += 8
            default:
                return .failure(.notTCP(protocolNumber: next))
            }
        }
    }

    static func tcp(
        _ bytes: UnsafeRawBufferPointer,
        from offset: Int,
        declaredEnd: Int,
        source: IPAddress,
        destination: IPAddress
    ) -> Result<TCPSegmentView, PacketSkipReason> {
        guard bytes.count >= offset + 20 else { return .failure(.truncatedHeaders) }
        func u16(_ at: Int) -> UInt16 { UInt16(bytes[offset + at]) << 8 | UInt16(bytes[offset + at + 1]) }
        func u32(_ at: Int) -> UInt32 { UInt32(u16(at)) << 16 | UInt32(u16(at + 2)) }
        let dataOffset = Int(bytes[offset + 12] >> 4) * 4
        guard dataOffset >= 20 else { return .failure(.malformed) }
        let payloadStart = offset + dataOffset
        guard bytes.count >= payloadStart else { return .failure(.truncatedHeaders) }
        // Ethernet pads short frames; the IP length says where the segment ends.
        let end = min(bytes.count, max(payloadStart, declaredEnd))
        let missing = max(0, declaredEnd - max(bytes.count, payloadStart))
        return .success(
            TCPSegmentView(
                source: Endpoint(address: source, port: u16(0)),
                destination: Endpoint(address: destination, port: u16(2)),
                sequenceNumber: u32(4),
                acknowledgementNumber: u32(8),
                flags: bytes[offset + 13],
                payload: UnsafeRawBufferPointer(rebasing: bytes[payloadStart..<end]),
                missingPayload: missing
            )
        )
    }
}
