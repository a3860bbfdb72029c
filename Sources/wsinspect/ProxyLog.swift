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
        var scheduled = false
        var dropped = 0
        var summary = SessionSummary()
    }

    private let state = Mutex(State())
    private let printer: Mutex<EventPrinter>
    private let queue = DispatchQueue(label: "wsinspect.proxy-log")
    private let limit: Int

    init(printer: sending EventPrinter, limit: Int = 100_000) {
        self.printer = Mutex(printer)
        self.limit = limit
    }

    /// Called on event-loop threads.
    func add(_ event: InspectorEvent) {
        let schedule = state.withLock { state -> Bool in
            switch event {
            case .connectionOpened: state.summary.webSocketConnections += 1
            case .handshakeRejected: state.summary.rejectedHandshakes += 1
            case .frame(let frame):
                state.summary.frames += 1
                state.summary.findings += frame.findings.count
            case .message: state.summary.messages += 1
            case .finding: state.summary.findings += 1
            default: break
            }
            guard state.pending.count < limit else {
                state.dropped += 1
                return false
            }
            state.pending.append(event)
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

    /// Writes what is queued and the summary; returns how many records were dropped.
    @discardableResult
    func finish() -> Int {
        queue.sync {}
        drain()
        let (summary, dropped) = state.withLock { ($0.summary, $0.dropped) }
        printer.withLock { $0.printSummary(summary) }
        return dropped
    }
}
