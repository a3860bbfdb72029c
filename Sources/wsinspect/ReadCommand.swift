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
        var printer = try EventPrinter(view: view)
        let source: PacketSource
        do {
            source = try PacketSource.openFile(file)
            if let filter = decode.filter { try source.setFilter(filter) }
        } catch {
            printError(error.description)
            throw ExitCodes.code(for: error)
        }
        var decoder = CaptureDecoder(configuration: decode.configuration)
        var number = 0
        var lastTime = Timestamp.zero
        var stoppedEarly: CaptureError?
        reading: while true {
            let result: PacketSource.ReadResult
            do {
                result = try source.next()
            } catch {
                stoppedEarly = error
                break reading
            }
            switch result {
            case .packet(let packet):
                number += 1
                lastTime = packet.time
                decoder.process(packet.bytes, originalLength: packet.originalLength, linkType: source.linkType, time: packet.time, number: number)
                while let event = decoder.nextEvent() { printer.print(event) }
                if printer.output.closed { break reading }
            case .timeout:
                continue
            case .end:
                break reading
            }
        }
        decoder.finish(at: lastTime)
        while let event = decoder.nextEvent() { printer.print(event) }
        var summary = SessionSummary(decoder.statistics)
        summary.filteredOut = printer.filteredOut
        if let stoppedEarly {
            summary.stoppedEarly = "after packet \(number): \(stoppedEarly.description)"
        }
        printer.printSummary(summary)
        if let stoppedEarly {
            printError("\(file): stopped after packet \(number): \(stoppedEarly.description)")
            throw ExitCodes.code(for: stoppedEarly)
        }
    }
}
