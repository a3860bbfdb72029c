/// Standard base64 (RFC 4648 §4) with padding, written straight into a byte
/// array: the Sec-WebSocket-Accept check needs it, and the JSON Lines output
/// encodes every payload with it, so it avoids Foundation's slower path.
public enum Base64 {
    @usableFromInline
    static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    public static func encodedLength(_ count: Int) -> Int { (count + 2) / 3 * 4 }

    /// Encodes `bytes` into `output`, which must hold ``encodedLength(_:)``
    /// bytes; returns how many were written.
    @discardableResult
    public static func encode(_ bytes: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) -> Int {
        let count = bytes.count
        let length = encodedLength(count)
        precondition(output.count >= length, "base64 output buffer too small")
        alphabet.withUnsafeBufferPointer { table in
            var index = 0
            var out = 0
            while index + 3 <= count {
                let value = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2])
                output[out] = table[Int(value >> 18 & 0x3F)]
                output[out + 1] = table[Int(value >> 12 & 0x3F)]
                output[out + 2] = table[Int(value >> 6 & 0x3F)]
                output[out + 3] = table[Int(value & 0x3F)]
                index += 3
                out += 4
            }
            let rest = count - index
            if rest > 0 {
                let value = UInt32(bytes[index]) << 16 | (rest == 2 ? UInt32(bytes[index + 1]) << 8 : 0)
                output[out] = table[Int(value >> 18 & 0x3F)]
                output[out + 1] = table[Int(value >> 12 & 0x3F)]
                output[out + 2] = rest == 2 ? table[Int(value >> 6 & 0x3F)] : UInt8(ascii: "=")
                output[out + 3] = UInt8(ascii: "=")
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
