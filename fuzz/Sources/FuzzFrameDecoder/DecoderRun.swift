import FuzzSupport
import NIOCore
import WebSocketWire

/// One frame as a bare decoder handed it out.
struct DecodedFrame: Equatable {
    var header: FrameHeader
    var payload: [UInt8] = []
    var ended = false
    /// Payload bytes reported lost through `skip(_:)`.
    var lost: UInt64 = 0
}

/// Runs a bare `FrameDecoder` over the script's bytes (both directions in
/// record order, as one stream), checking the shape of its output as it goes:
/// header, payload pieces and losses, end; skipped bytes only between frames;
/// a gap that `skip(_:)` places inside a payload comes out as a loss of exactly
/// its size before anything else; every byte appended accounted for as header,
/// payload, skipped, dropped at a gap or still buffered. With `wholeFrames`,
/// frames whose bytes are all there come out as one output.
func decode(
    _ script: Script,
    senderMasks: Bool?,
    synchronized: Bool,
    feeding: Feeding,
    wholeFrames: Bool = false
) -> [DecodedFrame] {
    var decoder = FrameDecoder(senderMasks: senderMasks, synchronized: synchronized)
    decoder.yieldsWholeFrames = wholeFrames
    decoder.resynchronizationWindow = script.resynchronizationWindow
    check(decoder.isAtFrameBoundary == synchronized, "a new decoder is not at a frame boundary")

    var operations: [Script.Record] = []
    switch feeding {
    case .records:
        operations = script.records
    case .wholePerDirection:
        // One append per run of data between gaps.
        for record in script.records {
            if case .data(let direction, let data) = record, case .data(_, let previous)? = operations.last {
                operations[operations.count - 1] = .data(direction, previous + data)
            } else {
                operations.append(record)
            }
        }
    case .bytewise:
        for record in script.records {
            switch record {
            case .data(let direction, let data): operations += data.map { .data(direction, [$0]) }
            case .gap: operations.append(record)
            }
        }
    }

    var frames: [DecodedFrame] = []
    var inFrame = false
    var endDue = false
    /// A loss `skip(_:)` announced inside the open payload: the next output.
    var lossDue: UInt64?
    /// A gap after buffered bytes that start a frame it cuts short: that
    /// frame may lose up to this much once its buffered bytes are out.
    var deferredAllowance: UInt64 = 0
    var appended = 0
    var accounted = 0
    var outputs = 0
    let budget = 2 * script.dataByteCount + 4 * operations.count + 16

    func drain() {
        while let output = decoder.next() {
            outputs += 1
            check(outputs <= budget, "next() keeps producing output: \(outputs) outputs for \(appended) bytes")
            if let due = lossDue {
                check(output == .payloadLoss(due), "expected the \(due)-byte loss announced by skip(), got \(output)")
            }
            func checkHeader(_ header: FrameHeader) {
                check(!inFrame, "header \(header) inside a frame")
                let bytes = header.bytes
                check(bytes.count == header.headerLength, "header bytes \(bytes.count) != headerLength \(header.headerLength)")
                let reparsed = bytes.withUnsafeBytes { FrameHeader.parse($0) }
                check(reparsed?.header == header && reparsed?.length == bytes.count, "header does not round-trip: \(header)")
            }
            switch output {
            case .header(let header):
                checkHeader(header)
                frames.append(DecodedFrame(header: header))
                inFrame = true
                accounted += header.headerLength
            case .frame(let header, let payload):
                checkHeader(header)
                check(wholeFrames, "a whole frame without yieldsWholeFrames")
                check(
                    UInt64(payload.readableBytes) == header.payloadLength,
                    "whole frame with \(payload.readableBytes) of \(header.payloadLength) bytes"
                )
                frames.append(DecodedFrame(header: header, payload: Array(buffer: payload), ended: true))
                accounted += header.headerLength + payload.readableBytes
            case .payload(let piece):
                check(inFrame && !endDue, "payload outside a frame")
                check(piece.readableBytes > 0, "empty payload piece")
                frames[frames.count - 1].payload += Array(buffer: piece)
                let frame = frames[frames.count - 1]
                check(
                    UInt64(frame.payload.count) + frame.lost <= frame.header.payloadLength,
                    "payload \(frame.payload.count) + lost \(frame.lost) > length \(frame.header.payloadLength)"
                )
                accounted += piece.readableBytes
            case .end:
                check(inFrame, "end outside a frame")
                let frame = frames[frames.count - 1]
                check(
                    UInt64(frame.payload.count) + frame.lost == frame.header.payloadLength,
                    "frame ended after \(frame.payload.count) + lost \(frame.lost) of \(frame.header.payloadLength) bytes"
                )
                frames[frames.count - 1].ended = true
                inFrame = false
                endDue = false
            case .skipped(let count):
                check(!inFrame, "skipped bytes inside a frame")
                check(count > 0, "skipped \(count) bytes")
                accounted += count
            case .payloadLoss(let count):
                check(inFrame, "payload loss outside a frame")
                check(count > 0, "loss of \(count) bytes")
                if lossDue != nil {
                    lossDue = nil
                } else {
                    check(count <= deferredAllowance, "loss of \(count) bytes, only \(deferredAllowance) lost in gaps")
                    deferredAllowance -= count
                }
                frames[frames.count - 1].lost += count
                let frame = frames[frames.count - 1]
                check(
                    UInt64(frame.payload.count) + frame.lost <= frame.header.payloadLength,
                    "payload \(frame.payload.count) + lost \(frame.lost) > length \(frame.header.payloadLength)"
                )
            }
        }
        check(decoder.next() == nil, "next() yielded output after nil")
        check(lossDue == nil, "skip() announced a loss that never came out")
        check(!endDue, "a gap ended the frame but no end came")
        check(
            accounted + decoder.bufferedByteCount == appended,
            "\(appended) bytes appended, \(accounted) accounted for, \(decoder.bufferedByteCount) buffered"
        )
        if decoder.isAtFrameBoundary { check(!inFrame, "at a frame boundary inside a frame") }
    }

    for operation in operations {
        switch operation {
        case .data(_, let data):
            appended += data.count
            decoder.append(ByteBuffer(bytes: data))
        case .gap(_, let count):
            let buffered = decoder.bufferedByteCount
            deferredAllowance = 0
            switch decoder.skip(count) {
            case .insidePayload where buffered == 0:
                check(inFrame, "gap inside a payload with no frame open")
                let frame = frames[frames.count - 1]
                check(
                    UInt64(frame.payload.count) + frame.lost + count < frame.header.payloadLength,
                    "gap inside the payload reaches its end"
                )
                lossDue = count
            case .insidePayload:
                // Framing was lost, but the buffered bytes start a frame that
                // the gap cuts short; what precedes it comes out as skipped.
                check(!inFrame, "\(buffered) bytes buffered inside a payload")
                deferredAllowance = count
            case .atBoundary:
                check(inFrame && buffered == 0, "\(count)-byte gap at a boundary outside a payload")
                let frame = frames[frames.count - 1]
                check(
                    UInt64(frame.payload.count) + frame.lost + count == frame.header.payloadLength,
                    "gap at a boundary does not end the frame"
                )
                lossDue = count
                endDue = true
            case .resynchronizing:
                // The frame in progress is abandoned; buffered bytes are dropped.
                accounted += buffered
                inFrame = false
                check(decoder.bufferedByteCount == 0, "bytes kept across a gap")
            }
        }
        drain()
    }
    let buffered = decoder.bufferedByteCount
    check(decoder.discardBuffered() == buffered, "discardBuffered() count")
    check(decoder.bufferedByteCount == 0, "bytes left after discardBuffered()")
    return frames
}

/// An independent decoding of a stream that starts at a frame boundary and
/// has no gaps (RFC 6455 §5.2), to hold the decoder against.
func referenceFrames(_ bytes: [UInt8]) -> [DecodedFrame] {
    var frames: [DecodedFrame] = []
    var index = 0
    while bytes.count - index >= 2 {
        let first = bytes[index]
        let second = bytes[index + 1]
        let masked = second & 0x80 != 0
        var length = UInt64(second & 0x7F)
        let extra = length == 127 ? 8 : length == 126 ? 2 : 0
        let headerLength = 2 + extra + (masked ? 4 : 0)
        guard bytes.count - index >= headerLength else { break }
        if extra > 0 {
            length = 0
            for position in 0..<extra { length = length << 8 | UInt64(bytes[index + 2 + position]) }
        }
        let keyBytes = masked ? Array(bytes[(index + 2 + extra)..<(index + headerLength)]) : nil
        let header = FrameHeader(
            fin: first & 0x80 != 0,
            rsv1: first & 0x40 != 0,
            rsv2: first & 0x20 != 0,
            rsv3: first & 0x10 != 0,
            opcode: WebSocketOpcode(rawValue: first & 0x0F),
            maskingKey: keyBytes.map { MaskingKey($0[0], $0[1], $0[2], $0[3]) },
            payloadLength: length,
            lengthEncoding: extra == 8 ? .extended64 : extra == 2 ? .extended16 : .short
        )
        let start = index + headerLength
        let available = Int(min(UInt64(bytes.count - start), length))
        var payload = Array(bytes[start..<(start + available)])
        if let keyBytes {
            for position in payload.indices { payload[position] ^= keyBytes[position % 4] }
        }
        frames.append(DecodedFrame(header: header, payload: payload, ended: UInt64(available) == length))
        if UInt64(available) < length { break }
        index = start + available
    }
    return frames
}

/// Every bare-decoder configuration over the script's bytes.
func decodeBare(_ script: Script) {
    let stream = script.records.reduce(into: [UInt8]()) { bytes, record in
        if case .data(_, let data) = record { bytes += data }
    }
    let reference = script.hasGaps ? nil : referenceFrames(stream)
    let small = stream.count <= 2048
    for synchronized in [true, false] {
        for senderMasks in [true, false, nil] as [Bool?] {
            let frames = decode(script, senderMasks: senderMasks, synchronized: synchronized, feeding: .records)
            if synchronized, let reference {
                check(frames == reference, "decoder and reference disagree: \(frames.prefix(4)) vs \(reference.prefix(4))")
            }
            // Whole-frame outputs (as the observer asks for them) decode the same.
            let whole = decode(script, senderMasks: senderMasks, synchronized: synchronized, feeding: .records, wholeFrames: true)
            check(whole == frames, "whole frames differ: \(whole.prefix(4)) vs \(frames.prefix(4))")
        }
    }
    // Where the stream is split must not matter to a synchronised decoder.
    if let reference {
        check(decode(script, senderMasks: nil, synchronized: true, feeding: .wholePerDirection) == reference, "whole feed differs")
        if small {
            check(decode(script, senderMasks: true, synchronized: true, feeding: .bytewise) == reference, "bytewise feed differs")
        }
    }
    _ = decode(script, senderMasks: true, synchronized: false, feeding: .wholePerDirection)
    if small {
        _ = decode(script, senderMasks: false, synchronized: false, feeding: .bytewise)
    }

    // The boundary search on its own.
    for masked in [true, false, nil] as [Bool?] {
        let (found, rejected) = stream.withUnsafeBytes {
            FrameDecoder.searchFrameStart(in: $0, masked: masked, window: script.resynchronizationWindow)
        }
        check(rejected >= 0 && rejected <= stream.count, "searchFrameStart rejected \(rejected) of \(stream.count)")
        if let found {
            check(found == rejected, "searchFrameStart found \(found) but rejected \(rejected)")
            let parsed = stream.withUnsafeBytes { FrameHeader.parse(UnsafeRawBufferPointer(rebasing: $0[found...])) }
            check(parsed?.header.isPlausible(masked: masked) == true, "searchFrameStart found an implausible header")
        }
    }
}
