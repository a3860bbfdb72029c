import Dispatch
import InspectorOutput
import Synchronization
import WebSocketWire

/// The proxy's log: event loops hand events over without waiting, a serial
/// queue formats and writes them. When the writer falls behind, new records
/// are dropped (never relayed bytes) and counted, so logging can never slow
/// or stall the relay.
final class ProxyLog: Sendable {
    private struct State {
        var pending: [InspectorEvent] = []
        /// Payload bytes the pending records hold: the queue's real weight.
        var pendingBytes = 0
        var scheduled = false
        var dropped = 0
        var summary = SessionSummary()
    }

    private let state = Mutex(State())
    private let printer: Mutex<EventPrinter>
    private let queue = DispatchQueue(label: "wsinspect.proxy-log")
    private let limit: Int
    private let byteLimit: Int

    /// - Parameters:
    ///   - limit: records that may wait to be written;
    ///   - byteLimit: payload bytes they may hold together (memory stays
    ///     bounded however large the relayed messages are).
    init(printer: sending EventPrinter, countsFaults: Bool = false, limit: Int = 100_000, byteLimit: Int = 32 * 1024 * 1024) {
        self.printer = Mutex(printer)
        if countsFaults { state.withLock { $0.summary.faults = 0 } }
        self.limit = limit
        self.byteLimit = byteLimit
    }

    private static func weight(of event: InspectorEvent) -> Int {
        switch event {
        case .frame(let frame): return frame.payload.readableBytes + (frame.inflated?.payload.readableBytes ?? 0) + 256
        case .message(let message): return message.payload.readableBytes + 256
        default: return 512
        }
    }

    /// Called on event-loop threads.
    func add(_ event: InspectorEvent) {
        let schedule = state.withLock { state -> Bool in
            switch event {
            case .connectionOpened: state.summary.webSocketConnections += 1
            case .handshakeRejected: state.summary.rejectedHandshakes += 1
            case .frame: state.summary.frames += 1
            case .message: state.summary.messages += 1
            case .fault: state.summary.faults = (state.summary.faults ?? 0) + 1
            // The observer's own count covers every finding of the connection.
            case .connectionClosed(let closed): state.summary.findings += closed.findingCount
            default: break
            }
            let weight = ProxyLog.weight(of: event)
            guard state.pending.count < limit, state.pendingBytes + weight <= byteLimit else {
                state.dropped += 1
                return false
            }
            state.pending.append(event)
            state.pendingBytes += weight
            if state.scheduled { return false }
            state.scheduled = true
            return true
        }
        if schedule {
            queue.async { self.drain() }
        }
    }

    private func drain() {
        let events = state.withLock { state -> [InspectorEvent] in
            state.scheduled = false
            let events = state.pending
            state.pending.removeAll(keepingCapacity: true)
            state.pendingBytes = 0
            return events
        }
        printer.withLock { printer in
            for event in events { printer.print(event) }
            printer.flush()
        }
    }

    /// Writes a line (the readiness line) in order with the log.
    func line(_ text: String) {
        queue.async {
            self.printer.withLock { printer in
                printer.output.write(text)
                printer.flush()
            }
        }
    }

    /// Writes what is queued and the summary (unless nothing was decoded);
    /// returns how many records were dropped.
    @discardableResult
    func finish(summary printsSummary: Bool = true) -> Int {
        queue.sync {}
        drain()
        let (summary, dropped) = state.withLock { ($0.summary, $0.dropped) }
        printer.withLock { printsSummary ? $0.printSummary(summary) : $0.flush() }
        return dropped
    }
}
