import ArgumentParser
import InspectorOutput
import PacketCapture
import WebSocketWire

struct ReadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "read",
        abstract: "Decode the WebSocket traffic in a pcap or pcapng file.",
        discussion: """
            Reads the file as a stream (memory stays bounded whatever its size), reassembles \
            every TCP connection, finds HTTP Upgrade handshakes on any port (or WebSocket \
            framing without one), and prints every frame with its findings.
            """
    )

    @Argument(help: "Capture file (pcap or pcapng); - reads standard input.")
    var file: String

    @OptionGroup var decode: DecodeOptions
    @OptionGroup var view: ViewOptions

    func run() throws {
        let printer = try EventPrinter(view: view)
        let source: PacketSource
        do {
            source = try PacketSource.openFile(file)
            if let filter = decode.filter { try source.setFilter(filter) }
        } catch {
            printError(error.description)
            throw ExitCodes.code(for: error)
        }
        var pipeline = PacketPipeline(decoder: CaptureDecoder(configuration: decode.configuration), printer: printer)
        let failure = pipeline.run(source, flushEachPacket: false)
        let stopped = failure.map { "after packet \(pipeline.packets): \($0.description)" }
        pipeline.finish(stoppedEarly: stopped)
        if let failure, let stopped {
            printError("\(file): stopped \(stopped)")
            throw ExitCodes.code(for: failure)
        }
    }
}
