/// A libpcap link-layer header type (the LINKTYPE_/DLT_ values in pcap files),
/// open so that unknown types are counted by number.
public struct LinkType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let null = LinkType(rawValue: 0)
    public static let ethernet = LinkType(rawValue: 1)
    public static let rawDLT12 = LinkType(rawValue: 12)
    public static let rawDLT14 = LinkType(rawValue: 14)
    public static let raw = LinkType(rawValue: 101)
    public static let loop = LinkType(rawValue: 108)
    public static let linuxSLL = LinkType(rawValue: 113)
    public static let ipv4 = LinkType(rawValue: 228)
    public static let ipv6 = LinkType(rawValue: 229)
    public static let linuxSLL2 = LinkType(rawValue: 276)

    public var description: String {
        switch self {
        case .null: return "BSD loopback"
        case .ethernet: return "Ethernet"
        case .rawDLT12, .rawDLT14, .raw: return "raw IP"
        case .loop: return "OpenBSD loopback"
        case .linuxSLL: return "Linux cooked (SLL)"
        case .ipv4: return "raw IPv4"
        case .ipv6: return "raw IPv6"
        case .linuxSLL2: return "Linux cooked v2 (SLL2)"
        default: return "link type \(rawValue)"
        }
    }
}
