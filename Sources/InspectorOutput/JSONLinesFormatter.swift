import NIOCore
import WebSocketWire

/// Renders events as JSON Lines: one object per line, the schema documented
/// in the README. The proxy's log uses the same schema.
public struct JSONLinesFormatter {
    public init() {}

    public func append(_ event: InspectorEvent, to json: inout JSONWriter) {
        json.beginObject()
        switch event {
        case .connectionOpened(let opened):
            header("connection-open", opened.connection, opened.time, &json)
            json.field("client", opened.endpoints.client)
            json.field("server", opened.endpoints.server)
            json.field("origin", opened.origin.rawValue)
            if let request = opened.request {
                json.beginObject("request")
                json.field("method", request.method)
                json.field("path", request.target)
                json.field("host", request.host)
                json.field("origin", request.origin)
                json.field("userAgent", request.userAgent)
                json.field("key", request.key)
                json.field("version", request.version)
                strings("protocols", request.protocols, &json)
                strings("extensions", request.extensions.map(\.description), &json)
                json.endObject()
            } else {
                json.nullField("request")
            }
            if let response = opened.response {
                json.beginObject("response")
                json.field("status", response.status)
                json.field("reason", response.reason)
                json.field("accept", response.accept)
                json.field("acceptExpected", opened.expectedAccept)
                if let valid = opened.acceptIsValid { json.field("acceptValid", valid) } else { json.nullField("acceptValid") }
                json.field("protocol", response.selectedProtocol)
                strings("extensions", response.extensions.map(\.description), &json)
                json.endObject()
            } else {
                json.nullField("response")
            }
            if let deflate = opened.deflate {
                json.beginObject("compression")
                json.field("extension", deflate.variant.rawValue)
                json.field("serverNoContextTakeover", deflate.serverNoContextTakeover)
                json.field("clientNoContextTakeover", deflate.clientNoContextTakeover)
                json.field("serverMaxWindowBits", deflate.serverMaxWindowBits)
                json.field("clientMaxWindowBits", deflate.clientMaxWindowBits)
                json.endObject()
            } else {
                json.nullField("compression")
            }
            findings(opened.findings, &json)
        case .handshakeRejected(let rejected):
            header("handshake-rejected", rejected.connection, rejected.time, &json)
            json.field("client", rejected.endpoints.client)
            json.field("server", rejected.endpoints.server)
            json.field("method", rejected.request?.method)
            json.field("path", rejected.request?.target)
            json.field("status", rejected.response.status)
            json.field("reason", rejected.response.reason)
            strings("problems", rejected.problems, &json)
        case .frame(let frame):
            header("frame", frame.connection, frame.time, &json)
            json.field("packet", frame.packet)
            json.field("direction", literal: frame.direction.literalName)
            let h = frame.header
            if let flags = Self.flagFields(h) {
                json.fields(flags)
            } else {
                json.field("fin", h.fin)
                json.field("rsv1", h.rsv1)
                json.field("rsv2", h.rsv2)
                json.field("rsv3", h.rsv3)
            }
            json.field("opcode", h.opcode.rawValue)
            json.field("opcodeName", h.opcode.name)
            json.field("masked", h.isMasked)
            json.field("maskingKey", maskingKey: h.maskingKey)
            json.field("payloadLength", h.payloadLength)
            json.field("lengthEncoding", h.lengthEncoding.name)
            json.field("payloadBase64", base64: frame.payload)
            if !frame.payloadTruncated && !frame.isCompressed {
                json.fields(#""payloadTruncated":false,"compressed":false"#)
            } else {
                json.field("payloadTruncated", frame.payloadTruncated)
                json.field("compressed", frame.isCompressed)
            }
            if let close = frame.close {
                json.field("closeCode", close.code?.code)
                json.field("closeCodeName", close.code?.name)
                json.field("closeReason", close.reason)
            }
            if let rtt = frame.pingRoundTrip {
                json.field("pingRoundTripMs", fixed: rtt, scale: 1_000_000, decimals: 3)
            }
            findings(frame.findings, &json)
        case .message(let message):
            header("message", message.connection, message.time, &json)
            json.field("packet", message.packet)
            json.field("direction", literal: message.direction.literalName)
            json.field("opcode", message.opcode.rawValue)
            json.field("opcodeName", message.opcode.name)
            json.field("frames", message.frameCount)
            json.field("compressed", message.compressed)
            json.field("wireLength", message.wireLength)
            json.field("length", message.length)
            json.field("payloadBase64", base64: message.payload)
            json.field("payloadTruncated", message.payloadTruncated)
            if message.opcode == .text && message.inflateError == nil && !message.payloadTruncated {
                json.field("text", utf8: message.payload)
            }
            json.field("inflateError", message.inflateError)
            findings(message.findings, &json)
        case .finding(let finding):
            header("finding", finding.connection, finding.time, &json)
            json.field("direction", finding.direction?.name)
            json.field("kind", finding.finding.kind.rawValue)
            json.field("message", finding.finding.message)
        case .gap(let gap):
            header("gap", gap.connection, gap.time, &json)
            json.field("direction", literal: gap.direction.literalName)
            json.field("bytes", gap.byteCount)
            json.field("cause", gap.cause.rawValue)
            json.field("framing", gapOutcomeName(gap.outcome))
        case .fault(let fault):
            header("fault", fault.connection, fault.time, &json)
            json.field("rule", fault.rule)
            json.field("action", fault.action)
            json.field("direction", fault.direction?.name)
            json.field("opcode", fault.opcode?.name)
            json.field("length", fault.length)
            json.field("message", fault.message)
            json.field("detail", fault.detail)
        case .connectionClosed(let closed):
            header("connection-close", closed.connection, closed.time, &json)
            json.field("client", closed.endpoints.client)
            json.field("server", closed.endpoints.server)
            json.field("reason", closed.reason.rawValue)
            json.field("durationSeconds", fixed: closed.time - closed.opened, scale: 1_000_000_000, decimals: 6)
            statistics("clientToServer", closed.clientToServer, &json)
            statistics("serverToClient", closed.serverToClient, &json)
            json.field("findings", closed.findingCount)
        }
        json.endObject()
        json.newline()
    }

    public func append(_ summary: SessionSummary, to json: inout JSONWriter) {
        json.beginObject()
        json.field("type", literal: "summary")
        json.field("packets", summary.packets)
        json.field("bytes", summary.bytes)
        json.field("tcpConnections", summary.tcpConnections)
        json.field("webSocketConnections", summary.webSocketConnections)
        json.field("rejectedHandshakes", summary.rejectedHandshakes)
        json.field("frames", summary.frames)
        json.field("messages", summary.messages)
        json.field("findings", summary.findings)
        json.field("gaps", summary.gaps)
        json.field("lostBytes", summary.lostBytes)
        json.field("truncatedPackets", summary.truncatedPackets)
        json.field("faults", summary.faults)
        json.beginObject("skippedPackets")
        for (reason, count) in summary.skipped.sorted(by: { $0.key < $1.key }) {
            json.field(reason, count: count)
        }
        json.endObject()
        json.field("stoppedEarly", summary.stoppedEarly)
        json.endObject()
        json.newline()
    }

    /// The four flag fields of the common headers as one fragment (they
    /// showed in profiles as four calls per frame); `nil` for the rest.
    private static func flagFields(_ header: FrameHeader) -> StaticString? {
        guard !header.rsv2 && !header.rsv3 else { return nil }
        switch (header.fin, header.rsv1) {
        case (true, false): return #""fin":true,"rsv1":false,"rsv2":false,"rsv3":false"#
        case (false, false): return #""fin":false,"rsv1":false,"rsv2":false,"rsv3":false"#
        case (true, true): return #""fin":true,"rsv1":true,"rsv2":false,"rsv3":false"#
        case (false, true): return #""fin":false,"rsv1":true,"rsv2":false,"rsv3":false"#
        }
    }

    private func header(_ type: StaticString, _ connection: Int, _ time: Timestamp, _ json: inout JSONWriter) {
        json.field("type", literal: type)
        json.field("time", fixed: time.nanoseconds, scale: 1_000_000_000, decimals: 6)
        json.field("connection", connection)
    }

    private func strings(_ key: StaticString, _ values: [String], _ json: inout JSONWriter) {
        json.beginArray(key)
        for value in values { json.element(value) }
        json.endArray()
    }

    private func findings(_ findings: [Finding], _ json: inout JSONWriter) {
        json.beginArray("findings")
        for finding in findings {
            json.beginObject()
            json.field("kind", finding.kind.rawValue)
            json.field("message", finding.message)
            json.endObject()
        }
        json.endArray()
    }

    private func statistics(_ key: StaticString, _ stats: DirectionStatistics, _ json: inout JSONWriter) {
        json.beginObject(key)
        json.field("frames", stats.frames)
        json.field("messages", stats.messages)
        json.field("payloadBytes", stats.payloadBytes)
        json.field("wireBytes", stats.wireBytes)
        json.field("closeCode", stats.close?.code?.code)
        json.field("closeReason", stats.close?.reason)
        json.endObject()
    }
}

func gapOutcomeName(_ outcome: FrameDecoder.GapOutcome) -> String {
    switch outcome {
    case .insidePayload: return "inside-payload"
    case .atBoundary: return "at-boundary"
    case .resynchronizing: return "resynchronizing"
    }
}
