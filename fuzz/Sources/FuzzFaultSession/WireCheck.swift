import FaultInjection
import FuzzSupport
import WebSocketWire

#if canImport(Glibc)
import Glibc
#endif

/// Issues already reported whose checks `FUZZ_IGNORE` (a comma-separated
/// list) turns off, so that a long run can look past them; `--regress`
/// without it still fails on their regressions. `empty-deflate`: a message
/// the session compresses itself may go out as an RSV1 frame with an empty
/// payload, which the receiver cannot inflate past.
let knownIssues: Set<String> = Set((getenv("FUZZ_IGNORE").map { String(cString: $0) } ?? "").split(separator: ",").map(String.init))

/// Frames cut from delivered bytes, independently of the session's own
/// cutting (only `FrameHeader.parse` is shared).
enum WireFrames {
    struct Frame {
        var header: FrameHeader
        /// Unmasked.
        var payload: [UInt8]
    }

    /// The whole frames at the start of `bytes`, and how many bytes follow
    /// the last whole one.
    static func split(_ bytes: ArraySlice<UInt8>) -> (frames: [Frame], leftover: Int) {
        var frames: [Frame] = []
        var offset = bytes.startIndex
        while offset < bytes.endIndex {
            guard let (header, length) = bytes[offset...].withUnsafeBytes({ FrameHeader.parse($0) }) else { break }
            let available = UInt64(bytes.endIndex - offset - length)
            guard header.payloadLength <= available else { break }
            let end = offset + length + Int(header.payloadLength)
            var payload = Array(bytes[(offset + length)..<end])
            if let key = header.maskingKey {
                payload.withUnsafeMutableBytes { key.apply(to: $0, offset: 0) }
            }
            frames.append(Frame(header: header, payload: payload))
            offset = end
        }
        return (frames, bytes.endIndex - offset)
    }
}

/// What must hold of the bytes a receiver got when its sender sent only
/// well-formed frames (``Script/clean``): they are well-formed frames too,
/// in RFC 6455 §5.4 order, with RSV1 only where permessage-deflate allows it
/// (RFC 7692 §6), and every compressed message inflates with the receiver's
/// own inflater (RFC 7692 §7.2.2), however the rules dropped, changed or
/// re-framed messages. Corruption rules excuse what they break on purpose.
struct WireCheck {
    let direction: Direction
    let deflate: DeflateParameters?
    let traits: RuleTraits
    let injectsReserved: Bool
    /// The receiver may see a frame cut short at the end (a byte limit).
    let mayEndInsideAFrame: Bool

    /// The data messages received, uncompressed; `nil` for one that did not
    /// inflate (already reported unless a corruption excuses it).
    func check(_ bytes: ArraySlice<UInt8>) -> [[UInt8]?] {
        let name = direction.name
        let corrupt = traits.corruptions
        let (frames, leftover) = WireFrames.split(bytes)
        if !mayEndInsideAFrame {
            check(leftover == 0, "\(name): \(leftover) bytes after the last whole frame of clean input")
        }
        let inflater = deflate.map { Inflater(windowBits: $0.inflateWindowBits(for: direction)) }
        let keepsContext = deflate.map { !$0.noContextTakeover(for: direction) } ?? true
        var messages: [[UInt8]?] = []
        var open: (compressed: Bool, payload: [UInt8])?
        for (number, frame) in frames.enumerated() {
            let header = frame.header
            let opcode = header.opcode
            let at = "\(name) frame #\(number + 1) (\(opcode.name), fin \(header.fin), rsv \(header.rsvBits), \(frame.payload.count) bytes)"
            if opcode.isReserved {
                check(corrupt.contains(.reservedOpcode) || injectsReserved, "\(at): a reserved opcode from clean input")
            }
            if header.rsv2 { check(corrupt.contains(.rsv2), "\(at): RSV2 from clean input") }
            if header.rsv3 { check(corrupt.contains(.rsv3), "\(at): RSV3 from clean input") }
            if header.isMasked != direction.senderMasks {
                check(corrupt.contains(.masked) || corrupt.contains(.unmasked), "\(at): masking wrong for the direction")
            }
            if opcode.isControl {
                check(header.fin, "\(at): a fragmented control frame")
                // invalid-utf8 inserts a byte into whatever it corrupts, a
                // 125-byte control frame too (reported as a finding).
                let slack = corrupt.contains(.invalidUTF8) ? 1 : 0
                check(
                    frame.payload.count <= 125 + slack || corrupt.contains(.oversizedControl),
                    "\(at): a control frame over 125 bytes"
                )
                if header.rsv1 { check(corrupt.contains(.rsv1), "\(at): RSV1 on a control frame") }
                continue
            }
            if opcode == .continuation {
                check(open != nil, "\(at): a continuation frame outside a message (RFC 6455 §5.4)")
                if header.rsv1 { check(corrupt.contains(.rsv1), "\(at): RSV1 on a continuation frame (RFC 7692 §6.1)") }
            } else {
                check(open == nil, "\(at): a new message inside a fragmented one (RFC 6455 §5.4)")
                if header.rsv1 {
                    check(deflate != nil || corrupt.contains(.rsv1), "\(at): RSV1 without permessage-deflate")
                }
                open = (header.rsv1, [])
            }
            open?.payload += frame.payload
            guard header.fin, let message = open else { continue }
            open = nil
            guard message.compressed, let inflater else {
                messages.append(message.payload)
                continue
            }
            if message.payload.isEmpty && knownIssues.contains("empty-deflate") {
                // The receiver's zlib takes the tail alone for the start of a
                // stored block and is lost from here on (known issue).
                messages.append(nil)
                return messages
            }
            var plain: [UInt8] = []
            do {
                try (message.payload + Inflater.messageTail).withUnsafeBytes { try inflater.inflate($0) { plain += $0 } }
                if !keepsContext { inflater.reset() }
                messages.append(plain)
            } catch {
                // A corrupt rsv1 marks an uncompressed message compressed.
                check(corrupt.contains(.rsv1), "\(at): a compressed message the receiver cannot inflate: \(error)")
                messages.append(nil)
                // The receiver's inflater is lost from here on.
                return messages
            }
        }
        return messages
    }

    private func check(_ condition: Bool, _ message: @autoclosure () -> String) {
        FuzzSupport.check(condition, message())
    }
}

/// Whether `part` appears in `whole` in order (not necessarily adjacent).
func isSubsequence(_ part: [[UInt8]], of whole: [[UInt8]]) -> Bool {
    var index = whole.startIndex
    for element in part {
        guard let found = whole[index...].firstIndex(of: element) else { return false }
        index = found + 1
    }
    return true
}
