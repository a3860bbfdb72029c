import NIOCore
import WebSocketWire

/// Which events a view shows (`--direction`, `--opcode`, `--grep`,
/// `--connection`, `--no-control`). Connection-level events pass whenever
/// their connection does, so every shown frame has its context.
public struct EventFilter {
    public var directions: Set<Direction>?
    public var opcodes: Set<WebSocketOpcode>?
    public var connections: Set<Int>?
    public var hideControlFrames = false
    /// Matched against text payloads (inflated when compressed).
    public var pattern: Regex<AnyRegexOutput>?

    public init() {}

    /// Whether it admits everything: checked first, because looking into an
    /// event copies it (and reference-counts its buffers).
    public var admitsAll: Bool {
        directions == nil && opcodes == nil && connections == nil && !hideControlFrames && pattern == nil
    }

    public func admits(_ event: InspectorEvent) -> Bool {
        if let connections, !connections.contains(event.connection) { return false }
        switch event {
        case .frame(let frame):
            if let directions, !directions.contains(frame.direction) { return false }
            if let opcodes, !opcodes.contains(frame.header.opcode) { return false }
            if hideControlFrames && (frame.header.opcode == .ping || frame.header.opcode == .pong) { return false }
            if let pattern {
                let payload = frame.inflated?.payload ?? frame.payload
                let isText = frame.header.opcode == .text || frame.header.opcode == .continuation || frame.header.opcode == .close
                return isText && matches(pattern, payload)
            }
            return true
        case .message(let message):
            if let directions, !directions.contains(message.direction) { return false }
            if let opcodes, !opcodes.contains(message.opcode) { return false }
            if let pattern { return message.opcode == .text && matches(pattern, message.payload) }
            return true
        case .gap(let gap):
            if let directions, !directions.contains(gap.direction) { return false }
            return true
        default:
            return true
        }
    }

    private func matches(_ pattern: Regex<AnyRegexOutput>, _ payload: ByteBuffer) -> Bool {
        let text = String(decoding: payload.readableBytesView, as: UTF8.self)
        return (try? pattern.firstMatch(in: text)) != nil
    }
}
