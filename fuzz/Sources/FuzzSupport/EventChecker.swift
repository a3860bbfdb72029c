import NIOCore
import WebSocketWire

/// Checks what must hold of every event stream an observer (or a capture
/// decoder, which is many observers) produces, whatever the input bytes:
/// per-event consistency of frames and messages, and per-connection order and
/// bookkeeping against the closing statistics.
public struct EventChecker {
    /// The observer's `maximumRetainedPayload`.
    public var retainedLimit: Int

    struct Connection {
        var opened = false
        var closed = false
        var frames: [Direction: Int] = [:]
        var completedMessages: [Direction: Int] = [:]
        var payloadBytes: [Direction: UInt64] = [:]
        var findings = 0
        var flushedMessages = 0
    }

    var connections: [Int: Connection] = [:]
    public private(set) var eventCount = 0
    public private(set) var frameCount = 0
    public private(set) var messageCount = 0
    public private(set) var gapCount = 0
    public private(set) var lostBytes: UInt64 = 0
    public private(set) var rejectedHandshakes = 0

    public init(retainedLimit: Int) {
        self.retainedLimit = retainedLimit
    }

    public var openedConnections: Int { connections.values.filter(\.opened).count }
    public var closedConnections: Int { connections.values.filter(\.closed).count }
    public func isOpened(_ connection: Int) -> Bool { connections[connection]?.opened ?? false }
    public func isClosed(_ connection: Int) -> Bool { connections[connection]?.closed ?? false }

    public mutating func observe(_ event: InspectorEvent) {
        eventCount += 1
        var connection = connections[event.connection, default: Connection()]
        check(!connection.closed, "event after connectionClosed: \(event)")
        switch event {
        case .connectionOpened(let opened):
            check(!connection.opened, "connection \(opened.connection) opened twice")
            connection.opened = true
            connection.findings += opened.findings.count
            if opened.origin == .midStream {
                check(opened.request == nil && opened.response == nil, "mid-stream opening carries a handshake")
            }
        case .handshakeRejected(let rejected):
            check(!connection.opened, "handshake rejected after the connection opened")
            check(!rejected.problems.isEmpty, "handshake rejected without a problem")
            rejectedHandshakes += 1
        case .frame(let frame):
            check(connection.opened, "frame before connectionOpened")
            checkFrame(frame)
            frameCount += 1
            connection.frames[frame.direction, default: 0] += 1
            connection.findings += frame.findings.count
            if !frame.findings.contains(where: { $0.kind == .truncatedFrame }) {
                connection.payloadBytes[frame.direction, default: 0] &+= frame.header.payloadLength
            }
        case .message(let message):
            check(connection.opened, "message before connectionOpened")
            checkMessage(message)
            messageCount += 1
            if message.findings.contains(where: { $0.kind == .truncatedFrame }) {
                connection.flushedMessages += 1
            } else {
                connection.completedMessages[message.direction, default: 0] += 1
            }
        case .finding(let finding):
            check(connection.opened, "finding event before connectionOpened")
            connection.findings += 1
            if finding.finding.kind == .resynchronized {
                check(finding.finding.message.hasPrefix("skipped "), "odd resynchronisation finding")
            }
        case .gap(let gap):
            check(connection.opened, "gap event before connectionOpened")
            check(gap.byteCount > 0, "empty gap event")
            gapCount += 1
            lostBytes &+= gap.byteCount
        case .fault(let fault):
            // Only the proxy's fault engine logs these; an observer never does.
            check(false, "an observer produced a fault event: \(fault)")
        case .connectionClosed(let closed):
            check(connection.opened, "connectionClosed without connectionOpened")
            connection.closed = true
            for (direction, stats) in [(Direction.clientToServer, closed.clientToServer), (.serverToClient, closed.serverToClient)] {
                check(
                    stats.frames == connection.frames[direction, default: 0],
                    "\(direction.name): statistics count \(stats.frames) frames, events \(connection.frames[direction, default: 0])"
                )
                check(
                    stats.messages == connection.completedMessages[direction, default: 0],
                    "\(direction.name): statistics count \(stats.messages) messages, events \(connection.completedMessages[direction, default: 0])"
                )
                check(
                    stats.payloadBytes == connection.payloadBytes[direction, default: 0],
                    "\(direction.name): statistics count \(stats.payloadBytes) payload bytes, frames \(connection.payloadBytes[direction, default: 0])"
                )
            }
            // Each direction may flush one unfinished message, counted once more.
            check(
                closed.findingCount == connection.findings + connection.flushedMessages,
                "findingCount \(closed.findingCount), events carry \(connection.findings) + \(connection.flushedMessages) flushed messages"
            )
        }
        connections[event.connection] = connection
    }

    func checkFrame(_ frame: FrameEvent) {
        let header = frame.header
        let kept = frame.payload.readableBytes
        check(UInt64(kept) <= header.payloadLength, "frame payload \(kept) bytes > header length \(header.payloadLength)")
        check(kept <= max(retainedLimit, 0), "frame payload \(kept) bytes > retention limit \(retainedLimit)")
        if !frame.payloadTruncated {
            check(UInt64(kept) == header.payloadLength, "untruncated frame holds \(kept) of \(header.payloadLength) bytes")
        }
        let kinds = Set(frame.findings.map(\.kind))
        for finding in header.intrinsicFindings {
            check(kinds.contains(finding.kind), "frame lacks intrinsic finding \(finding.kind)")
        }
        if frame.direction == .clientToServer && !header.isMasked {
            check(kinds.contains(.unmaskedClientFrame), "unmasked client frame not reported")
        }
        if frame.direction == .serverToClient && header.isMasked {
            check(kinds.contains(.maskedServerFrame), "masked server frame not reported")
        }
        if frame.close != nil { check(header.opcode == .close, "close body on a \(header.opcode) frame") }
        if frame.pingRoundTrip != nil { check(header.opcode == .pong, "round trip on a \(header.opcode) frame") }
        if frame.isCompressed { check(!header.opcode.isControl, "compressed control frame") }
        if header.opcode == .close && !frame.payloadTruncated {
            check(frame.close != nil, "complete close frame without a close body")
            let bytes = Array(buffer: frame.payload)
            if bytes.count >= 2 {
                let code = UInt16(bytes[0]) << 8 | UInt16(bytes[1])
                check(frame.close?.code?.code == code, "close code \(String(describing: frame.close?.code)) != \(code)")
                let reason = Array(bytes[2...])
                check(
                    kinds.contains(.invalidCloseReason) == !isValidUTF8(reason),
                    "invalid-close-reason finding disagrees with the reason bytes \(reason)"
                )
            } else {
                check(frame.close?.code == nil, "close code from a \(bytes.count)-byte payload")
                check(kinds.contains(.closePayloadTooShort) == (bytes.count == 1), "1-byte close payload finding wrong")
            }
        }
    }

    func checkMessage(_ message: MessageEvent) {
        let kept = message.payload.readableBytes
        check(message.frameCount >= 1, "message with \(message.frameCount) frames")
        check(message.opcode.startsMessage, "message with opcode \(message.opcode)")
        check(UInt64(kept) <= message.length, "message payload \(kept) bytes > length \(message.length)")
        check(kept <= max(retainedLimit, 0), "message payload \(kept) bytes > retention limit \(retainedLimit)")
        if !message.compressed {
            check(
                message.length == message.wireLength,
                "uncompressed message length \(message.length) != wire length \(message.wireLength)"
            )
            check(message.inflateError == nil, "uncompressed message with an inflate error")
        }
        if !message.payloadTruncated {
            check(UInt64(kept) == message.length, "untruncated message holds \(kept) of \(message.length) bytes")
        }
        if message.opcode == .text && !message.payloadTruncated && message.inflateError == nil {
            let reported = message.findings.contains { $0.kind == .invalidUTF8 }
            let valid = isValidUTF8(Array(buffer: message.payload))
            check(reported == !valid, "text message: invalid-utf8 reported \(reported), payload valid \(valid)")
        }
    }
}
