import FaultInjection
import Foundation
import InspectorProxy
import Synchronization
import Testing
import WebSocketWire

/// The proxy run in-process, as a Swift test suite would use the library:
/// a ``ProxyServer`` with a ``FaultController``, between real peers that we
/// did not write (Python `websockets`: an echo server and a client).
@Suite(.serialized, .enabled(if: PythonPeer.available, "needs python3 with the websockets package"))
struct InProcessProxyTests {
    @Test func rulesAndControllerActOnALiveConnection() async throws {
        let server = try PythonPeer(PythonPeer.echoServer)
        defer { server.stop() }
        let upstreamPort = try #require(Int(server.readLine() ?? ""))

        let faults = FaultController(rules: try RuleBook(), seed: 7)
        try faults.rules.add(
            RuleFile.parse(
                Data(#"[{"id": "hush", "action": "drop", "direction": "to-server", "match": {"text": "secret"}}]"#.utf8),
                yaml: false
            ).rules
        )
        var configuration = ProxyConfiguration(upstream: try UpstreamURL(parsing: "ws://127.0.0.1:\(upstreamPort)"))
        configuration.listenPort = 0
        let events = Mutex<[InspectorEvent]>([])
        let proxy = try ProxyServer(
            configuration: configuration,
            threads: 1,
            faults: faults,
            sink: { event in
                events.withLock { $0.append(event) }
            },
            diagnostics: { _ in }
        )
        defer { proxy.shutdown() }

        let client = try PythonPeer(PythonPeer.client, arguments: ["ws://\(proxy.localAddress)/room"])
        defer { client.stop() }
        // The client sends three messages; the echo of the one the rule drops never comes.
        #expect(client.readLine() == "echo: one")
        #expect(client.readLine() == "echo: three")

        // The controller sees the connection and can speak to the client.
        let connections = await faults.connections()
        let connection = try #require(connections.first)
        #expect(connection.path == "/room")
        try await faults.send(
            InjectedMessage(opcode: .text, payload: Array("from the test".utf8)),
            connection: connection.id,
            to: .serverToClient
        )
        #expect(client.readLine() == "got: from the test")
        try await faults.close(connection: connection.id, code: 4000, reason: "done", directions: [.serverToClient])
        #expect(client.readLine() == "closed: 4000 done")

        let faultEvents = events.withLock { $0 }.compactMap { event -> FaultEvent? in
            if case .fault(let fault) = event { return fault }
            return nil
        }
        #expect(faultEvents.map(\.rule) == ["hush", "control", "control"])
    }
}

/// A Python program run for the length of a test, read line by line.
final class PythonPeer: Sendable {
    private let process: Process
    private let output: FileHandle
    private let buffer = Mutex<[UInt8]>([])

    static let available: Bool = {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", "import websockets"]
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }()

    init(_ script: String, arguments: [String] = []) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-u", "-c", script] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        output = pipe.fileHandleForReading
        try process.run()
    }

    /// The next line the program prints, or nil after 10 s or at its end.
    func readLine() -> String? {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            let line = buffer.withLock { bytes -> String? in
                guard let newline = bytes.firstIndex(of: 0x0A) else { return nil }
                defer { bytes.removeFirst(newline + 1) }
                return String(decoding: bytes[..<newline], as: UTF8.self)
            }
            if let line { return line }
            let data = output.availableData
            if data.isEmpty { return nil }
            buffer.withLock { $0 += data }
        }
        return nil
    }

    /// SIGKILL: a child started from a test thread inherits that thread's
    /// blocked signals, SIGTERM among them.
    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Echoes every message; prints its port first.
    static let echoServer = """
        import asyncio
        from websockets.asyncio.server import serve
        async def echo(ws):
            async for message in ws:
                await ws.send(message)
        async def main():
            async with serve(echo, "127.0.0.1", 0) as server:
                print(server.sockets[0].getsockname()[1], flush=True)
                await asyncio.Future()
        asyncio.run(main())
        """

    /// Sends three messages, then prints every message it gets and how the
    /// connection closed.
    static let client = """
        import asyncio, sys
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed
        async def main():
            async with connect(sys.argv[1]) as ws:
                for text in ["one", "two secret", "three"]:
                    await ws.send(text)
                try:
                    while True:
                        message = await ws.recv()
                        print(("echo: " if message in ["one", "two secret", "three"] else "got: ") + message, flush=True)
                except ConnectionClosed as closed:
                    print(f"closed: {closed.rcvd.code} {closed.rcvd.reason}", flush=True)
        asyncio.run(main())
        """
}
