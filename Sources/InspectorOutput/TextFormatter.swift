import NIOCore
import WebSocketWire

#if canImport(Glibc)
import Glibc
#endif

/// The human view: a line per frame (or message), connection lines around
/// them, findings on indented lines under what they concern, and a summary.
public struct TextFormatter {
    public struct Options: Sendable {
        public var color = false
        /// Show assembled messages instead of frames (`--messages`).
        public var messages = false
        /// Pretty-print JSON text payloads (`--pretty`).
        public var prettyJSON = false
        /// Full hex dump of each payload (`-x`).
        public var hexDump = false
        /// Characters of payload shown on a frame's line.
        public var previewLength = 96

        public init() {}
    }

    public var options: Options

    public init(options: Options = Options()) {
        self.options = options
    }

    private enum Style: String {
        case dim = "2"
        case bold = "1"
        case red = "31"
        case green = "32"
        case yellow = "33"
        case blue = "34"
        case magenta = "35"
        case cyan = "36"
    }

    private func paint(_ text: String, _ style: Style) -> String {
        options.color ? "\u{1B}[\(style.rawValue)m\(text)\u{1B}[0m" : text
    }

    /// The lines for one event, or an empty string when this view does not
    /// show that kind of event.
    public func format(_ event: InspectorEvent) -> String {
        switch event {
        case .connectionOpened(let opened):
            return formatOpened(opened)
        case .handshakeRejected(let rejected):
            let request = rejected.request.map { "\($0.method) \($0.target) " } ?? ""
            return "\(clock(rejected.time)) \(connectionTag(rejected.connection)) "
                + paint("upgrade rejected", .red) + " \(rejected.endpoints.client) → \(rejected.endpoints.server) "
                + "\(request)→ \(rejected.response.status) \(rejected.response.reason)\n"
                + rejected.problems.map { "    " + paint("! \($0)", .yellow) + "\n" }.joined()
        case .frame(let frame):
            return options.messages ? "" : formatFrame(frame)
        case .message(let message):
            return options.messages ? formatMessage(message) : ""
        case .finding(let finding):
            let arrow = finding.direction.map { " " + arrowText($0) } ?? ""
            return "\(clock(finding.time)) \(connectionTag(finding.connection))\(arrow) "
                + paint("! \(finding.finding.kind): \(finding.finding.message)", .yellow) + "\n"
        case .gap(let gap):
            let why = gap.cause == .snaplen ? "cut by the snapshot length" : "missing from the capture"
            let framing: String
            switch gap.outcome {
            case .insidePayload: framing = "inside a payload; framing kept"
            case .atBoundary: framing = "at a frame boundary; framing kept"
            case .resynchronizing: framing = "framing lost; searching for the next frame"
            }
            return "\(clock(gap.time)) \(connectionTag(gap.connection)) \(arrowText(gap.direction)) "
                + paint("gap: \(gap.byteCount) bytes \(why) (\(framing))", .yellow) + "\n"
        case .fault(let fault):
            let arrow = fault.direction.map { " " + arrowText($0) } ?? ""
            return "\(clock(fault.time)) \(connectionTag(fault.connection))\(arrow) "
                + paint("fault \(fault.action) [\(fault.rule)]", .red) + " \(fault.detail)\n"
        case .connectionClosed(let closed):
            return formatClosed(closed)
        }
    }

    private func connectionTag(_ id: Int) -> String {
        paint("#\(id)", .bold)
    }

    private func arrowText(_ direction: Direction) -> String {
        direction == .clientToServer ? paint("C→S", .cyan) : paint("S→C", .magenta)
    }

    /// UTC time of day with microseconds: short, and the same on every machine.
    func clock(_ time: Timestamp) -> String {
        var seconds = time_t(time.nanoseconds / 1_000_000_000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let micros = (time.nanoseconds % 1_000_000_000) / 1_000
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let fraction = String(micros)
        return paint(
            "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))."
                + String(repeating: "0", count: 6 - fraction.count) + fraction,
            .dim
        )
    }

    private func formatOpened(_ opened: ConnectionOpened) -> String {
        var line =
            "\(clock(opened.time)) \(connectionTag(opened.connection)) "
            + paint("open", .green) + " \(opened.endpoints.client) → \(opened.endpoints.server)"
        if let request = opened.request {
            line += " \(request.method) \(request.target)"
            if let host = request.host { line += " host=\(host)" }
            if let origin = request.origin { line += " origin=\(origin)" }
        }
        if opened.origin == .midStream {
            line += paint(" (mid-stream: no handshake in the capture)", .dim)
        }
        line += "\n"
        var details: [String] = []
        if let response = opened.response {
            details.append("\(response.status) \(response.reason)")
            if let selected = response.selectedProtocol { details.append("protocol=\(selected)") }
            let extensions = response.extensions.map(\.description).joined(separator: ", ")
            if !extensions.isEmpty { details.append("extensions=\(extensions)") }
            if let valid = opened.acceptIsValid {
                details.append(valid ? "accept ok" : paint("accept MISMATCH", .red))
            }
        }
        if let request = opened.request {
            if !request.protocols.isEmpty { details.append("offered protocols=\(request.protocols.joined(separator: ","))") }
            let offered = request.extensions.map(\.description).joined(separator: ", ")
            if !offered.isEmpty { details.append("offered extensions=\(offered)") }
            if let agent = request.userAgent { details.append("user-agent=\(agent)") }
        }
        if !details.isEmpty {
            line += "    " + paint(details.joined(separator: "  "), .dim) + "\n"
        }
        line += formatFindings(opened.findings)
        return line
    }

    private func formatClosed(_ closed: ConnectionClosed) -> String {
        let seconds = Double(closed.time - closed.opened) / 1e9
        func side(_ label: String, _ stats: DirectionStatistics) -> String {
            var text = "\(label) \(counted(stats.frames, "frame")) \(counted(stats.messages, "msg")) \(stats.payloadBytes) B"
            if let close = stats.close {
                if let code = close.code {
                    text += " close \(code.code) \(code.name)"
                    if let reason = close.reason, !reason.isEmpty { text += " \"\(escape(reason))\"" }
                } else {
                    text += " close (no code)"
                }
            }
            return text
        }
        return "\(clock(closed.time)) \(connectionTag(closed.connection)) " + paint("closed", .green)
            + " after \(String(format3(seconds)))s (\(closed.reason.rawValue)); "
            + side("C→S", closed.clientToServer) + "; " + side("S→C", closed.serverToClient)
            + (closed.findingCount > 0 ? paint("; \(closed.findingCount) findings", .yellow) : "") + "\n"
    }

    private func formatFrame(_ frame: FrameEvent) -> String {
        let h = frame.header
        var flags: [String] = []
        flags.append(h.fin ? "FIN" : paint("fin=0", .yellow))
        if h.rsv1 { flags.append("RSV1") }
        if h.rsv2 { flags.append("RSV2") }
        if h.rsv3 { flags.append("RSV3") }
        if let key = h.maskingKey { flags.append("mask=\(key.hexString)") }
        var line = "\(clock(frame.time)) \(connectionTag(frame.connection)) \(arrowText(frame.direction)) "
        line += paint(h.opcode.name.padding(to: 12), opcodeStyle(h.opcode)) + " "
        line += flags.joined(separator: " ")
        line += " len=\(h.payloadLength)"
        if h.lengthEncoding != .short { line += "(\(h.lengthEncoding.name))" }
        if let message = frame.inflated, message.error == nil {
            line += " inflated=\(message.length)"
        }
        if frame.payloadTruncated { line += paint(" truncated", .yellow) }
        if let close = frame.close {
            if let code = close.code {
                line += " " + paint("\(code.code) \(code.name)", .bold)
                if let reason = close.reason, !reason.isEmpty { line += " \"\(escape(reason))\"" }
            } else {
                line += " (no status code)"
            }
        } else if let rtt = frame.pingRoundTrip {
            line += " rtt=" + paint(format3(Double(rtt) / 1e6) + "ms", .green)
            line += preview(frame.payload, text: false)
        } else if h.opcode == .ping || h.opcode == .pong {
            line += preview(frame.payload, text: false)
        } else if let message = frame.inflated, message.error == nil {
            line += preview(message.payload, text: message.opcode == .text)
        } else if let message = frame.inflated, let error = message.error {
            line += paint(" not inflated: \(error)", .yellow)
        } else if frame.isCompressed {
            line += paint("  (compressed; the message shows when complete)", .dim)
        } else {
            line += preview(frame.payload, text: h.opcode == .text || (h.opcode == .continuation && looksLikeText(frame.payload)))
        }
        line += "\n"
        if options.hexDump { line += hexDump(frame.payload) }
        line += formatFindings(frame.findings)
        return line
    }

    private func formatMessage(_ message: MessageEvent) -> String {
        var line = "\(clock(message.time)) \(connectionTag(message.connection)) \(arrowText(message.direction)) "
        line += paint(message.opcode.name.padding(to: 12), opcodeStyle(message.opcode)) + " "
        line += "frames=\(message.frameCount) len=\(message.length)"
        if message.compressed { line += " compressed=\(message.wireLength)" }
        if message.payloadTruncated { line += paint(" truncated", .yellow) }
        if let error = message.inflateError {
            line += paint(" not inflated: \(error)", .yellow)
        } else {
            line += preview(message.payload, text: message.opcode == .text)
        }
        line += "\n"
        if options.hexDump { line += hexDump(message.payload) }
        line += formatFindings(message.findings)
        return line
    }

    private func formatFindings(_ findings: [Finding]) -> String {
        findings.map { "    " + paint("! \($0.kind): \($0.message)", .yellow) + "\n" }.joined()
    }

    private func opcodeStyle(_ opcode: WebSocketOpcode) -> Style {
        if opcode.isReserved { return .red }
        if opcode == .close { return .red }
        if opcode.isControl { return .blue }
        return .bold
    }

    private func looksLikeText(_ payload: ByteBuffer) -> Bool {
        var validator = UTF8Validator()
        payload.withUnsafeReadableBytes { validator.feed($0) }
        return validator.isValid
    }

    private func preview(_ payload: ByteBuffer, text: Bool) -> String {
        guard payload.readableBytes > 0 else { return "" }
        if text {
            let string = String(decoding: payload.readableBytesView, as: UTF8.self)
            if options.prettyJSON, let pretty = PrettyJSON.format(string) {
                return "\n" + pretty.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n")
            }
            var shown = escape(String(string.prefix(options.previewLength)))
            if string.count > options.previewLength { shown += "…" }
            return "  " + paint("\"" + shown + "\"", .green)
        }
        let count = min(payload.readableBytes, 24)
        let hex = payload.readableBytesView.prefix(count).map { byte -> String in
            let digits = String(byte, radix: 16)
            return digits.count == 1 ? "0" + digits : digits
        }.joined(separator: " ")
        return "  " + paint(hex + (payload.readableBytes > count ? " …" : ""), .dim)
    }

    private func escape(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\"": out += "\\\""
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += "\\x" + (scalar.value < 0x10 ? "0" : "") + String(scalar.value, radix: 16)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }

    private func hexDump(_ payload: ByteBuffer) -> String {
        var out = ""
        let bytes = Array(payload.readableBytesView)
        var offset = 0
        while offset < bytes.count {
            let row = bytes[offset..<min(offset + 16, bytes.count)]
            let offsetText = String(offset, radix: 16)
            var line = "    " + String(repeating: "0", count: max(0, 6 - offsetText.count)) + offsetText + "  "
            for (index, byte) in row.enumerated() {
                let digits = String(byte, radix: 16)
                line += (digits.count == 1 ? "0" : "") + digits + (index == 7 ? "  " : " ")
            }
            line += String(repeating: "   ", count: 16 - row.count) + (row.count <= 8 ? " " : "")
            line += " |" + String(row.map { (0x20..<0x7F).contains($0) ? Character(UnicodeScalar($0)) : "." }) + "|"
            out += paint(line, .dim) + "\n"
            offset += 16
        }
        return out
    }

    public func format(_ summary: SessionSummary) -> String {
        var lines: [String] = []
        var first =
            "summary: " + counted(summary.webSocketConnections, "WebSocket connection") + ", "
            + counted(summary.frames, "frame") + ", " + counted(summary.messages, "message")
        if summary.findings > 0 { first += ", " + paint(counted(summary.findings, "finding"), .yellow) }
        if summary.rejectedHandshakes > 0 { first += ", " + counted(summary.rejectedHandshakes, "rejected upgrade") }
        if let faults = summary.faults { first += ", " + paint(counted(faults, "fault"), .red) }
        lines.append(first)
        if let packets = summary.packets {
            var second =
                "  " + counted(packets, "packet") + ", " + counted(Int(summary.bytes ?? 0), "byte") + ", "
                + counted(summary.tcpConnections ?? 0, "TCP connection")
            if summary.gaps > 0 { second += ", \(summary.gaps) gaps (\(summary.lostBytes) bytes lost)" }
            if summary.truncatedPackets > 0 { second += ", \(summary.truncatedPackets) packets cut by snaplen" }
            lines.append(second)
        }
        if !summary.skipped.isEmpty {
            let parts = summary.skipped.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }
            lines.append("  skipped: " + parts.joined(separator: ", "))
        }
        if let stopped = summary.stoppedEarly {
            lines.append("  " + paint("stopped early: \(stopped)", .red))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

func counted(_ count: Int, _ noun: String) -> String {
    "\(count) \(noun)\(count == 1 ? "" : "s")"
}

func format3(_ value: Double) -> String {
    let scaled = Int64((value * 1000).rounded())
    let whole = scaled / 1000
    let fraction = String(abs(scaled % 1000))
    return "\(whole)." + String(repeating: "0", count: 3 - fraction.count) + fraction
}

extension String {
    func padding(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
