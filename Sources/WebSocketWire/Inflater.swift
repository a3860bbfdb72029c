import CZlib
import NIOCore

/// A raw-deflate decompressor for one direction of a connection (RFC 7692 §7.2.2).
///
/// A class because zlib's stream must stay at one address for its whole life;
/// each direction of each connection owns exactly one.
public final class Inflater: @unchecked Sendable {
    private let stream: UnsafeMutablePointer<z_stream>
    private var scratch: [UInt8]
    public let windowBits: Int

    public struct Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
    }

    public init(windowBits: Int = 15) {
        self.windowBits = windowBits
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        scratch = [UInt8](repeating: 0, count: 64 * 1024)
        let status = czlib_inflateInit2(stream, -Int32(windowBits))
        precondition(status == Z_OK, "inflateInit2 failed: \(status)")
    }

    deinit {
        inflateEnd(stream)
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    /// Forgets the LZ77 window, as a no_context_takeover peer does after each message.
    public func reset() {
        inflateReset(stream)
    }

    /// The four bytes a sender strips from the end of each compressed message
    /// (RFC 7692 §7.2.1) and a receiver appends before inflating (§7.2.2).
    public static let messageTail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]

    /// Inflates `input`, passing each produced piece to `sink`.
    public func inflate(_ input: UnsafeRawBufferPointer, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard let base = input.baseAddress, input.count > 0 else { return }
        stream.pointee.next_in = UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = uInt(input.count)
        defer {
            stream.pointee.next_in = nil
            stream.pointee.avail_in = 0
        }
        try scratch.withUnsafeMutableBytes { out in
            let outBase = out.baseAddress!.assumingMemoryBound(to: Bytef.self)
            repeat {
                stream.pointee.next_out = outBase
                stream.pointee.avail_out = uInt(out.count)
                let status = CZlib.inflate(stream, Z_SYNC_FLUSH)
                let produced = out.count - Int(stream.pointee.avail_out)
                if produced > 0 { try sink(UnsafeRawBufferPointer(rebasing: out[0..<produced])) }
                switch status {
                case Z_OK, Z_BUF_ERROR:
                    break
                case Z_STREAM_END:
                    // A final deflate block (BFINAL=1) ends the stream; RFC 7692
                    // §7.2.3.2 allows it, after which the next message starts anew.
                    inflateReset(stream)
                    if stream.pointee.avail_in == 0 { return }
                default:
                    let message = stream.pointee.msg.map { String(cString: $0) } ?? "zlib error \(status)"
                    throw Error(description: message)
                }
                if produced == 0 && status == Z_BUF_ERROR { return }
            } while stream.pointee.avail_in > 0 || stream.pointee.avail_out == 0
        }
    }

    public func inflate(_ buffer: ByteBuffer, sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        try buffer.withUnsafeReadableBytes { bytes in try inflate(bytes, sink: sink) }
    }
}
