/// An incremental UTF-8 check (RFC 3629), fed in pieces, so that a text
/// message split across frames or TCP segments is judged as one sequence
/// (RFC 6455 §5.6, §8.1).
public struct UTF8Validator: Hashable, Sendable {
    private var pending: UInt8 = 0
    private var lower: UInt8 = 0x80
    private var upper: UInt8 = 0xBF
    /// Byte offset of the first invalid byte, once one has been seen.
    public private(set) var errorOffset: Int?
    private var consumed = 0

    public init() {}

    public var isValid: Bool { errorOffset == nil }

    /// Valid so far and not inside a multi-byte sequence.
    public var isCompleteAndValid: Bool { errorOffset == nil && pending == 0 }

    public mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        guard errorOffset == nil else { return }
        var index = 0
        let count = bytes.count
        while index < count {
            if pending == 0 {
                // Skip ASCII eight bytes at a time: the common case for text payloads.
                while index + 8 <= count,
                    bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) & 0x8080_8080_8080_8080 == 0
                {
                    index += 8
                }
                if index >= count { break }
                let byte = bytes[index]
                switch byte {
                case 0x00...0x7F: break
                case 0xC2...0xDF: pending = 1
                case 0xE0:
                    pending = 2
                    lower = 0xA0
                case 0xE1...0xEC, 0xEE...0xEF: pending = 2
                case 0xED:
                    pending = 2
                    upper = 0x9F
                case 0xF0:
                    pending = 3
                    lower = 0x90
                case 0xF1...0xF3: pending = 3
                case 0xF4:
                    pending = 3
                    upper = 0x8F
                default:
                    errorOffset = consumed + index
                    return
                }
            } else {
                let byte = bytes[index]
                guard byte >= lower && byte <= upper else {
                    errorOffset = consumed + index
                    return
                }
                lower = 0x80
                upper = 0xBF
                pending -= 1
            }
            index += 1
        }
        consumed += count
    }

    public mutating func feed(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { feed($0) }
    }
}
