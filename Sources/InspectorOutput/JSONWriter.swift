import NIOCore
import WebSocketWire

/// A minimal JSON emitter writing UTF-8 straight into a byte array: the JSON
/// Lines output runs once per frame, so it avoids Foundation's encoders.
public struct JSONWriter {
    public var bytes: [UInt8] = []
    private var needsComma = false

    public init() {
        bytes.reserveCapacity(1024)
    }

    public mutating func beginObject() {
        separate()
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
    }

    public mutating func endObject() {
        bytes.append(UInt8(ascii: "}"))
        needsComma = true
    }

    public mutating func beginArray(_ key: String) {
        self.key(key)
        bytes.append(UInt8(ascii: "["))
        needsComma = false
    }

    public mutating func endArray() {
        bytes.append(UInt8(ascii: "]"))
        needsComma = true
    }

    public mutating func beginObject(_ key: String) {
        self.key(key)
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
    }

    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }

    private mutating func key(_ key: String) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        bytes.append(contentsOf: key.utf8)
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
        needsComma = true
    }

    public mutating func field(_ key: String, _ value: String?) {
        self.key(key)
        if let value { appendString(value) } else { appendNull() }
    }

    public mutating func field(_ key: String, _ value: Bool) {
        self.key(key)
        bytes.append(contentsOf: value ? Array("true".utf8) : Array("false".utf8))
    }

    public mutating func field<I: BinaryInteger>(_ key: String, _ value: I?) {
        self.key(key)
        if let value { bytes.append(contentsOf: String(value).utf8) } else { appendNull() }
    }

    /// A number with a fixed count of decimals, e.g. seconds with 6.
    public mutating func field(_ key: String, fixed value: Int64, scale: Int64, decimals: Int) {
        self.key(key)
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        let magnitude = value.magnitude
        bytes.append(contentsOf: String(magnitude / UInt64(scale)).utf8)
        bytes.append(UInt8(ascii: "."))
        let fraction = String(magnitude % UInt64(scale))
        let width = String(scale).count - 1
        bytes.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: width - fraction.count))
        bytes.append(contentsOf: fraction.utf8.prefix(decimals))
        if decimals > width { bytes.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: decimals - width)) }
    }

    public mutating func field(_ key: String, base64 buffer: ByteBuffer) {
        self.key(key)
        bytes.append(UInt8(ascii: "\""))
        buffer.withUnsafeReadableBytes { Base64.encode($0, into: &bytes) }
        bytes.append(UInt8(ascii: "\""))
    }

    public mutating func element(_ value: String) {
        separate()
        appendString(value)
        needsComma = true
    }

    public mutating func nullField(_ key: String) {
        self.key(key)
        appendNull()
    }

    private mutating func appendNull() {
        bytes.append(contentsOf: [UInt8(ascii: "n"), UInt8(ascii: "u"), UInt8(ascii: "l"), UInt8(ascii: "l")])
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    private mutating func appendString(_ value: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(UInt8(ascii: "\\")); bytes.append(byte)
            case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\")); bytes.append(byte)
            case 0x0A: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "n"))
            case 0x0D: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "r"))
            case 0x09: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "t"))
            case 0..<0x20, 0x7F:
                bytes.append(contentsOf: Array("\\u00".utf8))
                bytes.append(JSONWriter.hex[Int(byte >> 4)])
                bytes.append(JSONWriter.hex[Int(byte & 0xF)])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    public mutating func newline() {
        bytes.append(0x0A)
        needsComma = false
    }
}
