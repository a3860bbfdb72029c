import Dispatch
import InspectorOutput
import Synchronization
import WebSocketWire

/// Formats and writes events on a second thread, so that decoding and output
/// — each about half the work of a JSON Lines run — use both cores.
///
/// The decoding thread hands over events in batches; a bounded number of
/// batches may wait (back-pressure keeps memory flat), and a serial queue
/// keeps them in order. Only that queue touches the printer.
final class OutputThread: @unchecked Sendable {
    private var printer: EventPrinter
    private let queue = DispatchQueue(label: "wsinspect.output")
    private let freeSlots = DispatchSemaphore(value: 8)
    /// Events per batch: enough to amortise the hand-over, few enough to
    /// keep memory flat.
    static let batchSize = 1024
    private let closed = Atomic<Bool>(false)
    /// Batches the output thread is done with, handed back so that their
    /// events are freed on the thread that allocated them. With glibc's
    /// malloc, freeing on the other thread took the allocating arena's lock;
    /// with mimalloc it is a slower remote free: the benchmark capture reads
    /// in ~0.77 s with the hand-back and ~0.84 s without.
    private let finished = Mutex<[[InspectorEvent]]>([])

    init(printer: EventPrinter) {
        self.printer = printer
    }

    /// Whether the reader of our output has gone away (e.g. `| head`).
    var outputClosed: Bool { closed.load(ordering: .relaxed) }

    /// Hands `batch` to the output thread and leaves it empty; `flush` also
    /// writes it out at once (live views). Called on the decoding thread.
    func submit(_ batch: inout [InspectorEvent], flush: Bool) {
        guard !batch.isEmpty || flush else { return }
        var next: [InspectorEvent] = []
        next.reserveCapacity(Self.batchSize)
        swap(&next, &batch)
        let events = next
        freeSlots.wait()
        // Release what came back here, on the decoding thread.
        let done = finished.withLock { batches -> [[InspectorEvent]] in
            let done = batches
            batches.removeAll(keepingCapacity: true)
            return done
        }
        _ = consume done
        queue.async {
            // Borrowed from the array, not copied out of it one by one; the
            // printer is one access for the batch, not an exclusivity check
            // per event.
            Self.print(events, with: &self.printer)
            if flush { self.printer.flush() }
            if self.printer.output.closed { self.closed.store(true, ordering: .relaxed) }
            self.finished.withLock { $0.append(events) }
            self.freeSlots.signal()
        }
    }

    private static func print(_ events: borrowing [InspectorEvent], with printer: inout EventPrinter) {
        for index in events.indices { printer.print(events[index]) }
    }

    /// Writes the last batch and the summary, and waits until all is out.
    func finish(_ batch: inout [InspectorEvent], _ summary: SessionSummary) {
        submit(&batch, flush: false)
        queue.sync {
            var summary = summary
            summary.filteredOut = printer.filteredOut
            printer.printSummary(summary)
        }
    }
}
