/// A frame opcode: the low nibble of a frame's first byte (RFC 6455 §5.2).
///
/// An open type rather than an enum: reserved values (0x3–0x7 and 0xB–0xF) are
/// kept and printed as they were seen, because an inspector must never lose what
/// was on the wire.
public struct WebSocketOpcode: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt8

    /// Only the low four bits are kept; the upper bits belong to FIN and RSV.
    public init(rawValue: UInt8) {
        self.rawValue = rawValue & 0x0F
    }

    public static let continuation = WebSocketOpcode(rawValue: 0x0)
    public static let text = WebSocketOpcode(rawValue: 0x1)
    public static let binary = WebSocketOpcode(rawValue: 0x2)
    public static let close = WebSocketOpcode(rawValue: 0x8)
    public static let ping = WebSocketOpcode(rawValue: 0x9)
    public static let pong = WebSocketOpcode(rawValue: 0xA)

    /// Control opcodes have the high bit of the nibble set (RFC 6455 §5.5).
    public var isControl: Bool { rawValue & 0x8 != 0 }

    /// 0x3–0x7 are reserved for further non-control frames, 0xB–0xF for further
    /// control frames (RFC 6455 §5.2).
    public var isReserved: Bool {
        switch rawValue {
        case 0x0, 0x1, 0x2, 0x8, 0x9, 0xA: return false
        default: return true
        }
    }

    /// Data opcodes start a message; continuation frames only extend one.
    public var startsMessage: Bool { self == .text || self == .binary || (isReserved && !isControl) }

    public var name: String {
        switch rawValue {
        case 0x0: return "continuation"
        case 0x1: return "text"
        case 0x2: return "binary"
        case 0x8: return "close"
        case 0x9: return "ping"
        case 0xA: return "pong"
        default: return "reserved-0x" + String(rawValue, radix: 16, uppercase: true)
        }
    }
}

extension WebSocketOpcode: CustomStringConvertible {
    public var description: String { name }
}
