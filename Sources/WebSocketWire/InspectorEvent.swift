import NIOCore

/// Everything the observer reports about a connection, in the order it happened.
/// The terminal view, JSON Lines and (later) the proxy log all render these.
///
/// Indirect: events pass through a few queues on their way to a view, and a
/// boxed event moves with one reference count instead of copying every field.
public indirect enum InspectorEvent: Sendable {
    case connectionOpened(ConnectionOpened)
    case handshakeRejected(HandshakeRejected)
    case frame(FrameEvent)
    case message(MessageEvent)
    case finding(FindingEvent)
    case gap(GapEvent)
    case fault(FaultEvent)
    case connectionClosed(ConnectionClosed)

    public var connection: Int {
        switch self {
        case .connectionOpened(let e): return e.connection
        case .handshakeRejected(let e): return e.connection
        case .frame(let e): return e.connection
        case .message(let e): return e.connection
        case .finding(let e): return e.connection
        case .gap(let e): return e.connection
        case .fault(let e): return e.connection
        case .connectionClosed(let e): return e.connection
        }
    }

    public var time: Timestamp {
        switch self {
        case .connectionOpened(let e): return e.time
        case .handshakeRejected(let e): return e.time
        case .frame(let e): return e.time
        case .message(let e): return e.time
        case .finding(let e): return e.time
        case .gap(let e): return e.time
        case .fault(let e): return e.time
        case .connectionClosed(let e): return e.time
        }
    }
}

/// The two ends of a connection, as printable addresses ("127.0.0.1:8080",
/// "[::1]:8080").
public struct ConnectionEndpoints: Hashable, Sendable {
    public var client: String
    public var server: String

    public init(client: String, server: String) {
        self.client = client
        self.server = server
    }
}

public struct ConnectionOpened: Sendable {
    public enum Origin: String, Sendable {
        /// An HTTP Upgrade handshake was seen.
        case handshake
        /// Framing was recognised without a handshake (capture started late).
        case midStream = "mid-stream"
    }

    public var connection: Int
    public var time: Timestamp
    public var endpoints: ConnectionEndpoints
    public var origin: Origin
    public var request: HandshakeRequest?
    public var response: HandshakeResponse?
    /// The Accept value the request's key calls for; `nil` without a key.
    public var expectedAccept: String?
    public var deflate: DeflateParameters?
    public var findings: [Finding]

    public var acceptIsValid: Bool? {
        guard let expectedAccept, let response else { return nil }
        return response.accept == expectedAccept
    }
}

/// An upgrade attempt that did not open a WebSocket connection: the server
/// refused it, or the exchange was not a valid handshake.
public struct HandshakeRejected: Sendable {
    public var connection: Int
    public var time: Timestamp
    public var endpoints: ConnectionEndpoints
    public var request: HandshakeRequest?
    public var response: HandshakeResponse
    public var problems: [String]
}

public struct CloseBody: Hashable, Sendable {
    public var code: WebSocketCloseCode?
    public var reason: String?

    public init(code: WebSocketCloseCode?, reason: String?) {
        self.code = code
        self.reason = reason
    }
}

public struct FrameEvent: Sendable {
    public var connection: Int
    /// When the frame's last byte was seen.
    public var time: Timestamp
    /// The capture packet holding the frame's last byte, when read from a file.
    public var packet: Int?
    public var direction: Direction
    public var header: FrameHeader
    /// Unmasked payload as on the wire (still compressed when RSV1 says so),
    /// up to the observer's retention limit.
    public var payload: ByteBuffer
    /// Bytes of the payload that were not captured or not kept.
    public var payloadTruncated: Bool
    /// The payload is (part of) a compressed message, so it is not readable as is.
    public var isCompressed = false
    public var findings: [Finding]
    /// What few frames carry, out of line: inline, these fields doubled
    /// the size of every frame event (200 bytes), which is moved a few
    /// times on its way to a view and read by the output thread.
    var rare: Rare? = nil

    /// A close frame's code and reason.
    public var close: CloseBody? {
        get { rare?.close }
        set { rare = Rare(close: newValue, pingRoundTrip: pingRoundTrip, inflated: inflated) }
    }

    /// For a pong that answers an earlier ping: the round trip in nanoseconds.
    public var pingRoundTrip: Int64? {
        get { rare?.pingRoundTrip }
        set { rare = Rare(close: close, pingRoundTrip: newValue, inflated: inflated) }
    }

    /// For a frame that completes a compressed message: the inflated
    /// message, so views can show readable text next to the frame.
    public var inflated: InflatedMessage? {
        get { rare?.inflated }
        set { rare = Rare(close: close, pingRoundTrip: pingRoundTrip, inflated: newValue) }
    }

    /// Immutable, so events stay values: a change makes a new one.
    final class Rare: Sendable {
        let close: CloseBody?
        let pingRoundTrip: Int64?
        let inflated: InflatedMessage?

        init(close: CloseBody?, pingRoundTrip: Int64?, inflated: InflatedMessage?) {
            self.close = close
            self.pingRoundTrip = pingRoundTrip
            self.inflated = inflated
        }
    }
}

extension FrameEvent {
    /// For callers outside this module (set `isCompressed` and `inflated`
    /// afterwards). The decoder uses the memberwise initialiser: it moves the
    /// payload into the event's box, where an explicit initialiser made the
    /// optimiser copy the whole event (four reference counts).
    public init(
        connection: Int,
        time: Timestamp,
        packet: Int?,
        direction: Direction,
        header: FrameHeader,
        payload: ByteBuffer,
        payloadTruncated: Bool,
        close: CloseBody?,
        pingRoundTrip: Int64?,
        findings: [Finding]
    ) {
        self.connection = connection
        self.time = time
        self.packet = packet
        self.direction = direction
        self.header = header
        self.payload = payload
        self.payloadTruncated = payloadTruncated
        self.findings = findings
        if close != nil || pingRoundTrip != nil {
            rare = Rare(close: close, pingRoundTrip: pingRoundTrip, inflated: nil)
        }
    }
}

/// The inflated form of a compressed message, carried by its last frame.
public struct InflatedMessage: Sendable {
    public var opcode: WebSocketOpcode
    /// Up to the retention limit.
    public var payload: ByteBuffer
    public var length: UInt64
    public var error: String?

    public init(opcode: WebSocketOpcode, payload: ByteBuffer, length: UInt64, error: String?) {
        self.opcode = opcode
        self.payload = payload
        self.length = length
        self.error = error
    }
}

public struct MessageEvent: Sendable {
    public var connection: Int
    public var time: Timestamp
    public var packet: Int?
    public var direction: Direction
    public var opcode: WebSocketOpcode
    public var frameCount: Int
    public var compressed: Bool
    /// Payload bytes as they crossed the wire, summed over the frames.
    public var wireLength: UInt64
    /// Length after inflating (equal to `wireLength` when not compressed).
    public var length: UInt64
    /// The assembled (and inflated) payload, up to the retention limit.
    public var payload: ByteBuffer
    public var payloadTruncated: Bool
    /// Why the message could not be inflated, when it could not.
    public var inflateError: String?
    public var findings: [Finding]
}

/// A finding about the connection rather than one frame.
public struct FindingEvent: Sendable {
    public var connection: Int
    public var time: Timestamp
    public var direction: Direction?
    public var finding: Finding
}

/// Bytes of one direction that the capture does not hold.
public struct GapEvent: Sendable {
    public enum Cause: String, Sendable {
        /// TCP sequence numbers skip bytes no packet carried.
        case notCaptured = "not-captured"
        /// Packets were cut by the capture's snapshot length.
        case snaplen
    }

    public var connection: Int
    public var time: Timestamp
    public var direction: Direction
    public var byteCount: UInt64
    public var cause: Cause
    public var outcome: FrameDecoder.GapOutcome
}

public struct DirectionStatistics: Hashable, Sendable {
    public var frames = 0
    public var messages = 0
    public var payloadBytes: UInt64 = 0
    public var wireBytes: UInt64 = 0
    public var close: CloseBody?
    public init() {}
}

public struct ConnectionClosed: Sendable {
    public enum Reason: String, Sendable {
        case closeHandshake = "close-handshake"
        case tcpFin = "tcp-fin"
        case tcpReset = "tcp-reset"
        case endOfCapture = "end-of-capture"
    }

    public var connection: Int
    public var time: Timestamp
    public var endpoints: ConnectionEndpoints
    public var reason: Reason
    public var opened: Timestamp
    public var clientToServer: DirectionStatistics
    public var serverToClient: DirectionStatistics
    public var findingCount: Int
}
