import NIOCore
import WebSocketWire

/// A minimal JSON emitter writing UTF-8 straight into a `ByteBuffer`.
///
/// The JSON Lines view runs it once or twice per frame, so it is built for
/// speed: keys are static strings copied whole, numbers are formatted without
/// `String`, strings that need no escaping are copied in one go, and base64 is
/// encoded in place. The buffer is also what gets written to the output.
public struct JSONWriter {
    /// Owns the memory; the writer keeps the pointer and count itself, so hot
    /// writes are plain stores with no reference-counting or exclusivity checks.
    /// A copy of a writer shares this memory: keep one writer per output.
    private final class Allocation {
        let base: UnsafeMutableRawPointer
        init(capacity: Int) { base = .allocate(byteCount: capacity, alignment: 16) }
        deinit { base.deallocate() }
    }

    private var allocation: Allocation
    private var base: UnsafeMutableRawPointer
    private var capacity: Int
    /// Bytes written so far.
    public private(set) var count = 0
    private var needsComma = false
    /// The bytes behind the last base64 text written and where that text is.
    /// A message made of one uncompressed frame has that frame's payload,
    /// and its line follows the frame's: copying the text halves the base64
    /// work of a JSON Lines run. Holding the buffer keeps its memory from
    /// being reused, so the same address and count mean the same bytes.
    private var recentBase64: (payload: ByteBuffer, address: UnsafeRawPointer, offset: Int, length: Int)?

    public init(capacity: Int = 64 * 1024) {
        allocation = Allocation(capacity: capacity)
        base = allocation.base
        self.capacity = capacity
    }

    /// The bytes written so far, valid until the next write.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: base, count: count))
    }

    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    public mutating func clear() {
        count = 0
        needsComma = false
        recentBase64 = nil
    }

    @inline(__always)
    private mutating func reserve(_ extra: Int) {
        if count + extra > capacity { grow(extra) }
    }

    private mutating func grow(_ extra: Int) {
        let newCapacity = max(capacity * 2, count + extra)
        let newAllocation = Allocation(capacity: newCapacity)
        newAllocation.base.copyMemory(from: base, byteCount: count)
        allocation = newAllocation
        base = newAllocation.base
        capacity = newCapacity
    }

    @inline(__always)
    private mutating func write(_ byte: UInt8) {
        reserve(1)
        base.storeBytes(of: byte, toByteOffset: count, as: UInt8.self)
        count += 1
    }

    @inline(__always)
    private mutating func write(_ text: StaticString) {
        write(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    @inline(__always)
    private mutating func write(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        reserve(bytes.count)
        JSONWriter.copy(source, bytes.count, to: base + count)
        count += bytes.count
    }

    /// Keys and literals are a few bytes each, several per event: a call to
    /// memmove, or a byte loop, per field cost more than two overlapping
    /// word copies. Reads stay within the `length` source bytes.
    @inline(__always)
    private static func copy(_ source: UnsafeRawPointer, _ length: Int, to destination: UnsafeMutableRawPointer) {
        switch length {
        case 8...16:
            let head = source.loadUnaligned(as: UInt64.self)
            let tail = source.loadUnaligned(fromByteOffset: length - 8, as: UInt64.self)
            destination.storeBytes(of: head, as: UInt64.self)
            (destination + length - 8).storeBytes(of: tail, as: UInt64.self)
        case 4..<8:
            let head = source.loadUnaligned(as: UInt32.self)
            let tail = source.loadUnaligned(fromByteOffset: length - 4, as: UInt32.self)
            destination.storeBytes(of: head, as: UInt32.self)
            (destination + length - 4).storeBytes(of: tail, as: UInt32.self)
        case 1..<4:
            destination.storeBytes(of: source.load(as: UInt8.self), as: UInt8.self)
            (destination + length / 2).storeBytes(of: source.load(fromByteOffset: length / 2, as: UInt8.self), as: UInt8.self)
            (destination + length - 1).storeBytes(of: source.load(fromByteOffset: length - 1, as: UInt8.self), as: UInt8.self)
        case 0:
            break
        default:
            destination.copyMemory(from: source, byteCount: length)
        }
    }

    public mutating func beginObject() {
        separate()
        write(UInt8(ascii: "{"))
        needsComma = false
    }

    public mutating func endObject() {
        write(UInt8(ascii: "}"))
        needsComma = true
    }

    public mutating func beginObject(_ key: StaticString) {
        self.key(key)
        write(UInt8(ascii: "{"))
        needsComma = false
    }

    public mutating func beginArray(_ key: StaticString) {
        self.key(key)
        write(UInt8(ascii: "["))
        needsComma = false
    }

    public mutating func endArray() {
        write(UInt8(ascii: "]"))
        needsComma = true
    }

    public mutating func newline() {
        write(UInt8(0x0A))
        needsComma = false
    }

    @inline(__always)
    private mutating func separate() {
        if needsComma { write(UInt8(ascii: ",")) }
    }

    @inline(__always)
    private mutating func key(_ key: StaticString) {
        separate()
        write(UInt8(ascii: "\""))
        write(key)
        write("\":")
        needsComma = true
    }

    /// A key that is not known at compile time (the summary's skip reasons).
    private mutating func dynamicKey(_ key: String) {
        separate()
        appendString(key)
        write(UInt8(ascii: ":"))
        needsComma = true
    }

    public mutating func field(_ key: StaticString, _ value: String?) {
        self.key(key)
        if let value { appendString(value) } else { appendNull() }
    }

    public mutating func field(_ key: StaticString, literal value: StaticString) {
        self.key(key)
        write(UInt8(ascii: "\""))
        write(value)
        write(UInt8(ascii: "\""))
    }

    /// Several fields written out in advance (`"a":true,"b":false`), for
    /// runs that take a few common values: one copy instead of a call each.
    public mutating func fields(_ fragment: StaticString) {
        separate()
        write(fragment)
        needsComma = true
    }

    public mutating func field(_ key: StaticString, _ value: Bool) {
        self.key(key)
        write(value ? "true" : "false")
    }

    public mutating func field<I: BinaryInteger>(_ key: StaticString, _ value: I?) {
        self.key(key)
        if let value { appendInteger(value) } else { appendNull() }
    }

    public mutating func field(_ dynamicKey: String, count: Int) {
        self.dynamicKey(dynamicKey)
        appendInteger(count)
    }

    /// A fixed-point number: `value / scale` with `decimals` digits after the
    /// point, e.g. nanoseconds as seconds with 6 decimals.
    public mutating func field(_ key: StaticString, fixed value: Int64, scale: Int64, decimals: Int) {
        self.key(key)
        if value < 0 { write(UInt8(ascii: "-")) }
        let magnitude = value.magnitude
        appendInteger(magnitude / UInt64(scale))
        write(UInt8(ascii: "."))
        // The first `decimals` digits of the fraction, zero-padded: scale it
        // to 10^decimals and print that many digits.
        var fraction = magnitude % UInt64(scale)
        var digitsInScale = 0
        var power: UInt64 = 1
        while power < UInt64(scale) {
            power *= 10
            digitsInScale += 1
        }
        for _ in decimals..<max(decimals, digitsInScale) { fraction /= 10 }
        for _ in digitsInScale..<max(digitsInScale, decimals) { fraction *= 10 }
        appendDigits(fraction, count: decimals)
    }

    public mutating func field(_ key: StaticString, base64 payload: ByteBuffer) {
        self.key(key)
        write(UInt8(ascii: "\""))
        let length = Base64.encodedLength(payload.readableBytes)
        reserve(length)
        let address = payload.withUnsafeReadableBytes { source -> UnsafeRawPointer? in
            if let recent = recentBase64, recent.address == source.baseAddress, recent.length == length {
                (base + count).copyMemory(from: base + recent.offset, byteCount: length)
                return nil
            }
            _ = Base64.encode(source, into: UnsafeMutableRawBufferPointer(start: base + count, count: length))
            return source.baseAddress
        }
        if let address, length > 0 { recentBase64 = (payload, address, count, length) }
        count += length
        write(UInt8(ascii: "\""))
    }

    /// A string field from raw UTF-8 (a text payload), escaped as needed.
    public mutating func field(_ key: StaticString, utf8 payload: ByteBuffer) {
        self.key(key)
        payload.withUnsafeReadableBytes { appendString($0) }
    }

    public mutating func element(_ value: String) {
        separate()
        appendString(value)
        needsComma = true
    }

    /// Eight lowercase hex digits, as Wireshark prints `websocket.masking_key`,
    /// or null; written directly, since a String per masked frame showed in
    /// profiles.
    public mutating func field(_ key: StaticString, maskingKey: MaskingKey?) {
        self.key(key)
        guard let maskingKey else {
            appendNull()
            return
        }
        reserve(10)
        base.storeBytes(of: UInt8(ascii: "\""), toByteOffset: count, as: UInt8.self)
        Self.hex.withUTF8Buffer { digits in
            for index in 0..<8 {
                let nibble = Int(maskingKey.rawValue >> UInt32(28 - 4 * index) & 0xF)
                base.storeBytes(of: digits[nibble], toByteOffset: count + 1 + index, as: UInt8.self)
            }
        }
        base.storeBytes(of: UInt8(ascii: "\""), toByteOffset: count + 9, as: UInt8.self)
        count += 10
    }

    public mutating func nullField(_ key: StaticString) {
        self.key(key)
        appendNull()
    }

    @inline(__always)
    private mutating func appendNull() {
        write("null")
    }

    private mutating func appendInteger<I: BinaryInteger>(_ value: I) {
        if value < 0 {
            write(UInt8(ascii: "-"))
            appendInteger(UInt64(value.magnitude))
            return
        }
        let value = UInt64(value)
        if value < 10 {
            write(UInt8(ascii: "0") + UInt8(value))
            return
        }
        var digits = 1
        var power: UInt64 = 10
        while digits < 20 && value >= power {
            digits += 1
            power = power &* 10
        }
        appendDigits(value, count: digits)
    }

    /// "00" through "99", for writing two digits per division. A literal:
    /// unlike a computed table it needs no lazy initialisation check per use.
    private static let digitPairs: StaticString =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839404142434445464748495051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899"

    /// The last `count` decimal digits of `value`, zero-padded.
    private mutating func appendDigits(_ value: UInt64, count digits: Int) {
        guard digits > 0 else { return }
        reserve(digits)
        var remaining = value
        var index = count + digits
        Self.digitPairs.withUTF8Buffer { pairs in
            while index - count >= 2 {
                let pair = Int(remaining % 100) * 2
                remaining /= 100
                index -= 2
                base.storeBytes(of: pairs[pair], toByteOffset: index, as: UInt8.self)
                base.storeBytes(of: pairs[pair + 1], toByteOffset: index + 1, as: UInt8.self)
            }
            if index > count {
                index -= 1
                base.storeBytes(of: UInt8(ascii: "0") + UInt8(remaining % 10), toByteOffset: index, as: UInt8.self)
            }
        }
        count += digits
    }

    private mutating func appendString(_ value: String) {
        // Native strings lend their bytes; copying the String to call
        // `withUTF8` on it would retain it, per field of every event.
        let done: Void? = value.utf8.withContiguousStorageIfAvailable { appendString(UnsafeRawBufferPointer($0)) }
        if done == nil {
            var value = value
            value.withUTF8 { appendString(UnsafeRawBufferPointer($0)) }
        }
    }

    private static let hex: StaticString = "0123456789abcdef"

    /// Writes `bytes` as a JSON string. Invalid UTF-8 is replaced (U+FFFD) so
    /// that every line stays valid JSON.
    ///
    /// Text payloads are most of a JSON Lines run's output, and JSON text
    /// inside them is full of quotes, so this writes straight into the
    /// buffer: room for the worst case (six bytes per input byte) is reserved
    /// a block at a time, plain bytes are stored eight at a time, and the
    /// bytes after a special one are simply overwritten.
    private mutating func appendString(_ bytes: UnsafeRawBufferPointer) {
        write(UInt8(ascii: "\""))
        var index = 0
        let count = bytes.count
        while index < count {
            let blockEnd = min(count, index + 4096)
            reserve((blockEnd - index) * 6 + 8)
            var out = base + self.count
            while index < blockEnd {
                // Eight bytes at a time while none needs attention: no control
                // character, quote, backslash or non-ASCII byte (SWAR tests).
                while index + 8 <= blockEnd {
                    let word = bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                    out.storeBytes(of: word, as: UInt64.self)
                    let ones: UInt64 = 0x0101_0101_0101_0101
                    let highs: UInt64 = 0x8080_8080_8080_8080
                    let quote = word ^ (ones &* 0x22)
                    let backslash = word ^ (ones &* 0x5C)
                    let special = (word &- ones &* 0x20) | (quote &- ones) & ~quote | (backslash &- ones) & ~backslash | word
                    if special & highs != 0 {
                        // The lowest flagged byte is exact (borrows only reach
                        // higher ones): keep the plain bytes before it.
                        let plain = (special & highs).trailingZeroBitCount >> 3
                        index += plain
                        out += plain
                        break
                    }
                    index += 8
                    out += 8
                }
                if index >= blockEnd { break }
                let byte = bytes[index]
                if byte >= 0x20 && byte != UInt8(ascii: "\"") && byte != UInt8(ascii: "\\") && byte < 0x80 {
                    out.storeBytes(of: byte, as: UInt8.self)
                    out += 1
                    index += 1
                    continue
                }
                if byte >= 0x80 {
                    // Non-ASCII: copy valid sequences, replace invalid ones.
                    let length = JSONWriter.validSequenceLength(bytes, at: index)
                    if length > 0 {
                        out.copyMemory(from: bytes.baseAddress! + index, byteCount: length)
                        out += length
                        index += length
                        continue
                    }
                }
                out += JSONWriter.escape(byte, to: out)
                index += 1
            }
            self.count = out - base
        }
        write(UInt8(ascii: "\""))
    }

    /// Writes the escape for `byte` (a quote, backslash, control character
    /// or invalid UTF-8) at `out`; returns its length.
    @inline(__always)
    private static func escape(_ byte: UInt8, to out: UnsafeMutableRawPointer) -> Int {
        let short: StaticString
        switch byte {
        case UInt8(ascii: "\""): short = "\\\""
        case UInt8(ascii: "\\"): short = "\\\\"
        case 0x0A: short = "\\n"
        case 0x0D: short = "\\r"
        case 0x09: short = "\\t"
        case 0x80...: short = "\u{FFFD}"
        default:
            let hex = JSONWriter.hex.utf8Start
            copy(UnsafeRawPointer(("\\u00" as StaticString).utf8Start), 4, to: out)
            (out + 4).storeBytes(of: hex[Int(byte >> 4)], as: UInt8.self)
            (out + 5).storeBytes(of: hex[Int(byte & 0xF)], as: UInt8.self)
            return 6
        }
        copy(UnsafeRawPointer(short.utf8Start), short.utf8CodeUnitCount, to: out)
        return short.utf8CodeUnitCount
    }

    /// Length of the valid UTF-8 sequence starting at `index`, or 0.
    private static func validSequenceLength(_ bytes: UnsafeRawBufferPointer, at index: Int) -> Int {
        var validator = UTF8Validator()
        let end = min(bytes.count, index + 4)
        for length in 1...(end - index) {
            validator = UTF8Validator()
            validator.feed(UnsafeRawBufferPointer(rebasing: bytes[index..<(index + length)]))
            if !validator.isValid { return 0 }
            if validator.isCompleteAndValid { return length }
        }
        return 0
    }
}
