import NIOCore

/// Decoding state of one direction of an open connection.
struct StreamState {
    let direction: Direction
    var decoder = FrameDecoder()
    /// The frame and message being decoded, as the events they will become.
    /// Each is filled in place and moved whole into the event queue: built
    /// from a separate state at the end, the optimiser copied every buffer
    /// reference into the event and released the state's (about ten
    /// reference counts per frame).
    var frame: FrameEvent?
    var frameProgress = FrameProgress()
    var message: MessageEvent?
    var messageProgress = MessageProgress()
    var inflater: Inflater?
    /// Set when this direction's inflate context can no longer be trusted.
    var inflateUnusable: String?
    /// The inflater was made without a handshake in view, on a guess.
    var inflaterGuessed = false
    var closeSent = false
    var stats = DirectionStatistics()
    var pings: [(payload: [UInt8], time: Timestamp)] = []
    /// Where frames and messages start: `ByteBuffer()` looks up a shared
    /// empty storage through a lazily initialised global, twice per frame.
    private let empty = ByteBuffer()

    init(direction: Direction) {
        self.direction = direction
        decoder.yieldsWholeFrames = true
    }

    // MARK: Frames (RFC 6455 §5)

    mutating func drain(
        _ context: FrameContext,
        events: inout EventQueue,
        findingCount: inout Int,
        peerPings: inout [(payload: [UInt8], time: Timestamp)]
    ) {
        while let output = decoder.next() {
            // Consumed, so that payloads move out of the output instead of
            // being copied and the output's reference released.
            switch consume output {
            case .frame(let header, let payload):
                // The event starts out holding the payload, rather than an
                // empty buffer that the first piece replaces. The frame and
                // its message each hold a reference: one copy, then moves.
                let limit = retentionLimit(for: header, context)
                if payload.readableBytes <= limit {
                    let forMessage = payload
                    beginFrame(header, context, payload: consume payload)
                    feedMessage(consume forMessage, limit: limit, deflate: context.deflate)
                } else {
                    beginFrame(header, context)
                    consumePayload(payload, limit: limit, deflate: context.deflate)
                }
                endFrame(context, events: &events, findingCount: &findingCount, peerPings: &peerPings)
            case .header(let header):
                beginFrame(header, context)
            case .payload(let piece):
                consumePayload(piece, limit: frameProgress.limit, deflate: context.deflate)
            case .end:
                endFrame(context, events: &events, findingCount: &findingCount, peerPings: &peerPings)
            case .payloadLoss:
                markLoss(outcome: .insidePayload, deflate: context.deflate)
            case .skipped(let count):
                let finding = Finding(.resynchronized, "skipped \(count) bytes to reach the next plausible frame header")
                findingCount += 1
                events.append(
                    .finding(FindingEvent(connection: context.connection, time: context.time, direction: direction, finding: finding))
                )
            }
        }
    }

    /// How much of this frame's payload (and its message's) to keep: binary
    /// messages may keep less than text (``ObserverConfiguration/maximumRetainedBinaryPayload``).
    /// A continuation counts as its message's kind.
    func retentionLimit(for header: FrameHeader, _ context: FrameContext) -> Int {
        let kind = header.opcode == .continuation ? message?.opcode ?? header.opcode : header.opcode
        return kind == .binary ? context.binaryLimit : context.limit
    }

    /// `payload`: the frame's whole payload, when it came with the header
    /// and fits the retention limit.
    mutating func beginFrame(_ header: FrameHeader, _ context: FrameContext, payload: consuming ByteBuffer? = nil) {
        var findings = header.intrinsicFindings
        if direction == .clientToServer && !header.isMasked {
            findings.append(Finding(.unmaskedClientFrame, "client frame is not masked (RFC 6455 §5.1)"))
        } else if direction == .serverToClient && header.isMasked {
            findings.append(Finding(.maskedServerFrame, "server frame is masked (RFC 6455 §5.1)"))
        }
        let deflate = context.deflate
        if !context.unknownExtensions {
            if header.rsv1 {
                if let deflate {
                    let allowed = deflate.variant == .perFrame ? !header.opcode.isControl : header.opcode.startsMessage
                    if !allowed {
                        findings.append(
                            Finding(
                                .unexpectedRSVBits,
                                "RSV1 is set on a \(header.opcode.name) frame; permessage-deflate allows it only on a message's first frame (RFC 7692 §6.1)"
                            )
                        )
                    }
                } else if !context.deflateGuessed {
                    findings.append(Finding(.unexpectedRSVBits, "RSV1 is set but no extension was negotiated (RFC 6455 §5.2)"))
                }
            }
            if header.rsv2 || header.rsv3 {
                findings.append(Finding(.unexpectedRSVBits, "RSV\(header.rsv2 ? 2 : 3) is set but no extension defines it (RFC 6455 §5.2)"))
            }
        }
        if closeSent {
            findings.append(Finding(.frameAfterClose, "\(header.opcode.name) frame sent after this side's Close frame (RFC 6455 §5.5.1)"))
        }
        if header.opcode == .continuation {
            if message == nil && !(context.midStream && stats.messages == 0) {
                findings.append(Finding(.continuationWithoutStart, "continuation frame with no message in progress (RFC 6455 §5.4)"))
            }
            message?.frameCount += 1
        } else if header.opcode.startsMessage {
            if let unfinished = message?.opcode {
                findings.append(
                    Finding(
                        .dataFrameInsideMessage,
                        "\(header.opcode.name) frame starts a new message while a fragmented \(unfinished.name) message is unfinished (RFC 6455 §5.4)"
                    )
                )
                message = nil
            }
            let perMessage = deflate?.variant == .perMessage || (deflate == nil && context.deflateGuessed)
            let compressed = header.rsv1 && (perMessage || deflate?.variant == .perFrame)
            if compressed, deflate == nil, inflater == nil {
                // Mid-stream: assume permessage-deflate and see whether the bytes
                // inflate; with context takeover they only can if this is the
                // first compressed message of the connection.
                inflater = Inflater(windowBits: 15)
                inflaterGuessed = true
            }
            message = MessageEvent(
                connection: context.connection,
                time: context.time,
                packet: context.packet,
                direction: direction,
                opcode: header.opcode,
                frameCount: 1,
                compressed: compressed,
                wireLength: 0,
                length: 0,
                payload: empty,
                payloadTruncated: false,
                inflateError: nil,
                findings: []
            )
            messageProgress = MessageProgress()
        }
        let initial: ByteBuffer
        switch consume payload {
        case .some(let payload): initial = payload
        case .none: initial = empty
        }
        frame = FrameEvent(
            connection: context.connection,
            time: context.time,
            packet: context.packet,
            direction: direction,
            header: header,
            payload: initial,
            payloadTruncated: false,
            isCompressed: false,
            findings: findings
        )
        frameProgress.received = UInt64(frame!.payload.readableBytes)
        frameProgress.lost = false
        frameProgress.limit = retentionLimit(for: header, context)
    }

    // The frame and message are mutated in place (`frame!.…`) and moved out
    // once, into the queue (see `frame`).
    mutating func endFrame(
        _ context: FrameContext,
        events: inout EventQueue,
        findingCount: inout Int,
        peerPings: inout [(payload: [UInt8], time: Timestamp)]
    ) {
        guard frame != nil else { return }
        let header = frame!.header
        let deflate = context.deflate
        var close: CloseBody?
        var roundTrip: Int64?
        var endsMessage = false
        let compressed =
            !header.opcode.isControl && (message?.compressed ?? false)
            && (deflate?.variant != .perFrame || header.rsv1)

        if header.opcode == .close {
            close = StreamState.parseClose(frame!.payload, complete: !frameProgress.lost, findings: &frame!.findings)
            closeSent = true
            stats.close = close
        } else if header.opcode == .ping, !frameProgress.lost {
            if pings.count >= 64 { pings.removeFirst() }
            pings.append((Array(buffer: frame!.payload), context.time))
        } else if header.opcode == .pong, !frameProgress.lost {
            // RFC 6455 §5.5.3: a pong echoes the ping's application data; match
            // the earliest unanswered ping from the other side.
            let payload = Array(buffer: frame!.payload)
            if let index = peerPings.firstIndex(where: { $0.payload == payload }) {
                roundTrip = context.time - peerPings[index].time
                peerPings.removeSubrange(0...index)
            }
        }

        if !header.opcode.isControl, message != nil {
            if deflate?.variant == .perFrame && header.rsv1 {
                // Set in consumePayload for frames with a payload; an empty
                // RSV1 frame still ends a compressed block.
                message!.compressed = true
                inflateTail(limit: frameProgress.limit, resetAfter: false, fed: frameProgress.received)
            }
            if header.fin {
                if message!.compressed && deflate?.variant != .perFrame {
                    let reset = deflate?.noContextTakeover(for: direction) ?? false
                    inflateTail(limit: frameProgress.limit, resetAfter: reset, fed: message!.wireLength)
                }
                if message!.opcode == .text, messageProgress.validatesText, messageProgress.utf8.isValid,
                    !messageProgress.utf8.isCompleteAndValid
                {
                    messageProgress.newFindings.append(Finding(.invalidUTF8, "text message ends inside a UTF-8 sequence (RFC 6455 §8.1)"))
                }
            }
            if !messageProgress.newFindings.isEmpty {
                frame!.findings += messageProgress.newFindings
                message!.findings += messageProgress.newFindings
                messageProgress.newFindings = []
            }
            if header.fin {
                stats.messages += 1
                endsMessage = true
            }
        }

        stats.frames += 1
        stats.payloadBytes += header.payloadLength
        findingCount += frame!.findings.count
        var inflated: InflatedMessage?
        if endsMessage && message!.compressed {
            inflated = InflatedMessage(
                opcode: message!.opcode,
                payload: message!.payload,
                length: message!.length,
                error: message!.inflateError
            )
        }
        // Only what differs from how beginFrame left it is written: a field
        // stored just before the event moves out stalls the wide loads that
        // move it (a store cannot forward to a load wider than itself).
        if frame!.time != context.time { frame!.time = context.time }
        if frame!.packet != context.packet { frame!.packet = context.packet }
        if frameProgress.lost || frameProgress.received > UInt64(frame!.payload.readableBytes) { frame!.payloadTruncated = true }
        if compressed { frame!.isCompressed = true }
        if close != nil || roundTrip != nil || inflated != nil {
            frame!.rare = FrameEvent.Rare(close: close, pingRoundTrip: roundTrip, inflated: inflated)
        }
        events.append(.frame(frame.take()!))
        if endsMessage {
            endMessage(context, events: &events)
        }
    }

    /// Stamps the open message with where it ended and moves it into `events`.
    private mutating func endMessage(_ context: FrameContext, events: inout EventQueue) {
        // Unchanged when the message began in this frame (see endFrame).
        if message!.time != context.time { message!.time = context.time }
        if message!.packet != context.packet { message!.packet = context.packet }
        if messageProgress.lost || message!.length > UInt64(message!.payload.readableBytes) { message!.payloadTruncated = true }
        events.append(.message(message.take()!))
    }

    /// Close payload: empty, or a 2-byte code and a UTF-8 reason (RFC 6455 §5.5.1).
    static func parseClose(_ payload: ByteBuffer, complete: Bool, findings: inout [Finding]) -> CloseBody {
        var payload = payload
        let count = payload.readableBytes
        if count == 0 { return CloseBody(code: nil, reason: nil) }
        if count == 1 {
            findings.append(
                Finding(.closePayloadTooShort, "close payload is 1 byte; it must be empty or start with a 2-byte code (RFC 6455 §5.5.1)")
            )
            return CloseBody(code: nil, reason: nil)
        }
        let code = WebSocketCloseCode(code: payload.readInteger(as: UInt16.self)!)
        if !code.isAllowedOnWire {
            findings.append(
                Finding(.invalidCloseCode, "close code \(code.code) (\(code.name)) must not be sent in a Close frame (RFC 6455 §7.4)")
            )
        }
        let reasonBytes = payload.readableBytesView
        var validator = UTF8Validator()
        reasonBytes.withUnsafeBytes { validator.feed($0) }
        if complete && !validator.isCompleteAndValid {
            findings.append(Finding(.invalidCloseReason, "close reason is not valid UTF-8 (RFC 6455 §5.5.1)"))
        }
        return CloseBody(code: code, reason: String(decoding: reasonBytes, as: UTF8.self))
    }

    /// Reports a frame or message the capture ended inside of.
    /// The frame keeps the packet it began in: nothing ended it.
    mutating func flushIncomplete(_ context: FrameContext, events: inout EventQueue, findingCount: inout Int) {
        if frame != nil {
            let missing = frame!.header.payloadLength - frameProgress.received
            frame!.findings.append(Finding(.truncatedFrame, "the connection ends \(missing) bytes before the end of this frame"))
            frame!.time = context.time
            frame!.payloadTruncated = true
            findingCount += frame!.findings.count
            stats.frames += 1
            events.append(.frame(frame.take()!))
        }
        if message != nil {
            messageProgress.lost = true
            message!.findings.append(Finding(.truncatedFrame, "the connection ends before the end of this message"))
            findingCount += 1
            endMessage(context, events: &events)
        }
    }

    mutating func consumePayload(_ piece: ByteBuffer, limit: Int, deflate: DeflateParameters?) {
        guard frame != nil else { return }
        frameProgress.received += UInt64(piece.readableBytes)
        let kept = frame!.payload.readableBytes
        if kept == 0 && piece.readableBytes <= limit {
            frame!.payload = piece
        } else if kept < limit {
            var piece = piece
            if var part = piece.readSlice(length: min(limit - kept, piece.readableBytes)) {
                frame!.payload.writeBuffer(&part)
            }
        }
        feedMessage(piece, limit: limit, deflate: deflate)
    }

    /// Adds the next piece of the current frame's payload to the open
    /// message, unless the frame is a control frame.
    mutating func feedMessage(_ piece: consuming ByteBuffer, limit: Int, deflate: DeflateParameters?) {
        let header = frame!.header
        guard !header.opcode.isControl, message != nil else { return }
        message!.wireLength += UInt64(piece.readableBytes)
        // permessage-deflate compresses whole messages; x-webkit-deflate-frame
        // each frame that has RSV1, so a message can mix both kinds.
        let compressedFrame = deflate?.variant == .perFrame ? header.rsv1 : message!.compressed
        if compressedFrame {
            message!.compressed = true
            inflate(piece, limit: limit)
        } else if message!.payload.readableBytes == 0
            && (piece.readableBytes <= limit || frameProgress.received == UInt64(piece.readableBytes))
        {
            // Uncompressed and the first bytes: share the frame's buffer, or
            // when the piece is over the limit, the frame's copy of its first
            // bytes (its first piece: nothing else is in that copy). A shared
            // buffer is also base64-encoded once for the log.
            let opcode = message!.opcode
            piece.withUnsafeReadableBytes { messageProgress.validate($0, opcode: opcode) }
            message!.length += UInt64(piece.readableBytes)
            message!.payload = piece.readableBytes <= limit ? piece : frame!.payload
        } else {
            piece.withUnsafeReadableBytes { keep($0, limit: limit) }
        }
    }

    /// Adds the next (unmasked, inflated) bytes to the open message, keeping
    /// up to `limit` of them.
    mutating func keep(_ bytes: UnsafeRawBufferPointer, limit: Int) {
        message!.length += UInt64(bytes.count)
        let room = limit - message!.payload.readableBytes
        if room > 0 {
            message!.payload.writeBytes(UnsafeRawBufferPointer(rebasing: bytes.prefix(room)))
        }
        messageProgress.validate(bytes, opcode: message!.opcode)
    }

    /// Inflates the next compressed bytes of the open message into it.
    mutating func inflate(_ bytes: ByteBuffer, limit: Int) {
        guard message!.inflateError == nil else { return }
        if let reason = inflateUnusable {
            message!.inflateError = reason
            messageProgress.newFindings.append(Finding(.cannotInflate, "message not inflated: \(reason)"))
            return
        }
        guard let inflater else { return }
        do {
            try inflater.inflate(bytes) { keep($0, limit: limit) }
        } catch {
            let description = (error as? Inflater.Error)?.description ?? "\(error)"
            message!.inflateError = description
            if inflaterGuessed {
                messageProgress.newFindings.append(
                    Finding(
                        .cannotInflate,
                        "message not inflated: the capture began after the handshake, so the compression parameters and the context of earlier messages are unknown (zlib: \(description))"
                    )
                )
            } else {
                messageProgress.newFindings.append(Finding(.inflateError, "inflating the message failed: \(description) (RFC 7692 §7.2.2)"))
            }
            inflateUnusable = "an earlier message failed to inflate, so the shared compression context is lost"
        }
    }

    /// Ends a compressed block by feeding the tail that senders strip
    /// (RFC 7692 §7.2.2) — unless nothing was fed: an empty payload carries no
    /// block, and a bare tail would leave zlib waiting inside a stored block.
    mutating func inflateTail(limit: Int, resetAfter: Bool, fed: UInt64) {
        if message!.inflateError == nil, !messageProgress.lost, fed > 0 {
            var tail = ByteBuffer()
            tail.writeBytes(Inflater.messageTail)
            inflate(tail, limit: limit)
        }
        if resetAfter {
            // No context takeover: the next message starts afresh, so losses
            // before it no longer matter (RFC 7692 §7.1.1).
            inflater?.reset()
            inflateUnusable = nil
        }
    }

    /// Bytes went missing; the current frame, its message and (with context
    /// takeover) the inflate context are incomplete from here on.
    mutating func markLoss(outcome: FrameDecoder.GapOutcome, deflate: DeflateParameters?) {
        frameProgress.lost = true
        if message != nil {
            messageProgress.lost = true
            messageProgress.validatesText = false
            if message!.compressed && message!.inflateError == nil {
                message!.inflateError = "bytes of this message are missing from the capture"
                messageProgress.newFindings.append(Finding(.cannotInflate, "message not inflated: bytes are missing from the capture"))
            }
            if message!.compressed && !(deflate?.noContextTakeover(for: direction) ?? false) {
                inflateUnusable = "bytes were missing earlier in this direction, so the shared compression context is lost"
            }
        }
        if outcome == .resynchronizing {
            frame = nil
            message = nil
        }
    }
}

/// What the per-direction decoding needs to know about its connection.
struct FrameContext {
    var connection: Int
    var time: Timestamp
    var packet: Int?
    var deflate: DeflateParameters?
    var deflateGuessed: Bool
    var unknownExtensions: Bool
    var midStream: Bool
    var limit: Int
    var binaryLimit: Int
}
