/// Standard base64 (RFC 4648 §4) with padding, written straight into a byte
/// array: the Sec-WebSocket-Accept check needs it, and the JSON Lines output
/// encodes every payload with it, so it avoids Foundation's slower path.
public enum Base64 {
    @usableFromInline
    static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    public static func encodedLength(_ count: Int) -> Int { (count + 2) / 3 * 4 }

    /// Every 12-bit group's two output characters, so three input bytes
    /// become four characters with two lookups.
    @usableFromInline
    static let pairs: [UInt16] = (0..<4096).map { group in
        // Stored so that a little-endian 16-bit store writes the high character first.
        UInt16(alphabet[group >> 6]) | UInt16(alphabet[group & 0x3F]) << 8
    }

    /// Encodes `bytes` into `output`, which must hold ``encodedLength(_:)``
    /// bytes; returns how many were written.
    @discardableResult
    public static func encode(_ bytes: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int {
        let count = bytes.count
        let length = encodedLength(count)
        precondition(output.count >= length, "base64 output buffer too small")
        guard count > 0, let input = bytes.baseAddress, let out = output.baseAddress else { return 0 }
        pairs.withUnsafeBufferPointer { pairs in
            var index = 0
            var position = 0
            // Six bytes per step from one 8-byte load: four 12-bit lookups.
            while index + 8 <= count {
                let value = input.loadUnaligned(fromByteOffset: index, as: UInt64.self).bigEndian
                let high = UInt64(pairs[Int(value >> 52)]) | UInt64(pairs[Int(value >> 40 & 0xFFF)]) << 16
                let low = UInt64(pairs[Int(value >> 28 & 0xFFF)]) | UInt64(pairs[Int(value >> 16 & 0xFFF)]) << 16
                out.storeBytes(of: (high | low << 32).littleEndian, toByteOffset: position, as: UInt64.self)
                index += 6
                position += 8
            }
            while index + 3 <= count {
                let value =
                    UInt32(input.load(fromByteOffset: index, as: UInt8.self)) << 16
                    | UInt32(input.load(fromByteOffset: index + 1, as: UInt8.self)) << 8
                    | UInt32(input.load(fromByteOffset: index + 2, as: UInt8.self))
                let word = UInt32(pairs[Int(value >> 12)]) | UInt32(pairs[Int(value & 0xFFF)]) << 16
                out.storeBytes(of: word.littleEndian, toByteOffset: position, as: UInt32.self)
                index += 3
                position += 4
            }
            let rest = count - index
            if rest > 0 {
                alphabet.withUnsafeBufferPointer { table in
                    let value = UInt32(bytes[index]) << 16 | (rest == 2 ? UInt32(bytes[index + 1]) << 8 : 0)
                    output[position] = table[Int(value >> 18 & 0x3F)]
                    output[position + 1] = table[Int(value >> 12 & 0x3F)]
                    output[position + 2] = rest == 2 ? table[Int(value >> 6 & 0x3F)] : UInt8(ascii: "=")
                    output[position + 3] = UInt8(ascii: "=")
                }
            }
        }
        return length
    }

    public static func encode<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let array = Array(bytes)
        var output = [UInt8](repeating: 0, count: encodedLength(array.count))
        array.withUnsafeBytes { source in
            output.withUnsafeMutableBytes { _ = encode(source, into: $0) }
        }
        return String(decoding: output, as: UTF8.self)
    }
}
