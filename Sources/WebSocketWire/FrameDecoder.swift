import NIOCore

/// A tolerant, streaming decoder for one direction of a WebSocket connection.
///
/// Feed bytes with ``append(_:)`` and drain ``next()`` until it returns `nil`.
/// Payloads are handed out unmasked, in the pieces they arrived in, so a frame
/// of any size passes through in bounded memory. Nothing is refused: reserved
/// opcodes, RSV bits and odd lengths are decoded and left to the caller to
/// judge (RFC 6455 §5.2).
public struct FrameDecoder: Sendable {
    public enum Output: Hashable, Sendable {
        /// A frame starts; its payload follows as zero or more `payload` parts.
        case header(FrameHeader)
        /// The next unmasked piece of the current frame's payload.
        case payload(ByteBuffer)
        /// The current frame's payload is complete.
        case end
        /// A frame whose whole payload is buffered: `header`, one `payload`
        /// and `end` in one output. Only with ``yieldsWholeFrames``.
        case frame(FrameHeader, ByteBuffer)
        /// Bytes passed over while looking for a frame boundary after a gap.
        case skipped(Int)
        /// Bytes of the current frame's payload that the stream lost (a gap
        /// inside the payload): the frame is incomplete, framing is intact.
        case payloadLoss(UInt64)
    }

    /// What became of a gap reported through ``skip(_:)``.
    public enum GapOutcome: Hashable, Sendable {
        /// The lost bytes lay inside the current payload; framing is intact.
        case insidePayload
        /// The gap ended exactly at a frame boundary; framing is intact.
        case atBoundary
        /// Framing is lost; the decoder now searches for a plausible header.
        case resynchronizing
    }

    private enum State: Hashable, Sendable {
        case header
        case payload(header: FrameHeader, remaining: UInt64, offset: UInt64)
        case frameEnded
        case resynchronizing
    }

    private var state: State = .header
    private var buffer: ByteBuffer
    /// What `buffer` holds when all appended bytes are consumed.
    private let empty = ByteBufferAllocator().buffer(capacity: 0)
    /// A loss to report before anything else (it follows all buffered bytes).
    private var pendingLoss: UInt64 = 0
    /// Leading buffered bytes to pass over before decoding.
    private var pendingSkip = 0
    /// A gap that follows the buffered bytes of a frame found after framing
    /// was lost; applied to that frame's payload once its bytes are out.
    private var deferredGap: UInt64 = 0
    /// Buffer index up to which masked payloads have been unmasked in place
    /// (``unmaskAhead(key:remaining:offset:)``): from the reader index to
    /// here, payload bytes are plain.
    private var plainEnd = 0

    /// Whether the sender of this direction is expected to mask; guides the
    /// search for a frame boundary after a gap. `nil` when unknown.
    public var senderMasks: Bool?

    /// When a search for a frame boundary has looked this far without
    /// confirmation, it accepts the first plausible header.
    public var resynchronizationWindow = 64 * 1024

    /// Whether a frame whose payload is all buffered comes out as one
    /// `.frame` output. Most frames of a capture arrive whole, and one output
    /// instead of three lets the caller build the frame around its payload.
    public var yieldsWholeFrames = false

    /// - Parameter synchronized: `false` when the stream may start inside a
    ///   frame (a capture begun mid-connection); the decoder then searches for
    ///   the first plausible header before decoding.
    public init(senderMasks: Bool? = nil, synchronized: Bool = true) {
        self.senderMasks = senderMasks
        self.buffer = empty
        self.state = synchronized ? .header : .resynchronizing
    }

    /// Bytes buffered but not yet decoded (a partial header, or bytes under
    /// examination while resynchronising).
    public var bufferedByteCount: Int { buffer.readableBytes }

    /// Whether the decoder is between frames.
    public var isAtFrameBoundary: Bool {
        if case .header = state { return buffer.readableBytes == 0 }
        return false
    }

    /// Consuming: a caller that hands over its only reference lets masked
    /// payloads be unmasked in place, without a copy.
    public mutating func append(_ bytes: consuming ByteBuffer) {
        if buffer.readableBytes == 0 {
            // Common case: the previous segment was consumed whole; take the new
            // one as it is instead of copying it.
            buffer = bytes
            plainEnd = buffer.readerIndex
        } else {
            if buffer.readerIndex > 64 * 1024 {
                plainEnd = max(0, plainEnd - buffer.readerIndex)
                buffer.discardReadBytes()
            }
            buffer.writeBuffer(&bytes)
        }
    }

    public mutating func next() -> Output? {
        if pendingSkip > 0 {
            let count = pendingSkip
            pendingSkip = 0
            buffer.moveReaderIndex(forwardBy: count)
            return .skipped(count)
        }
        if pendingLoss > 0 {
            let count = pendingLoss
            pendingLoss = 0
            return .payloadLoss(count)
        }
        switch state {
        case .header:
            return decodeHeader()
        case .payload(let header, let remaining, let offset):
            if remaining == 0 {
                // A deferred gap that runs past this frame's end leaves the
                // next boundary unknown.
                state = deferredGap > 0 ? .resynchronizing : .header
                deferredGap = 0
                return .end
            }
            let available = buffer.readableBytes
            if available == 0 && deferredGap > 0 {
                let lost = min(deferredGap, remaining)
                deferredGap -= lost
                state = .payload(header: header, remaining: remaining - lost, offset: offset + lost)
                return .payloadLoss(lost)
            }
            guard available > 0 else { return releasingConsumedBytes() }
            var count = Int(min(UInt64(available), remaining))
            if let key = header.maskingKey {
                if buffer.readerIndex >= plainEnd {
                    unmaskAhead(key: key, remaining: remaining, offset: offset)
                }
                count = min(count, plainEnd - buffer.readerIndex)
            }
            let piece = buffer.readSlice(length: count)!
            state = .payload(header: header, remaining: remaining - UInt64(count), offset: offset + UInt64(count))
            return .payload(piece)
        case .frameEnded:
            state = .header
            return .end
        case .resynchronizing:
            return resynchronize()
        }
    }

    /// Ends a drain (`nil`), letting go of the last bytes appended when all
    /// of them are consumed. Held until the next append, their buffer was
    /// released only after the output thread had read the events sharing it,
    /// and that release missed the cache (9 % of the decoding thread).
    private mutating func releasingConsumedBytes() -> Output? {
        if buffer.readableBytes == 0 && buffer.capacity > 0 {
            buffer = empty
        }
        return nil
    }

    /// Unmasks in place, in one pass, every masked payload byte held from the
    /// reader index on: the rest of the current frame's (`remaining` bytes,
    /// `offset` into its key) and those of the frames after it whose headers
    /// are complete. Payload pieces are then slices of the buffer, not copies;
    /// the buffer itself is copied at most once, when its storage is shared
    /// (a relay forwarding these very bytes), never the caller's bytes.
    ///
    /// Only frames that ``next()`` will read as frames in sequence are
    /// touched: the walk stops at an incomplete header and does not go past
    /// the current frame when a gap follows it (`deferredGap`).
    private mutating func unmaskAhead(key: MaskingKey, remaining: UInt64, offset: UInt64) {
        let walksOn = deferredGap == 0
        let plainCount = buffer.withUnsafeMutableReadableBytes { bytes -> Int in
            var position = Int(min(UInt64(bytes.count), remaining))
            key.apply(to: UnsafeMutableRawBufferPointer(rebasing: bytes[..<position]), offset: Int(offset & 3))
            guard walksOn, UInt64(position) == remaining else { return position }
            while position < bytes.count,
                let (header, length) = FrameHeader.parse(UnsafeRawBufferPointer(rebasing: bytes[position...]))
            {
                let start = position + length
                let count = Int(min(UInt64(bytes.count - start), header.payloadLength))
                header.maskingKey?.apply(to: UnsafeMutableRawBufferPointer(rebasing: bytes[start..<(start + count)]), offset: 0)
                position = start + count
            }
            return position
        }
        plainEnd = buffer.readerIndex + plainCount
    }

    private mutating func decodeHeader() -> Output? {
        let parsed = buffer.withUnsafeReadableBytes { FrameHeader.parse($0) }
        guard let (header, length) = parsed else { return releasingConsumedBytes() }
        buffer.moveReaderIndex(forwardBy: length)
        if yieldsWholeFrames, deferredGap == 0, header.payloadLength <= UInt64(buffer.readableBytes) {
            let count = Int(header.payloadLength)
            if let key = header.maskingKey, count > 0 {
                if buffer.readerIndex >= plainEnd {
                    unmaskAhead(key: key, remaining: header.payloadLength, offset: 0)
                } else if plainEnd < buffer.readerIndex + count {
                    // Unmasked ahead only in part, before the rest arrived:
                    // the piece-wise path knows the key offset to go on with.
                    state = .payload(header: header, remaining: header.payloadLength, offset: 0)
                    return .header(header)
                }
            }
            return .frame(header, buffer.readSlice(length: count)!)
        }
        state = .payload(header: header, remaining: header.payloadLength, offset: 0)
        return .header(header)
    }

    /// Reports `count` bytes lost from the stream after everything appended so
    /// far (a capture gap). Drain ``next()`` first: the gap follows those bytes.
    /// A loss inside a payload comes out of ``next()`` as `.payloadLoss`.
    public mutating func skip(_ count: UInt64) -> GapOutcome {
        guard count > 0 else { return .atBoundary }
        switch state {
        case .payload(let header, let remaining, let offset) where buffer.readableBytes == 0:
            if count < remaining {
                state = .payload(header: header, remaining: remaining - count, offset: offset + count)
                pendingLoss = count
                return .insidePayload
            }
            if count == remaining {
                state = .frameEnded
                pendingLoss = count
                return .atBoundary
            }
            state = .resynchronizing
            return .resynchronizing
        default:
            // Framing is lost, unless the bytes held start a frame that the gap
            // cuts short: what a snapshot length does to every packet. Such a
            // frame must end inside the gap for us to trust it.
            let masks = senderMasks
            let found: Int? = buffer.withUnsafeReadableBytes { bytes in
                var start = 0
                while start + 2 <= bytes.count {
                    let rest = UnsafeRawBufferPointer(rebasing: bytes[start...])
                    if let (header, length) = FrameHeader.parse(rest), header.isPlausible(masked: masks) {
                        let end = UInt64(start + length) + header.payloadLength
                        if end >= UInt64(bytes.count) && end <= UInt64(bytes.count) + count { return start }
                    }
                    start += 1
                }
                return nil
            }
            if let found {
                pendingSkip = found
                deferredGap = count
                state = .header
                return .insidePayload
            }
            buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            state = .resynchronizing
            return .resynchronizing
        }
    }

    private mutating func resynchronize() -> Output? {
        let masks = senderMasks
        let window = resynchronizationWindow
        let (found, rejected) = buffer.withUnsafeReadableBytes {
            FrameDecoder.searchFrameStart(in: $0, masked: masks, window: window)
        }
        if rejected > 0 {
            buffer.moveReaderIndex(forwardBy: rejected)
            if found != nil { state = .header }
            return .skipped(rejected)
        }
        guard found != nil else { return nil }
        state = .header
        return decodeHeader()
    }

    /// Looks for the first offset in `bytes` where a plausible header starts and
    /// is followed by another plausible header or by the end of `bytes`.
    ///
    /// Returns the offset found, if any, and how many leading bytes were judged
    /// unable to start a frame (the caller may drop them). A candidate whose
    /// frame runs past the end of `bytes` is accepted only once `window` bytes
    /// have been looked at; until then the search waits for more data.
    public static func searchFrameStart(
        in bytes: UnsafeRawBufferPointer,
        masked: Bool?,
        window: Int
    ) -> (found: Int?, rejected: Int) {
        var start = 0
        while start + 2 <= bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[start...])
            guard let (header, length) = FrameHeader.parse(rest) else { return (nil, start) }
            if header.isPlausible(masked: masked) {
                let end = UInt64(start + length) + header.payloadLength
                if end == UInt64(bytes.count) { return (start, start) }
                if end < UInt64(bytes.count) {
                    let after = UnsafeRawBufferPointer(rebasing: bytes[Int(end)...])
                    if let (next, _) = FrameHeader.parse(after) {
                        if next.isPlausible(masked: masked) { return (start, start) }
                    } else {
                        return (nil, start)
                    }
                } else {
                    return bytes.count - start >= window ? (start, start) : (nil, start)
                }
            }
            start += 1
        }
        return (nil, start)
    }

    /// Gives up on the bytes held for resynchronisation, e.g. at the end of a
    /// stream; returns how many were dropped.
    public mutating func discardBuffered() -> Int {
        let count = buffer.readableBytes
        buffer.moveReaderIndex(forwardBy: count)
        return count
    }
}
