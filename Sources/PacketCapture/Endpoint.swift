/// An IPv4 or IPv6 address, stored in network byte order as captured.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(UInt32)
    case v6((UInt64, UInt64))

    public static func == (lhs: IPAddress, rhs: IPAddress) -> Bool {
        switch (lhs, rhs) {
        case (.v4(let a), .v4(let b)): return a == b
        case (.v6(let a), .v6(let b)): return a == b
        default: return false
        }
    }

    public func hash(into hasher: inout Hasher) {
        switch self {
        case .v4(let a): hasher.combine(a)
        case .v6(let a):
            hasher.combine(a.0)
            hasher.combine(a.1)
        }
    }

    public var description: String {
        switch self {
        case .v4(let raw):
            return withUnsafeBytes(of: raw) { $0.map(String.init).joined(separator: ".") }
        case .v6(let raw):
            let groups: [UInt16] = withUnsafeBytes(of: raw) { bytes in
                stride(from: 0, to: 16, by: 2).map { UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]) }
            }
            // RFC 5952: compress the longest run of two or more zero groups.
            var bestStart = -1
            var bestLength = 0
            var index = 0
            while index < 8 {
                if groups[index] == 0 {
                    var end = index
                    while end < 8 && groups[end] == 0 { end += 1 }
                    if end - index > bestLength && end - index >= 2 {
                        bestStart = index
                        bestLength = end - index
                    }
                    index = end
                } else {
                    index += 1
                }
            }
            let hex = groups.map { String($0, radix: 16) }
            if bestStart < 0 { return hex.joined(separator: ":") }
            let head = hex[..<bestStart].joined(separator: ":")
            let tail = hex[(bestStart + bestLength)...].joined(separator: ":")
            return head + "::" + tail
        }
    }
}

/// An address and TCP port.
public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// A cheap 64-bit summary for hashing (equality still compares everything).
    var fingerprint: UInt64 {
        switch address {
        case .v4(let raw): return UInt64(raw) << 16 | UInt64(port)
        case .v6(let raw): return (raw.0 ^ raw.1.byteSwapped ^ (raw.1 >> 17)) &+ UInt64(port) &* 0x9E37_79B9_7F4A_7C15
        }
    }

    /// "1.2.3.4:80" or "[::1]:80".
    public var description: String {
        switch address {
        case .v4: return "\(address):\(port)"
        case .v6: return "[\(address)]:\(port)"
        }
    }
}
