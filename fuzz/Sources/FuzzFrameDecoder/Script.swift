import FuzzSupport
import WebSocketWire

/// What one fuzz input asks for: how the connection starts, the observer's
/// limits, and the bytes of both directions with their split points and gaps.
///
/// Layout (every byte string is a valid script; missing bytes read as 0):
///
/// - byte 0, flags: bits 0–1 start (0, 1: a generated RFC 6455 §1.2 handshake
///   first; 2: bytes from the first byte of the connection, `startsAtBeginning`;
///   3: mid-stream); bit 2 `assumeWebSocket`; bits 3–5 the extension the
///   generated response accepts (``Script/extensionChoices``); bits 6–7 the
///   reason passed to `finish`.
/// - byte 1, limits: bits 0–1 `maximumRetainedPayload` (16 MiB, 0, 1, 5);
///   bits 2–3 `detectionWindow` (16 KiB, 2, 14, 100); bits 4–6 the bare
///   decoders' `resynchronizationWindow` (64 KiB, 1, 2, 3, 8, 16, 64, 1000);
///   bit 7 drain events only at the end instead of after every call.
/// - then records, each starting with a control byte `c`: bit 7 the direction
///   (0 client to server); bit 6 set: a gap of `(c & 0x3F) + 1` bytes, or for
///   0x3C…0x3F a count in the next 1…4 bytes (plus 1); bit 6 clear: data of
///   `(c & 0x3F) + 1` bytes, or for 0x3E the next byte + 1, for 0x3F the next
///   16-bit big-endian value + 1, taken from what follows.
struct Script {
    enum Record {
        case data(Direction, [UInt8])
        case gap(Direction, UInt64)
    }

    enum Start {
        /// A generated, valid opening handshake precedes the records.
        case handshake
        /// The records start at the connection's first byte.
        case fromFirstByte
        /// The capture began somewhere inside the connection.
        case midStream
    }

    /// Sec-WebSocket-Extensions values the generated 101 response may carry.
    static let extensionChoices: [String?] = [
        nil,
        "permessage-deflate",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=9; client_max_window_bits=8",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=99",
        "x-unknown-extension",
        "permessage-deflate; client_max_window_bits, x-unknown-extension",
    ]

    static let retainedChoices = [16 * 1024 * 1024, 0, 1, 5]
    static let detectionChoices = [16 * 1024, 2, 14, 100]
    static let resynchronizationChoices = [64 * 1024, 1, 2, 3, 8, 16, 64, 1000]
    static let finishChoices: [ConnectionClosed.Reason] = [.tcpFin, .tcpReset, .endOfCapture, .closeHandshake]

    var start: Start
    var extensionIndex: Int
    var configuration = ObserverConfiguration()
    var resynchronizationWindow: Int
    var finishReason: ConnectionClosed.Reason
    var drainLazily: Bool
    var records: [Record] = []

    init?(_ bytes: UnsafeRawBufferPointer) {
        var reader = FuzzReader(bytes)
        guard let flags = reader.byte() else { return nil }
        let limits = reader.byte() ?? 0
        switch flags & 3 {
        case 0, 1: start = .handshake
        case 2: start = .fromFirstByte
        default: start = .midStream
        }
        configuration.assumeWebSocket = flags & 4 != 0
        extensionIndex = Int(flags >> 3 & 7)
        finishReason = Script.finishChoices[Int(flags >> 6)]
        configuration.maximumRetainedPayload = Script.retainedChoices[Int(limits & 3)]
        configuration.detectionWindow = Script.detectionChoices[Int(limits >> 2 & 3)]
        resynchronizationWindow = Script.resynchronizationChoices[Int(limits >> 4 & 7)]
        drainLazily = limits & 0x80 != 0

        while let control = reader.byte() {
            let direction: Direction = control & 0x80 == 0 ? .clientToServer : .serverToClient
            let low = Int(control & 0x3F)
            if control & 0x40 != 0 {
                let count = low < 0x3C ? UInt64(low) : reader.integer(width: low - 0x3B)
                records.append(.gap(direction, count + 1))
            } else {
                let length: Int
                switch low {
                case 0x3E: length = Int(reader.byte() ?? 0) + 1
                case 0x3F: length = Int(reader.integer(width: 2)) + 1
                default: length = low + 1
                }
                let bytes = reader.take(length)
                if !bytes.isEmpty { records.append(.data(direction, bytes)) }
            }
        }
    }

    var hasGaps: Bool {
        records.contains { if case .gap = $0 { return true } else { return false } }
    }

    var dataByteCount: Int {
        records.reduce(0) { total, record in
            if case .data(_, let bytes) = record { return total + bytes.count }
            return total
        }
    }

    var extensions: String? { Script.extensionChoices[extensionIndex] }

    /// The records an observer is fed: the generated handshake first, if any.
    var observerRecords: [Record] {
        guard start == .handshake else { return records }
        var request = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        request += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        request += "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-webkit-deflate-frame\r\n\r\n"
        var response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        response += "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        if let extensions { response += "Sec-WebSocket-Extensions: \(extensions)\r\n" }
        response += "\r\n"
        return [.data(.clientToServer, Array(request.utf8)), .data(.serverToClient, Array(response.utf8))] + records
    }

    /// Whether framing starts at a known byte in both directions, so that
    /// decoding cannot depend on where the stream was split.
    var framingIsSynchronized: Bool {
        if hasGaps { return false }
        if configuration.assumeWebSocket { return start != .midStream }
        return start == .handshake
    }
}
