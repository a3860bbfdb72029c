import NIOCore

/// Puts one direction of a TCP connection back in sequence order (RFC 9293 §3.4).
///
/// Retransmitted and overlapping bytes are delivered once; segments that come
/// early wait (up to ``bufferLimit`` bytes) for the hole before them; a hole
/// that is never filled is delivered as a gap so that the decoder above can
/// resynchronise instead of reading garbage.
public struct TCPReassembler: Sendable {
    public enum Delivery: Hashable, Sendable {
        case data(ByteBuffer)
        case gap(UInt64, snaplen: Bool)
    }

    private struct Pending: Sendable {
        var sequence: UInt32
        var payload: ByteBuffer
        var missingTail: Int
        var length: Int { payload.readableBytes + missingTail }
    }

    /// The next sequence number expected; `nil` until the first segment.
    public private(set) var nextSequence: UInt32?
    private var pending: [Pending] = []
    private var pendingBytes = 0
    public var bufferLimit: Int

    /// Deliveries ready for ``nextDelivery()``, in stream order.
    private var ready = CircularBuffer<Delivery>(initialCapacity: 4)

    /// Set once a FIN has been delivered in order.
    public private(set) var finished = false
    private var finSequence: UInt32?

    public init(bufferLimit: Int = 4 * 1024 * 1024) {
        self.bufferLimit = bufferLimit
    }

    /// The next piece of the stream, in order; drain after each ``add(sequence:syn:fin:payload:missingTail:)``.
    public mutating func nextDelivery() -> Delivery? {
        ready.popFirst()
    }

    /// Bytes waiting for an earlier hole to be filled.
    public var bufferedByteCount: Int { pendingBytes }

    /// The common case without the queue: when a segment's `byteCount` bytes
    /// are exactly the next ones and nothing is held or waiting, records them
    /// as delivered and returns `true`; the caller hands them on itself.
    /// Otherwise changes nothing and returns `false`: call
    /// ``add(sequence:syn:fin:payload:missingTail:)``.
    public mutating func takeIfNext(sequence: UInt32, syn: Bool, fin: Bool, byteCount: Int, missingTail: Int) -> Bool {
        guard !syn, missingTail == 0, byteCount > 0, sequence == nextSequence, pending.isEmpty, ready.isEmpty else {
            return false
        }
        let next = sequence &+ UInt32(truncatingIfNeeded: byteCount)
        if fin { finSequence = next }
        nextSequence = next
        if let fin = finSequence, Int32(bitPattern: next &- fin) >= 0 { finished = true }
        return true
    }

    /// Adds a segment; `missingTail` counts payload bytes the capture cut off.
    /// What it makes ready comes out of ``nextDelivery()``.
    public mutating func add(
        sequence: UInt32,
        syn: Bool,
        fin: Bool,
        payload: consuming ByteBuffer,
        missingTail: Int = 0
    ) {
        // A segment never holds more than an IP packet; larger claims come
        // from damaged captures and would break sequence arithmetic.
        let missingTail = min(max(0, missingTail), 65_535)
        var start = sequence
        if syn {
            start = sequence &+ 1
            if nextSequence == nil { nextSequence = start }
        }
        if nextSequence == nil { nextSequence = start }
        if fin {
            finSequence = start &+ UInt32(truncatingIfNeeded: payload.readableBytes + missingTail)
        }
        if payload.readableBytes + missingTail > 0 {
            if pending.isEmpty, missingTail == 0, start == nextSequence {
                // The common case: the next bytes, in order.
                ready.append(.data(payload))
                nextSequence = start &+ UInt32(truncatingIfNeeded: payload.readableBytes)
                if let fin = finSequence, Int32(bitPattern: nextSequence! &- fin) >= 0 { finished = true }
                return
            }
            insert(Pending(sequence: start, payload: payload, missingTail: missingTail))
        }
        drainInOrder()
    }

    private mutating func insert(_ segment: Pending) {
        guard let next = nextSequence else { return }
        let offset = Int32(bitPattern: segment.sequence &- next)
        if offset <= 0 && Int(offset) + segment.length <= 0 {
            return  // Entirely before what we have delivered: a retransmission.
        }
        if offset <= 0 {
            deliverInOrder(segment)
            return
        }
        // Early: keep it, in sequence order, unless the same bytes are held.
        let index = pending.firstIndex { Int32(bitPattern: $0.sequence &- segment.sequence) > 0 } ?? pending.count
        if index > 0, pending[index - 1].sequence == segment.sequence, pending[index - 1].length >= segment.length {
            return
        }
        pending.insert(segment, at: index)
        pendingBytes += segment.payload.readableBytes
        while pendingBytes > bufferLimit, let first = pending.first {
            // The hole is not going to be filled within our budget: give it up.
            let hole = UInt64(UInt32(bitPattern: Int32(bitPattern: first.sequence &- nextSequence!)))
            ready.append(.gap(hole, snaplen: false))
            nextSequence = first.sequence
            drainInOrder()
        }
    }

    /// Delivers the part of `segment` at or after `nextSequence`.
    private mutating func deliverInOrder(_ segment: Pending) {
        let next = nextSequence!
        var skip = Int(Int32(bitPattern: next &- segment.sequence))
        var payload = segment.payload
        let fromPayload = min(skip, payload.readableBytes)
        payload.moveReaderIndex(forwardBy: fromPayload)
        skip -= fromPayload
        if payload.readableBytes > 0 { ready.append(.data(payload)) }
        let missing = segment.missingTail - skip
        if missing > 0 { ready.append(.gap(UInt64(missing), snaplen: true)) }
        nextSequence = next &+ UInt32(payload.readableBytes + max(0, missing))
    }

    private mutating func drainInOrder() {
        while let first = pending.first, let next = nextSequence,
            Int32(bitPattern: first.sequence &- next) <= 0
        {
            pending.removeFirst()
            pendingBytes -= first.payload.readableBytes
            if Int(Int32(bitPattern: first.sequence &- next)) + first.length > 0 {
                deliverInOrder(first)
            }
        }
        if let fin = finSequence, let next = nextSequence, Int32(bitPattern: next &- fin) >= 0 {
            finished = true
        }
    }

    /// Releases everything still held, with a gap for each hole: the capture
    /// has ended, or the connection was reset. Drain ``nextDelivery()`` after.
    public mutating func flush() {
        while let first = pending.first, let next = nextSequence {
            let hole = Int32(bitPattern: first.sequence &- next)
            if hole > 0 {
                ready.append(.gap(UInt64(hole), snaplen: false))
                nextSequence = first.sequence
            }
            drainInOrder()
        }
    }
}
