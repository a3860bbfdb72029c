import ArgumentParser
import InspectorOutput
import PacketCapture
import WebSocketWire

#if canImport(Glibc)
import Glibc
#endif

/// Set from the SIGINT handler; the capture loop polls it between packets.
nonisolated(unsafe) private var interrupted: sig_atomic_t = 0
/// The live handle, so the signal handler can wake a read blocked while no
/// packets arrive (pcap_breakloop is safe to call from a signal handler).
nonisolated(unsafe) private var liveHandle: OpaquePointer?

struct CaptureCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capture",
        abstract: "Decode WebSocket traffic live from a network interface (needs root or CAP_NET_RAW).",
        discussion: "Frames print as they arrive; Ctrl-C stops the capture and prints the summary."
    )

    @Option(name: .shortAndLong, help: "Interface to capture on, e.g. lo, eth0 or any.")
    var interface: String

    @Argument(help: "Optional BPF filter expression, e.g. 'tcp port 8080' (same as --filter).")
    var expression: [String] = []

    @Option(name: .long, help: "Also save the raw packets to this pcap file.")
    var write: String?

    @Option(name: .long, help: "Stop after this many packets.")
    var count: Int?

    @OptionGroup var decode: DecodeOptions
    @OptionGroup var view: ViewOptions

    func validate() throws {
        if decode.filter != nil && !expression.isEmpty {
            throw ValidationError("give the filter either as --filter or as the trailing expression, not both")
        }
    }

    func run() throws {
        let printer = try EventPrinter(view: view)
        let source: PacketSource
        do {
            source = try PacketSource.openLive(interface: interface)
            let filter = decode.filter ?? (expression.isEmpty ? nil : expression.joined(separator: " "))
            if let filter { try source.setFilter(filter) }
            if let write { try source.write(to: write) }
        } catch {
            printError(error.description)
            throw ExitCodes.code(for: error)
        }
        liveHandle = source.handleForSignals
        signal(SIGINT) { _ in
            interrupted = 1
            if let liveHandle { PacketSource.breakLoop(liveHandle) }
        }
        signal(SIGTERM) { _ in
            interrupted = 1
            if let liveHandle { PacketSource.breakLoop(liveHandle) }
        }
        printError("capturing on \(interface) (\(source.linkType)); Ctrl-C to stop")
        var pipeline = PacketPipeline(decoder: CaptureDecoder(configuration: decode.configuration), printer: printer)
        let limit = count
        let failure = pipeline.run(source, flushEachPacket: true) { packets in
            interrupted != 0 || limit.map { packets >= $0 } == true
        }
        pipeline.finish(stoppedEarly: failure?.description)
        if let failure {
            printError(failure.description)
            throw ExitCodes.code(for: failure)
        }
    }
}
