/// Counts kept while decoding a capture, for the final summary.
public struct CaptureStatistics: Hashable, Sendable {
    public var packets = 0
    public var bytes: UInt64 = 0
    public var tcpSegments = 0
    public var tcpConnections = 0
    public var webSocketConnections = 0
    public var rejectedHandshakes = 0
    public var frames = 0
    public var messages = 0
    public var findings = 0
    public var gaps = 0
    public var lostBytes: UInt64 = 0
    /// Packets cut by the snapshot length inside TCP payload.
    public var truncatedPackets = 0
    /// Packets passed over, by reason ("non-IP (EtherType 0x0806)", "UDP", …).
    public var skipped: [String: Int] = [:]

    public init() {}

    mutating func skip(_ reason: PacketSkipReason) {
        let key: String
        switch reason {
        case .unsupportedLinkType(let type): key = "unsupported link type (\(type))"
        case .notIP(let etherType):
            let hex = String(etherType, radix: 16)
            key = "non-IP (EtherType 0x\(String(repeating: "0", count: max(0, 4 - hex.count)) + hex))"
        case .notTCP(let number):
            switch number {
            case 17: key = "UDP"
            case 1: key = "ICMP"
            case 58: key = "ICMPv6"
            default: key = "IP protocol \(number)"
            }
        case .ipFragment: key = "IP fragment"
        case .truncatedHeaders: key = "headers cut short"
        case .malformed: key = "malformed IP header"
        case .afterConnectionEnded: key = "segment after its connection ended"
        }
        skipped[key, default: 0] += 1
    }
}
