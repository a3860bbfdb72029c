import NIOCore
import Testing
import WebSocketWire

/// One decoded frame with its whole payload, for comparing against vectors.
struct DecodedFrame: Equatable {
    var header: FrameHeader
    var payload: [UInt8]
}

/// Every way a test feeds bytes: whole, split at each boundary, one at a time.
enum Feeding {
    static func chunkings(_ bytes: [UInt8]) -> [[[UInt8]]] {
        var result: [[[UInt8]]] = [[bytes]]
        if bytes.count > 1 {
            for split in 1..<bytes.count {
                result.append([Array(bytes[..<split]), Array(bytes[split...])])
            }
            result.append(bytes.map { [$0] })
        }
        return result
    }
}

/// Decodes piece by piece and, checking that it agrees, with whole frames
/// (``FrameDecoder/yieldsWholeFrames``) as the observer does.
func decodeFrames(_ chunks: [[UInt8]], senderMasks: Bool? = nil) -> [DecodedFrame] {
    let frames = decodeFrames(chunks, senderMasks: senderMasks, wholeFrames: false)
    #expect(decodeFrames(chunks, senderMasks: senderMasks, wholeFrames: true) == frames)
    return frames
}

func decodeFrames(_ chunks: [[UInt8]], senderMasks: Bool?, wholeFrames: Bool) -> [DecodedFrame] {
    var decoder = FrameDecoder(senderMasks: senderMasks)
    decoder.yieldsWholeFrames = wholeFrames
    var frames: [DecodedFrame] = []
    var current: DecodedFrame?
    for chunk in chunks {
        decoder.append(ByteBuffer(bytes: chunk))
        while let output = decoder.next() {
            switch output {
            case .header(let header): current = DecodedFrame(header: header, payload: [])
            case .payload(let piece): current?.payload += Array(buffer: piece)
            case .end:
                frames.append(current!)
                current = nil
            case .frame(let header, let payload): frames.append(DecodedFrame(header: header, payload: Array(buffer: payload)))
            case .skipped, .payloadLoss: break
            }
        }
    }
    return frames
}

/// Builds frame bytes: header fields as given, payload masked when a key is set.
func frameBytes(
    fin: Bool = true,
    rsv1: Bool = false,
    opcode: WebSocketOpcode,
    key: MaskingKey? = nil,
    payload: [UInt8]
) -> [UInt8] {
    let header = FrameHeader(fin: fin, rsv1: rsv1, opcode: opcode, maskingKey: key, payloadLength: UInt64(payload.count))
    var body = payload
    if let key {
        body.withUnsafeMutableBytes { key.apply(to: $0, offset: 0) }
    }
    return header.bytes + body
}

/// Feeds a scripted connection through an observer and collects its events.
struct ObserverHarness {
    var observer: ConnectionObserver
    var events: [InspectorEvent] = []
    var clock: Int64 = 1_700_000_000_000_000_000

    init(startsAtBeginning: Bool = true, configuration: ObserverConfiguration = ObserverConfiguration()) {
        observer = ConnectionObserver(
            id: 1,
            endpoints: ConnectionEndpoints(client: "127.0.0.1:50000", server: "127.0.0.1:8080"),
            startsAtBeginning: startsAtBeginning,
            configuration: configuration
        )
    }

    /// Sends `bytes` in pieces of `size` (the last one shorter).
    mutating func send(_ bytes: [UInt8], _ direction: Direction, inPiecesOf size: Int) {
        var offset = 0
        while offset < bytes.count {
            send(Array(bytes[offset..<min(bytes.count, offset + size)]), direction)
            offset += size
        }
    }

    mutating func send(_ bytes: [UInt8], _ direction: Direction, afterMilliseconds: Int64 = 1) {
        clock += afterMilliseconds * 1_000_000
        observer.receive(ByteBuffer(bytes: bytes), from: direction, at: Timestamp(nanoseconds: clock))
        drain()
    }

    mutating func send(_ text: String, _ direction: Direction) {
        send(Array(text.utf8), direction)
    }

    mutating func gap(_ count: UInt64, _ direction: Direction) {
        observer.receiveGap(count, from: direction, at: Timestamp(nanoseconds: clock))
        drain()
    }

    mutating func finish() {
        observer.finish(.tcpFin, at: Timestamp(nanoseconds: clock))
        drain()
    }

    private mutating func drain() {
        while let event = observer.nextEvent() { events.append(event) }
    }

    var frames: [FrameEvent] {
        events.compactMap { if case .frame(let frame) = $0 { return frame } else { return nil } }
    }

    var messages: [MessageEvent] {
        events.compactMap { if case .message(let message) = $0 { return message } else { return nil } }
    }

    var opened: ConnectionOpened? {
        events.lazy.compactMap { if case .connectionOpened(let opened) = $0 { return opened } else { return nil } }.first
    }

    var allFindingKinds: [Finding.Kind] {
        events.flatMap { event -> [Finding.Kind] in
            switch event {
            case .frame(let frame): return frame.findings.map(\.kind)
            case .connectionOpened(let opened): return opened.findings.map(\.kind)
            case .finding(let finding): return [finding.finding.kind]
            default: return []
            }
        }
    }

    /// The opening handshake from RFC 6455 §1.2, optionally with extensions.
    mutating func handshake(extensions: String? = nil) {
        var request = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        request += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n"
        request += "Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n"
        if extensions != nil { request += "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" }
        request += "\r\n"
        var response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        response += "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n"
        if let extensions { response += "Sec-WebSocket-Extensions: \(extensions)\r\n" }
        response += "\r\n"
        send(request, .clientToServer)
        send(response, .serverToClient)
    }
}

let key = MaskingKey(0x37, 0xFA, 0x21, 0x3D)
