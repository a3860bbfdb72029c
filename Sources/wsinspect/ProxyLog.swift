import Dispatch
import Foundation
import InspectorOutput
import Synchronization
import WebSocketWire

#if canImport(Glibc)
import Glibc
#endif

/// The proxy's log: event loops hand events over without waiting, a thread
/// of its own formats and writes them in batches (at least every 10 ms). That thread runs at a lower priority
/// than the relay's (nice 10), and when it falls behind, new records are
/// dropped (never relayed bytes) and counted, so logging can never slow or
/// stall the relay.
final class ProxyLog: Sendable {
    private enum Record {
        case event(InspectorEvent)
        /// A line outside the event stream (the readiness line), in order.
        case line(String)
    }

    private struct State {
        var pending: [Record] = []
        /// Payload bytes the pending records hold: the queue's real weight.
        var pendingBytes = 0
        var woken = false
        var stopping = false
        var dropped = 0
        var summary = SessionSummary()

        /// True the first time since the writer last woke: one signal per batch.
        mutating func wakeOnce() -> Bool {
            if woken { return false }
            woken = true
            return true
        }
    }

    private let state = Mutex(State())
    private let printer: Mutex<EventPrinter>
    private let wake = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    private let limit: Int
    private let byteLimit: Int
    /// How long a record may wait for the writer when few arrive.
    private static let interval = DispatchTimeInterval.milliseconds(10)

    /// - Parameters:
    ///   - limit: records that may wait to be written;
    ///   - byteLimit: payload bytes they may hold together (memory stays
    ///     bounded however large the relayed messages are).
    init(printer: sending EventPrinter, countsFaults: Bool = false, limit: Int = 100_000, byteLimit: Int = 32 * 1024 * 1024) {
        self.printer = Mutex(printer)
        if countsFaults { state.withLock { $0.summary.faults = 0 } }
        self.limit = limit
        self.byteLimit = byteLimit
        let thread = Thread { [self] in self.run() }
        thread.name = "wsinspect-log"
        thread.start()
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
        let signal = state.withLock { state -> Bool in
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
            state.pending.append(.event(event))
            state.pendingBytes += weight
            // A few records wait for the writer's next round (at most
            // `interval`): waking it for each would cost the relay a context
            // switch per frame.
            guard state.pending.count >= 256 || state.pendingBytes >= 1 << 20 else { return false }
            return state.wakeOnce()
        }
        if signal { wake.signal() }
    }

    /// Writes a line (the readiness line) in order with the log.
    func line(_ text: String) {
        let signal = state.withLock { state -> Bool in
            state.pending.append(.line(text))
            return state.wakeOnce()
        }
        if signal { wake.signal() }
    }

    private func run() {
        // The relay comes first: under load the log gets what CPU is left,
        // and what it cannot write in time is dropped and counted.
        setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
        while true {
            _ = wake.wait(timeout: .now() + ProxyLog.interval)
            let (records, stopping) = state.withLock { state -> ([Record], Bool) in
                state.woken = false
                let records = state.pending
                state.pending.removeAll(keepingCapacity: true)
                state.pendingBytes = 0
                return (records, state.stopping)
            }
            printer.withLock { printer in
                for record in records {
                    switch record {
                    case .event(let event): printer.print(event)
                    case .line(let text): printer.output.write(text)
                    }
                }
                printer.flush()
            }
            if stopping {
                stopped.signal()
                return
            }
        }
    }

    /// Writes what is queued and the summary (unless nothing was decoded);
    /// returns how many records were dropped.
    @discardableResult
    func finish(summary printsSummary: Bool = true) -> Int {
        state.withLock { $0.stopping = true }
        wake.signal()
        stopped.wait()
        let (summary, dropped) = state.withLock { ($0.summary, $0.dropped) }
        printer.withLock { printsSummary ? $0.printSummary(summary) : $0.flush() }
        return dropped
    }
}
