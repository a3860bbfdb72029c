import NIOCore
import PacketCapture
import Testing

@Suite struct TCPReassemblerTests {
    struct Segment {
        var sequence: UInt32
        var bytes: String
        var syn = false
        var fin = false
        var missingTail = 0
    }

    /// Feeds segments and renders deliveries as text, gaps as "<gap N>";
    /// checks that taking in-order segments directly (``TCPReassembler/takeIfNext(sequence:syn:fin:byteCount:missingTail:)``,
    /// as the capture decoder does) delivers the same.
    func run(_ segments: [Segment], flush: Bool = true, limit: Int = 1 << 20) -> String {
        let queued = run(segments, flush: flush, limit: limit, direct: false)
        #expect(run(segments, flush: flush, limit: limit, direct: true) == queued)
        return queued
    }

    func run(_ segments: [Segment], flush: Bool, limit: Int, direct: Bool) -> String {
        var reassembler = TCPReassembler(bufferLimit: limit)
        var out = ""
        func drain() {
            while let delivery = reassembler.nextDelivery() {
                switch delivery {
                case .data(let buffer): out += String(buffer: buffer)
                case .gap(let count, let snaplen): out += snaplen ? "<cut \(count)>" : "<gap \(count)>"
                }
            }
        }
        for segment in segments {
            if direct,
                reassembler.takeIfNext(
                    sequence: segment.sequence,
                    syn: segment.syn,
                    fin: segment.fin,
                    byteCount: segment.bytes.utf8.count,
                    missingTail: segment.missingTail
                )
            {
                out += segment.bytes
                continue
            }
            reassembler.add(
                sequence: segment.sequence,
                syn: segment.syn,
                fin: segment.fin,
                payload: ByteBuffer(string: segment.bytes),
                missingTail: segment.missingTail
            )
            drain()
        }
        if flush {
            reassembler.flush()
            drain()
        }
        return out
    }

    @Test func deliversInOrderAfterSYN() {
        #expect(
            run([Segment(sequence: 99, bytes: "", syn: true), Segment(sequence: 100, bytes: "abc"), Segment(sequence: 103, bytes: "def")])
                == "abcdef"
        )
    }

    @Test func dropsRetransmissionsAndTrimsOverlaps() {
        let segments = [
            Segment(sequence: 1, bytes: "abcd"),
            Segment(sequence: 1, bytes: "abcd"),
            Segment(sequence: 3, bytes: "cdefg"),
            Segment(sequence: 5, bytes: "ef"),
        ]
        #expect(run(segments) == "abcdefg")
    }

    @Test func reordersEarlySegments() {
        let segments = [Segment(sequence: 1, bytes: "ab"), Segment(sequence: 5, bytes: "ef"), Segment(sequence: 3, bytes: "cd")]
        #expect(run(segments, flush: false) == "abcdef")
    }

    @Test func reportsUnfilledHoleAtFlush() {
        let segments = [Segment(sequence: 1, bytes: "ab"), Segment(sequence: 10, bytes: "xyz")]
        #expect(run(segments, flush: false) == "ab")
        #expect(run(segments) == "ab<gap 7>xyz")
    }

    @Test func givesUpOnHoleWhenBufferLimitIsReached() {
        let segments = [
            Segment(sequence: 1, bytes: "ab"), Segment(sequence: 10, bytes: "0123456789"), Segment(sequence: 20, bytes: "more"),
        ]
        #expect(run(segments, flush: false, limit: 8) == "ab<gap 7>0123456789more")
    }

    @Test func handlesSequenceWraparound() {
        let segments = [Segment(sequence: UInt32.max - 1, bytes: "ab"), Segment(sequence: 0, bytes: "cd")]
        #expect(run(segments) == "abcd")
    }

    @Test func reportsSnaplenCutAsGapInStreamOrder() {
        let segments = [Segment(sequence: 1, bytes: "ab", missingTail: 3), Segment(sequence: 6, bytes: "fg")]
        #expect(run(segments) == "ab<cut 3>fg")
    }

    @Test func survivesAbsurdMissingTails() {
        // Found by fuzzing (see fuzz/regressions): a cut of half the sequence space.
        let segments = [Segment(sequence: 0x8B8B_FE00, bytes: "ab", missingTail: Int(Int32.max)), Segment(sequence: 7, bytes: "xy")]
        _ = run(segments)
    }

    /// fuzz/regressions/FuzzCapturePath/reassembler-negative-skip-*: a segment
    /// half the sequence space behind, with a cut past 2 GiB.
    @Test func segmentHalfTheSequenceSpaceBehindWithA2GiBCutDoesNotTrap() {
        var reassembler = TCPReassembler()
        reassembler.add(sequence: 0, syn: true, fin: false, payload: ByteBuffer(), missingTail: 1 << 31)
        while reassembler.nextDelivery() != nil {}
        reassembler.add(sequence: 1, syn: false, fin: false, payload: ByteBuffer(bytes: [0x4A]), missingTail: 1 << 31)
        while reassembler.nextDelivery() != nil {}
    }

    @Test func finishesAfterFIN() {
        var reassembler = TCPReassembler()
        reassembler.add(sequence: 1, syn: false, fin: true, payload: ByteBuffer(string: "x"))
        #expect(reassembler.finished)
    }

    private func take(_ reassembler: inout TCPReassembler, sequence: UInt32, syn: Bool, fin: Bool, byteCount: Int, missingTail: Int) -> Bool
    {
        reassembler.takeIfNext(sequence: sequence, syn: syn, fin: fin, byteCount: byteCount, missingTail: missingTail)
    }

    @Test func takesOnlyTheNextBytesWithNothingWaiting() {
        var reassembler = TCPReassembler()
        reassembler.add(sequence: 0, syn: true, fin: false, payload: ByteBuffer())
        #expect(!take(&reassembler, sequence: 5, syn: false, fin: false, byteCount: 2, missingTail: 0))
        #expect(take(&reassembler, sequence: 1, syn: false, fin: false, byteCount: 2, missingTail: 0))
        #expect(!take(&reassembler, sequence: 3, syn: false, fin: false, byteCount: 2, missingTail: 1))
        reassembler.add(sequence: 9, syn: false, fin: false, payload: ByteBuffer(string: "early"))
        #expect(!take(&reassembler, sequence: 3, syn: false, fin: false, byteCount: 2, missingTail: 0))
        #expect(reassembler.nextSequence == 3)
        var other = TCPReassembler()
        other.add(sequence: 0, syn: true, fin: false, payload: ByteBuffer())
        #expect(take(&other, sequence: 1, syn: false, fin: true, byteCount: 3, missingTail: 0))
        #expect(other.finished)
    }
}
