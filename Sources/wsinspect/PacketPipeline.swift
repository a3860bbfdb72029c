import InspectorOutput
import PacketCapture
import WebSocketWire

/// Drives packets from a libpcap source through the decoder to the view: the
/// loop `read` and `capture` share.
struct PacketPipeline {
    var decoder: CaptureDecoder
    let output: OutputThread
    /// Events waiting to go to the output thread.
    private var batch: [InspectorEvent] = []
    private(set) var packets = 0
    private var lastTime = Timestamp.zero

    init(decoder: CaptureDecoder, printer: EventPrinter) {
        self.decoder = decoder
        self.output = OutputThread(printer: printer)
    }

    /// Reads until the source ends, `shouldStop` (given the packets read so
    /// far) says so, or the reader of our output goes away; returns the read
    /// error that ended it, if one did.
    mutating func run(
        _ source: PacketSource,
        flushEachPacket: Bool,
        shouldStop: (Int) -> Bool = { _ in false }
    ) -> CaptureError? {
        // Asked once per batch, not per packet: the flag lives next to the
        // printer that the output thread keeps writing, so each read missed
        // the cache (3.6 % of read in profiles).
        var outputClosed = false
        while !shouldStop(packets) && !outputClosed {
            let result: PacketSource.ReadResult
            do {
                result = try source.next()
            } catch {
                return error
            }
            switch result {
            case .packet(let packet):
                packets += 1
                lastTime = packet.time
                decoder.process(
                    packet.bytes,
                    originalLength: packet.originalLength,
                    linkType: source.linkType,
                    time: packet.time,
                    number: packets
                )
                // Gathered in the decoder and taken a batch at a time: taking
                // into an empty array moves them without touching each.
                if flushEachPacket || decoder.pendingEventCount >= OutputThread.batchSize {
                    decoder.takeEvents(into: &batch)
                    output.submit(&batch, flush: flushEachPacket)
                    outputClosed = output.outputClosed
                }
            case .timeout:
                continue
            case .end:
                return nil
            }
        }
        return nil
    }

    /// Ends every connection still open and prints the summary.
    mutating func finish(stoppedEarly: String?) {
        decoder.finish(at: lastTime)
        decoder.takeEvents(into: &batch)
        var summary = SessionSummary(decoder.statistics)
        summary.stoppedEarly = stoppedEarly
        output.finish(&batch, summary)
    }
}
