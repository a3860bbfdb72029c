import FaultInjection
import NIOCore
import WebSocketWire

/// Drives a ``FaultSession`` the way the relay does, on a clock the test
/// moves by hand, and collects what each side receives.
struct SessionHarness {
    var session: FaultSession
    var now = Timestamp(nanoseconds: 1_000_000_000)
    var received: [Direction: [UInt8]] = [:]
    var ends: [Direction: [FaultSession.Delivery]] = [:]
    var events: [FaultEvent] = []

    /// Every injected or re-framed client frame is masked with this key, so
    /// expected bytes can be written down.
    static let key = MaskingKey(0x37, 0xFA, 0x21, 0x3D)

    init(rules: [FaultRule], seed: UInt64 = 1, deflate: String? = nil) throws {
        session = FaultSession(connection: 1, target: "/chat", isUpgradeRequest: true, seed: seed) { SessionHarness.key }
        session.update(rules: try RuleBook(rules).snapshot.rules, at: now)
        var response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        if let deflate { response += "Sec-WebSocket-Extensions: \(deflate)\r\n" }
        response += "\r\n"
        feed(Array(response.utf8), from: .serverToClient)
        received[.serverToClient] = nil
    }

    /// Feeds bytes whole, and pumps like the relay does.
    mutating func feed(_ bytes: [UInt8], from direction: Direction) {
        session.receive(ByteBuffer(bytes: bytes), from: direction, at: now)
        pump()
    }

    /// Feeds bytes in pieces of `size`.
    mutating func feed(_ bytes: [UInt8], from direction: Direction, inPiecesOf size: Int) {
        var offset = 0
        while offset < bytes.count {
            feed(Array(bytes[offset..<min(bytes.count, offset + size)]), from: direction)
            offset += size
        }
    }

    mutating func advance(milliseconds: Int64) {
        now = Timestamp(nanoseconds: now.nanoseconds + milliseconds * 1_000_000)
        pump()
    }

    mutating func pump() {
        session.advance(to: now)
        for direction in Direction.allCases {
            while let delivery = session.nextDelivery(direction, at: now) {
                if case .bytes(let bytes) = delivery {
                    received[direction, default: []] += Array(bytes.readableBytesView)
                } else if case .log(let event) = delivery {
                    events.append(event)
                } else {
                    ends[direction, default: []].append(delivery)
                }
            }
        }
        while let event = session.nextEvent() { events.append(event) }
    }

    /// Takes what a side has received so far.
    mutating func take(_ direction: Direction) -> [UInt8] {
        defer { received[direction] = nil }
        return received[direction] ?? []
    }
}

/// Frames written out by hand for the tests (RFC 6455 §5.2).
enum Wire {
    static func frame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, rsv1: Bool = false, mask: MaskingKey? = nil) -> [UInt8] {
        var out: [UInt8] = [(fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode]
        let maskBit: UInt8 = mask == nil ? 0 : 0x80
        if payload.count < 126 {
            out.append(maskBit | UInt8(payload.count))
        } else {
            out += [maskBit | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        }
        var body = payload
        if let mask {
            out += (0..<4).map { mask[$0] }
            for index in body.indices { body[index] ^= mask[index % 4] }
        }
        return out + body
    }

    static func text(_ text: String, fin: Bool = true, mask: MaskingKey? = nil) -> [UInt8] {
        frame(0x1, Array(text.utf8), fin: fin, mask: mask)
    }

    /// Splits a byte stream back into frames: (first byte, unmasked payload).
    static func frames(_ bytes: [UInt8]) -> [(byte0: UInt8, masked: Bool, payload: [UInt8])] {
        var out: [(UInt8, Bool, [UInt8])] = []
        var offset = 0
        while offset < bytes.count {
            let parsed = bytes[offset...].withUnsafeBytes { FrameHeader.parse($0) }
            guard let (header, length) = parsed else { break }
            var payload = Array(bytes[(offset + length)..<(offset + length + Int(header.payloadLength))])
            if let key = header.maskingKey {
                payload.withUnsafeMutableBytes { key.apply(to: $0, offset: 0) }
            }
            out.append((bytes[offset], header.isMasked, payload))
            offset += length + Int(header.payloadLength)
        }
        return out
    }
}
