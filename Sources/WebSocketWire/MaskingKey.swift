/// The 32-bit key a client XORs its payload with (RFC 6455 §5.3).
public struct MaskingKey: Hashable, Sendable {
    /// The four key bytes in wire order, packed big-endian.
    public var rawValue: UInt32

    public init(rawValue: UInt32) {
        self.rawValue = rawValue
    }

    public init(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8) {
        self.rawValue = UInt32(b0) << 24 | UInt32(b1) << 16 | UInt32(b2) << 8 | UInt32(b3)
    }

    @inlinable
    public subscript(index: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: rawValue >> (24 - 8 * UInt32(index & 3)))
    }

    /// Eight lowercase hex digits, as Wireshark prints `websocket.masking_key`.
    public var hexString: String {
        let digits = String(rawValue, radix: 16)
        return String(repeating: "0", count: 8 - digits.count) + digits
    }

    /// XORs `bytes` in place, as if they started `offset` bytes into the payload;
    /// masking is its own inverse, so this both masks and unmasks (RFC 6455 §5.3).
    public func apply(to bytes: UnsafeMutableRawBufferPointer, offset: Int) {
        let count = bytes.count
        guard count > 0 else { return }
        // Rotate the key so that byte 0 of `bytes` lines up with key byte `offset % 4`.
        let shift = UInt32((offset & 3) * 8)
        let rotated = shift == 0 ? rawValue : (rawValue << shift) | (rawValue >> (32 - shift))
        let keyBytes = rotated.bigEndian
        let word64 = UInt64(keyBytes) | (UInt64(keyBytes) << 32)
        var index = 0
        while index + 8 <= count {
            let word = bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)
            bytes.storeBytes(of: word ^ word64, toByteOffset: index, as: UInt64.self)
            index += 8
        }
        while index < count {
            bytes[index] ^= UInt8(truncatingIfNeeded: word64 >> (UInt64(index & 3) * 8))
            index += 1
        }
    }
}
