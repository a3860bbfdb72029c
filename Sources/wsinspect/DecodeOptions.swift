import ArgumentParser
import PacketCapture
import WebSocketWire

/// How packets are decoded; shared by `read` and `capture`.
struct DecodeOptions: ParsableArguments {
    @Option(name: .long, help: "BPF filter applied by libpcap before decoding, e.g. 'tcp port 8080' (see pcap-filter(7)).")
    var filter: String?

    @Option(
        name: .customLong("websocket-port"),
        help: "Decode connections to this server port as WebSocket even without a handshake (repeatable)."
    )
    var webSocketPorts: [UInt16] = []

    @Option(name: .long, help: "Payload bytes kept per frame and per message for display (the rest is still decoded).")
    var maxPayload: Int = 16 * 1024 * 1024

    func validate() throws {
        if maxPayload < 0 { throw ValidationError("--max-payload must not be negative") }
    }

    var configuration: CaptureDecoder.Configuration {
        var configuration = CaptureDecoder.Configuration()
        configuration.webSocketPorts = Set(webSocketPorts)
        configuration.observer.maximumRetainedPayload = maxPayload
        return configuration
    }
}
