import CZlib

/// A raw-deflate compressor for one direction of a connection, producing
/// permessage-deflate message payloads (RFC 7692 §7.2.1).
///
/// The fault injector uses it to stand in for a sender whose compressed
/// stream it had to change: the receiver's inflater keeps working because
/// every message this compressor writes refers only to bytes it wrote itself.
/// A class for the same reason as ``Inflater``: zlib's stream must not move.
public final class Deflater: @unchecked Sendable {
    private let stream: UnsafeMutablePointer<z_stream>
    private var scratch: [UInt8]

    /// - Parameter windowBits: the window the receiver accepts, 8–15
    ///   (RFC 7692 §7.1.2). zlib cannot compress with a window of 8; for that
    ///   the compressor stores literally (level 0), which never refers back.
    public init(windowBits: Int = 15) {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        scratch = [UInt8](repeating: 0, count: 64 * 1024)
        let level: Int32 = windowBits < 9 ? 0 : 6
        let status = czlib_deflateInit2(stream, level, -Int32(max(9, windowBits)))
        precondition(status == Z_OK, "deflateInit2 failed: \(status)")
    }

    deinit {
        deflateEnd(stream)
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    /// Compresses one whole message: a sync flush ends it on a byte boundary
    /// and its trailing 00 00 FF FF is removed (RFC 7692 §7.2.1).
    public func compressMessage(_ message: [UInt8]) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(message.count / 2 + 16)
        message.withUnsafeBytes { input in
            stream.pointee.next_in = UnsafeMutablePointer(
                mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self)
            )
            stream.pointee.avail_in = uInt(input.count)
            scratch.withUnsafeMutableBytes { out in
                let outBase = out.baseAddress!.assumingMemoryBound(to: Bytef.self)
                repeat {
                    stream.pointee.next_out = outBase
                    stream.pointee.avail_out = uInt(out.count)
                    _ = deflate(stream, Z_SYNC_FLUSH)
                    let produced = out.count - Int(stream.pointee.avail_out)
                    output.append(contentsOf: UnsafeRawBufferPointer(rebasing: out[0..<produced]))
                } while stream.pointee.avail_out == 0
            }
            stream.pointee.next_in = nil
            stream.pointee.avail_in = 0
        }
        if output.suffix(4).elementsEqual(Inflater.messageTail) {
            output.removeLast(4)
        }
        // zlib writes nothing for an empty message after a flush; the
        // receiver needs one empty block, 0x00 (RFC 7692 §7.2.3.6).
        return output.isEmpty ? [0x00] : output
    }
}
