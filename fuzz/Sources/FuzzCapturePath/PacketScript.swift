import FuzzSupport
import PacketCapture

/// What one fuzz input asks of the capture path.
///
/// Byte 0: bits 0–3 the link type (``PacketScript/linkTypes``, index modulo
/// their count); bits 4–5 the mode (0: packets built from compact records,
/// 1 and 2: raw packets, 3: the rest is a capture file read through libpcap);
/// bit 6 `webSocketPorts = [80]`; bit 7 tight limits (a 64-byte reassembly
/// buffer, a 32-byte detection window, 8 retained payload bytes).
///
/// Raw packets: a 16-bit big-endian captured length, one byte `cut` for the
/// bytes the capture left off (`originalLength = captured + cut`, or
/// `captured + (cut - 0xEF) * 0x1000_0000` for cut ≥ 0xF0, capped at
/// `UInt32.max`: lengths a pcap header can hold but no real packet has), then the bytes.
///
/// Built packets: see ``PacketBuilder``.
struct PacketScript {
    enum Mode {
        case built
        case raw
        case file
    }

    static let linkTypes: [LinkType] = [
        .ethernet, .linuxSLL, .linuxSLL2, .null, .loop, .raw, .rawDLT12, .rawDLT14, .ipv4, .ipv6,
        LinkType(rawValue: 147),
    ]

    var linkType: LinkType
    var mode: Mode
    var configuration = CaptureDecoder.Configuration()
    var body: FuzzReader

    init?(_ bytes: UnsafeRawBufferPointer) {
        var reader = FuzzReader(bytes)
        guard let flags = reader.byte() else { return nil }
        linkType = PacketScript.linkTypes[Int(flags & 0x0F) % PacketScript.linkTypes.count]
        switch flags >> 4 & 3 {
        case 0: mode = .built
        case 3: mode = .file
        default: mode = .raw
        }
        if flags & 0x40 != 0 { configuration.webSocketPorts = [80] }
        if flags & 0x80 != 0 {
            configuration.reassemblyBufferLimit = 64
            configuration.observer.detectionWindow = 32
            configuration.observer.maximumRetainedPayload = 8
        }
        body = reader
    }

    /// Raw packets: (bytes, originalLength).
    mutating func rawPackets() -> [([UInt8], Int)] {
        var packets: [([UInt8], Int)] = []
        while !body.isAtEnd {
            let length = Int(body.integer(width: 2))
            let cut = Int(body.byte() ?? 0)
            let bytes = body.take(length)
            // Never past what a pcap record's 32-bit length can say.
            let extra = cut < 0xF0 ? cut : min((cut - 0xEF) * 0x1000_0000, Int(UInt32.max) - bytes.count)
            packets.append((bytes, bytes.count + extra))
        }
        return packets
    }
}
