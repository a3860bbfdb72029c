import NIOCore

/// The message being assembled in one direction (RFC 6455 §5.4).
struct MessageState {
    var opcode: WebSocketOpcode
    var compressed: Bool
    var frameCount = 1
    var wireLength: UInt64 = 0
    var length: UInt64 = 0
    var payload: ByteBuffer
    var lost = false
    var utf8 = UTF8Validator()
    var validatesText = true
    var inflateError: String?
    var findings: [Finding] = []
    /// Findings raised while the current frame was decoded, to attach to it.
    var newFindings: [Finding] = []

    init(opcode: WebSocketOpcode, compressed: Bool, payload: ByteBuffer) {
        self.opcode = opcode
        self.compressed = compressed
        self.payload = payload
    }

    mutating func keep(_ bytes: UnsafeRawBufferPointer, limit: Int) {
        length += UInt64(bytes.count)
        let room = limit - payload.readableBytes
        if room > 0 {
            payload.writeBytes(UnsafeRawBufferPointer(rebasing: bytes.prefix(room)))
        }
        validate(bytes)
    }

    /// Checks the next bytes of a text message (RFC 6455 §8.1).
    mutating func validate(_ bytes: UnsafeRawBufferPointer) {
        if opcode == .text && validatesText && utf8.isValid {
            utf8.feed(bytes)
            if !utf8.isValid {
                newFindings.append(Finding(.invalidUTF8, "text message is not valid UTF-8 at byte \(utf8.errorOffset!) (RFC 6455 §8.1)"))
            }
        }
    }

    /// Consuming, and boxed here: the buffers move into the event's box
    /// instead of being copied there (and the copies released).
    consuming func event(connection: Int, time: Timestamp, packet: Int?, direction: Direction) -> InspectorEvent {
        .message(MessageEvent(
            connection: connection, time: time, packet: packet, direction: direction, opcode: opcode,
            frameCount: frameCount, compressed: compressed, wireLength: wireLength, length: length,
            payload: payload, payloadTruncated: lost || length > UInt64(payload.readableBytes),
            inflateError: inflateError, findings: findings
        ))
    }
}

/// The frame being decoded in one direction.
struct FrameState {
    var header: FrameHeader
    var findings: [Finding]
    var packet: Int?
    var payload: ByteBuffer
    var received: UInt64 = 0
    var lost = false

    /// Consuming, and boxed here: the payload and findings move into the
    /// event's box.
    consuming func event(
        connection: Int,
        time: Timestamp,
        packet: Int?,
        direction: Direction,
        isCompressed: Bool,
        close: CloseBody?,
        pingRoundTrip: Int64?,
        inflated: InflatedMessage?
    ) -> InspectorEvent {
        .frame(
            FrameEvent(
                connection: connection, time: time, packet: packet, direction: direction, header: header,
                payload: payload, payloadTruncated: lost || received > UInt64(payload.readableBytes),
                isCompressed: isCompressed, close: close, pingRoundTrip: pingRoundTrip, findings: findings,
                inflated: inflated
            )
        )
    }
}
