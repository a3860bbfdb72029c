/// Which of the three payload length forms a frame used (RFC 6455 §5.2).
public enum PayloadLengthEncoding: Hashable, Sendable {
    /// Length 0–125 in the 7-bit field.
    case short
    /// 126 in the 7-bit field, then a 16-bit length.
    case extended16
    /// 127 in the 7-bit field, then a 64-bit length.
    case extended64

    var extraBytes: Int {
        switch self {
        case .short: return 0
        case .extended16: return 2
        case .extended64: return 8
        }
    }

    public var name: String {
        switch self {
        case .short: return "7-bit"
        case .extended16: return "16-bit"
        case .extended64: return "64-bit"
        }
    }
}

/// Everything in a frame before its payload (RFC 6455 §5.2), exactly as sent:
/// reserved bits, reserved opcodes and non-minimal lengths are kept, not refused.
public struct FrameHeader: Hashable, Sendable {
    public var fin: Bool
    public var rsv1: Bool
    public var rsv2: Bool
    public var rsv3: Bool
    public var opcode: WebSocketOpcode
    public var maskingKey: MaskingKey?
    public var payloadLength: UInt64
    public var lengthEncoding: PayloadLengthEncoding

    public init(
        fin: Bool = true,
        rsv1: Bool = false,
        rsv2: Bool = false,
        rsv3: Bool = false,
        opcode: WebSocketOpcode,
        maskingKey: MaskingKey? = nil,
        payloadLength: UInt64,
        lengthEncoding: PayloadLengthEncoding? = nil
    ) {
        self.fin = fin
        self.rsv1 = rsv1
        self.rsv2 = rsv2
        self.rsv3 = rsv3
        self.opcode = opcode
        self.maskingKey = maskingKey
        self.payloadLength = payloadLength
        self.lengthEncoding = lengthEncoding ?? FrameHeader.minimalEncoding(for: payloadLength)
    }

    public var isMasked: Bool { maskingKey != nil }

    /// Header bytes on the wire: 2, plus the extended length, plus the key.
    public var headerLength: Int { 2 + lengthEncoding.extraBytes + (isMasked ? 4 : 0) }

    public var rsvBits: UInt8 { (rsv1 ? 4 : 0) | (rsv2 ? 2 : 0) | (rsv3 ? 1 : 0) }

    public static func minimalEncoding(for length: UInt64) -> PayloadLengthEncoding {
        if length <= 125 { return .short }
        if length <= 0xFFFF { return .extended16 }
        return .extended64
    }

    /// RFC 6455 §5.2: "the minimal number of bytes MUST be used to encode the length".
    public var usesMinimalLength: Bool { lengthEncoding == FrameHeader.minimalEncoding(for: payloadLength) }

    /// Parses a header from the start of `bytes`.
    ///
    /// Returns `nil` when `bytes` is too short to hold the whole header; a header is
    /// never rejected for its content, since an inspector reports what it saw.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> (header: FrameHeader, length: Int)? {
        guard bytes.count >= 2 else { return nil }
        let first = bytes[0]
        let second = bytes[1]
        let masked = second & 0x80 != 0
        let length7 = second & 0x7F
        let encoding: PayloadLengthEncoding =
            length7 == 127 ? .extended64 : length7 == 126 ? .extended16 : .short
        let headerLength = 2 + encoding.extraBytes + (masked ? 4 : 0)
        guard bytes.count >= headerLength else { return nil }
        var payloadLength = UInt64(length7)
        if encoding != .short {
            payloadLength = 0
            for index in 2..<(2 + encoding.extraBytes) {
                payloadLength = payloadLength << 8 | UInt64(bytes[index])
            }
        }
        var key: MaskingKey?
        if masked {
            let at = 2 + encoding.extraBytes
            key = MaskingKey(bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3])
        }
        let header = FrameHeader(
            fin: first & 0x80 != 0,
            rsv1: first & 0x40 != 0,
            rsv2: first & 0x20 != 0,
            rsv3: first & 0x10 != 0,
            opcode: WebSocketOpcode(rawValue: first),
            maskingKey: key,
            payloadLength: payloadLength,
            lengthEncoding: encoding
        )
        return (header, headerLength)
    }

    /// The header's wire bytes, with the length in the encoding it records.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(headerLength)
        out.append((fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | (rsv2 ? 0x20 : 0) | (rsv3 ? 0x10 : 0) | opcode.rawValue)
        let maskBit: UInt8 = isMasked ? 0x80 : 0
        switch lengthEncoding {
        case .short:
            out.append(maskBit | UInt8(truncatingIfNeeded: payloadLength & 0x7F))
        case .extended16:
            out.append(maskBit | 126)
            out.append(UInt8(truncatingIfNeeded: payloadLength >> 8))
            out.append(UInt8(truncatingIfNeeded: payloadLength))
        case .extended64:
            out.append(maskBit | 127)
            for shift in stride(from: 56, through: 0, by: -8) {
                out.append(UInt8(truncatingIfNeeded: payloadLength >> UInt64(shift)))
            }
        }
        if let key = maskingKey {
            for index in 0..<4 { out.append(key[index]) }
        }
        return out
    }

    /// Violations visible in the header alone, whatever was negotiated
    /// (RFC 6455 §5.2, §5.5). Extension-dependent checks live in the observer.
    public var intrinsicFindings: [Finding] {
        var findings: [Finding] = []
        if opcode.isReserved {
            findings.append(Finding(.reservedOpcode, "opcode \(opcode.name) is reserved (RFC 6455 §5.2)"))
        }
        if opcode.isControl {
            if payloadLength > 125 {
                findings.append(
                    Finding(
                        .controlFrameTooLong,
                        "\(opcode.name) frame carries \(payloadLength) bytes; control frames allow at most 125 (RFC 6455 §5.5)"
                    )
                )
            }
            if !fin {
                findings.append(
                    Finding(
                        .fragmentedControlFrame,
                        "\(opcode.name) frame has FIN=0; control frames must not be fragmented (RFC 6455 §5.5)"
                    )
                )
            }
        }
        if !usesMinimalLength {
            findings.append(
                Finding(
                    .nonMinimalLength,
                    "length \(payloadLength) sent in the \(lengthEncoding.name) form; the minimal form is \(FrameHeader.minimalEncoding(for: payloadLength).name) (RFC 6455 §5.2)"
                )
            )
        }
        if lengthEncoding == .extended64 && payloadLength >> 63 != 0 {
            findings.append(Finding(.lengthHighBitSet, "the most significant bit of the 64-bit length is set (RFC 6455 §5.2)"))
        }
        return findings
    }

    /// Whether this header could plausibly start a frame in a stream whose
    /// sender does (`masked == true`) or does not mask; used to find frame
    /// boundaries after a gap and to recognise WebSocket traffic mid-stream.
    public func isPlausible(masked: Bool?, allowRSV1: Bool = true) -> Bool {
        if opcode.isReserved || rsv2 || rsv3 { return false }
        if rsv1 && (!allowRSV1 || opcode == .continuation || opcode.isControl) { return false }
        if let masked, masked != isMasked { return false }
        if opcode.isControl && (!fin || payloadLength > 125) { return false }
        if !usesMinimalLength || payloadLength > FrameHeader.plausiblePayloadLimit { return false }
        return true
    }

    /// Frames larger than this are rare enough that a header announcing one is
    /// more likely noise than a real frame when resynchronising.
    public static let plausiblePayloadLimit: UInt64 = 1 << 30
}
