#if canImport(Glibc)
import Glibc
#endif

/// `FUZZ_VERBOSE=1` makes the targets print a summary of each input, to see
/// what a seed or a crasher exercises.
public let fuzzVerbose = getenv("FUZZ_VERBOSE") != nil

/// A broken invariant: prints why and aborts, which libFuzzer records as a
/// crash (with the input saved as `crash-…`).
public func check(
    _ condition: @autoclosure () -> Bool,
    _ message: @autoclosure () -> String,
    file: StaticString = #fileID,
    line: UInt = #line
) {
    if !condition() {
        fatalError("invariant broken: \(message())", file: file, line: line)
    }
}

/// Reads a fuzz input front to back; every read past the end yields nothing,
/// so any byte string is a valid script.
public struct FuzzReader {
    public let bytes: UnsafeRawBufferPointer
    public private(set) var offset = 0

    public init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    public var isAtEnd: Bool { offset >= bytes.count }
    public var remaining: Int { max(0, bytes.count - offset) }

    public mutating func byte() -> UInt8? {
        guard offset < bytes.count else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    /// A big-endian integer of `width` bytes (missing bytes read as zero).
    public mutating func integer(width: Int) -> UInt64 {
        var value: UInt64 = 0
        for _ in 0..<width { value = value << 8 | UInt64(byte() ?? 0) }
        return value
    }

    /// Up to `count` bytes, fewer at the end of the input.
    public mutating func take(_ count: Int) -> [UInt8] {
        let count = min(count, remaining)
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    /// Everything not read yet.
    public mutating func rest() -> [UInt8] { take(remaining) }
}

/// Converts libFuzzer's arguments; an empty input may come with a null pointer.
public func fuzzBytes(_ start: UnsafePointer<UInt8>?, _ count: Int) -> UnsafeRawBufferPointer {
    guard let start, count > 0 else { return UnsafeRawBufferPointer(start: nil, count: 0) }
    return UnsafeRawBufferPointer(start: start, count: count)
}

/// Whether `bytes` is well-formed UTF-8, judged by the standard library's
/// decoder (which replaces every ill-formed sequence), independently of the
/// project's `UTF8Validator`.
public func isValidUTF8(_ bytes: [UInt8]) -> Bool {
    String(decoding: bytes, as: UTF8.self).utf8.elementsEqual(bytes)
}

/// libFuzzer's driver, for the entry point SwiftPM links (see ``runLibFuzzer``).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

/// Starts libFuzzer. SwiftPM links an executable target with `main` aliased to
/// `<Target>_main` (so that tests can link it); with `-parse-as-library` there
/// is no Swift `main`, so each target defines `<Target>_main` and hands over
/// to libFuzzer's own driver here.
public func runLibFuzzer(
    _ argc: CInt,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, callback)
}
