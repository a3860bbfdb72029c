import InspectorOutput
import NIOCore
import PacketCapture
import WebSocketWire

#if canImport(Glibc)
import Glibc
#endif

/// Runs events through the view's filter and formatter to standard output.
struct EventPrinter {
    let filter: EventFilter
    /// Computed once: most runs filter nothing.
    private let filterAdmitsAll: Bool
    let format: ViewOptions.Format
    let text: TextFormatter
    let json = JSONLinesFormatter()
    let messagesOnly: Bool
    var output: OutputStream
    private var writer = JSONWriter(capacity: OutputStream.blockSize + 64 * 1024)
    var filteredOut = 0

    init(view: ViewOptions, descriptor: Int32 = STDOUT_FILENO) throws {
        output = OutputStream(descriptor: descriptor)
        filter = try view.makeFilter()
        filterAdmitsAll = filter.admitsAll
        format = view.format
        text = TextFormatter(options: view.textOptions())
        messagesOnly = view.messages
    }

    mutating func print(_ event: InspectorEvent) {
        guard filterAdmitsAll || filter.admits(event) else {
            filteredOut += 1
            return
        }
        switch format {
        case .text:
            let line = text.format(event)
            if !line.isEmpty { output.write(line) }
        case .jsonl:
            if messagesOnly, case .frame = event { return }
            json.append(event, to: &writer)
            if writer.count >= OutputStream.blockSize { flush() }
        }
    }

    /// Hands what the JSON writer holds to the output.
    mutating func flush() {
        if writer.count > 0 {
            writer.withUnsafeBytes { output.write($0) }
            writer.clear()
        }
        output.flush()
    }

    mutating func printSummary(_ summary: SessionSummary) {
        switch format {
        case .text:
            output.write(text.format(summary))
        case .jsonl:
            json.append(summary, to: &writer)
        }
        flush()
    }
}

extension SessionSummary {
    init(_ statistics: CaptureStatistics) {
        self.init()
        packets = statistics.packets
        bytes = statistics.bytes
        tcpConnections = statistics.tcpConnections
        webSocketConnections = statistics.webSocketConnections
        rejectedHandshakes = statistics.rejectedHandshakes
        frames = statistics.frames
        messages = statistics.messages
        findings = statistics.findings
        gaps = statistics.gaps
        lostBytes = statistics.lostBytes
        truncatedPackets = statistics.truncatedPackets
        skipped = statistics.skipped
    }
}
