import Foundation
import PacketCapture
import Testing
import WebSocketWire

/// Writes small pcap files by hand (the classic format, microsecond stamps)
/// and reads them back through libpcap and the whole decoding pipeline.
@Suite struct PacketSourceTests {
    static func pcap(linkType: UInt32 = 1, packets: [[UInt8]]) -> [UInt8] {
        func le32(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian, Array.init) }
        func le16(_ value: UInt16) -> [UInt8] { withUnsafeBytes(of: value.littleEndian, Array.init) }
        var file = le32(0xA1B2_C3D4) + le16(2) + le16(4) + le32(0) + le32(0) + le32(65535) + le32(linkType)
        for (index, packet) in packets.enumerated() {
            file += le32(1_700_000_000) + le32(UInt32(index)) + le32(UInt32(packet.count)) + le32(UInt32(packet.count))
            file += packet
        }
        return file
    }

    /// An Ethernet/IPv4/TCP packet between 10.0.0.1:40000 (client) and 10.0.0.2:80.
    static func packet(fromClient: Bool, sequence: UInt32, flags: UInt8, payload: [UInt8]) -> [UInt8] {
        let totalLength = UInt16(40 + payload.count)
        var ip: [UInt8] = [0x45, 0, UInt8(totalLength >> 8), UInt8(totalLength & 0xFF), 0, 0, 0x40, 0, 64, 6, 0, 0]
        ip += fromClient ? [10, 0, 0, 1, 10, 0, 0, 2] : [10, 0, 0, 2, 10, 0, 0, 1]
        var tcp: [UInt8] = fromClient ? [0x9C, 0x40, 0x00, 0x50] : [0x00, 0x50, 0x9C, 0x40]
        tcp += withUnsafeBytes(of: sequence.bigEndian, Array.init) + [0, 0, 0, 0, 0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0]
        return Array(repeating: 0xAA, count: 12) + [0x08, 0x00] + ip + tcp + payload
    }

    static func write(_ bytes: [UInt8]) throws -> String {
        let path = NSTemporaryDirectory() + "wsinspect-test-\(UUID().uuidString).pcap"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func session() -> [[UInt8]] {
        let request = Array(
            "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                .utf8
        )
        let response = Array(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
                .utf8
        )
        let hello: [UInt8] = [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]
        return [
            packet(fromClient: true, sequence: 0, flags: 0x02, payload: []),
            packet(fromClient: false, sequence: 5000, flags: 0x12, payload: []),
            packet(fromClient: true, sequence: 1, flags: 0x18, payload: request),
            packet(fromClient: false, sequence: 5001, flags: 0x18, payload: response),
            // Out of order: the second frame arrives before the first.
            packet(fromClient: true, sequence: 1 + UInt32(request.count + hello.count), flags: 0x18, payload: hello),
            packet(fromClient: true, sequence: 1 + UInt32(request.count), flags: 0x18, payload: hello),
            packet(fromClient: true, sequence: 1 + UInt32(request.count), flags: 0x18, payload: hello),  // retransmitted
        ]
    }

    static func decode(_ path: String) throws -> (events: [InspectorEvent], statistics: CaptureStatistics) {
        let source = try PacketSource.openFile(path)
        var decoder = CaptureDecoder()
        var events: [InspectorEvent] = []
        var number = 0
        var last = Timestamp.zero
        while case .packet(let packet) = try source.next() {
            number += 1
            last = packet.time
            decoder.process(
                packet.bytes,
                originalLength: packet.originalLength,
                linkType: source.linkType,
                time: packet.time,
                number: number
            )
            while let event = decoder.nextEvent() { events.append(event) }
        }
        decoder.finish(at: last)
        while let event = decoder.nextEvent() { events.append(event) }
        return (events, decoder.statistics)
    }

    @Test func decodesAHandWrittenCaptureEndToEnd() throws {
        let path = try Self.write(Self.pcap(packets: Self.session()))
        defer { unlink(path) }
        let (events, statistics) = try Self.decode(path)
        let frames = events.compactMap { event -> FrameEvent? in
            if case .frame(let frame) = event { return frame }
            return nil
        }
        #expect(frames.count == 2)
        #expect(frames.map { String(buffer: $0.payload) } == ["Hello", "Hello"])
        #expect(frames.map(\.packet) == [6, 6])
        #expect(statistics.webSocketConnections == 1)
        #expect(statistics.tcpConnections == 1)
        #expect(statistics.frames == 2)
        #expect(statistics.findings == 0)
    }

    /// Data retransmitted after both FINs (seen on loopback captures) belongs
    /// to the ended connection: it is counted as skipped, not decoded as a
    /// new connection seen mid-stream (nor is the reset the peer answers it
    /// with, as ever). A new SYN on the same port pair is a new connection.
    @Test func segmentsAfterTheEndAreNotANewConnection() throws {
        var packets = Self.session()
        let requestLength = UInt32(packets[2].count - 54)
        let response = Array(packets[3].dropFirst(54))
        let clientNext = 1 + requestLength + 2 * 11
        let serverNext = 5001 + UInt32(response.count)
        packets += [
            Self.packet(fromClient: true, sequence: clientNext, flags: 0x11, payload: []),  // FIN, ACK
            Self.packet(fromClient: false, sequence: serverNext, flags: 0x11, payload: []),  // FIN, ACK
            Self.packet(fromClient: false, sequence: 5001, flags: 0x18, payload: response),  // late retransmission
            Self.packet(fromClient: true, sequence: clientNext - 5, flags: 0x04, payload: []),  // RST answering it
        ]
        func statistics() throws -> CaptureStatistics {
            let path = try Self.write(Self.pcap(packets: packets))
            defer { unlink(path) }
            return try Self.decode(path).statistics
        }
        let ended = try statistics()
        #expect(ended.tcpConnections == 1 && ended.webSocketConnections == 1 && ended.findings == 0)
        #expect(ended.skipped == ["segment after its connection ended": 1])

        let request = Array(packets[2].dropFirst(54))
        packets += [
            Self.packet(fromClient: true, sequence: 90_000, flags: 0x02, payload: []),
            Self.packet(fromClient: false, sequence: 7000, flags: 0x12, payload: []),
            Self.packet(fromClient: true, sequence: 90_001, flags: 0x18, payload: request),
            Self.packet(fromClient: false, sequence: 7001, flags: 0x18, payload: response),
        ]
        let reused = try statistics()
        #expect(reused.tcpConnections == 2 && reused.webSocketConnections == 2 && reused.findings == 0)
    }

    static func bytes(hex: String) -> [UInt8] {
        var out: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            out.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return out
    }

    /// Found by fuzzing (fuzz/regressions/FuzzCapturePath): files that crashed
    /// `wsinspect read` — records claiming a 2 GiB original length (IP total
    /// length 0, as TSO shows it), and a pcapng timestamp far in the future.
    @Test(arguments: [
        "d4c3b2a1020004000000000000000000ffff00000100000000f1536500000000360000003600008000000000000000000000000008004500000000004000400600000a0000010a0000029c40005000000000000000005002ffff0000000000f1536501000000370000003700008000000000000000000000000008004500000000004000400600000a0000010a0000029c40005000000001000000005010ffff000000004a",
        "0a0d0d0a1c0000004d3c2b1a01000000ffffffffffffffff1c000000010000001400000001000000ffff000014000000060000005800000000000000ffffffff00000000360000003600000000000000000000000000000008004500002800004000400600000a0000010a0000029c40005000000000000000005002ffff00000000000058000000",
    ])
    func damagedFilesDecodeWithoutTrapping(hex: String) throws {
        let path = try Self.write(Self.bytes(hex: hex))
        defer { unlink(path) }
        let (_, statistics) = try Self.decode(path)
        #expect(statistics.packets >= 1)
    }

    @Test func missingFileIsReportedAsSuch() {
        #expect(throws: CaptureError(.fileNotFound, "/nonexistent/x.pcap: no such file")) {
            try PacketSource.openFile("/nonexistent/x.pcap")
        }
    }

    @Test func nonCaptureFileIsRejected() throws {
        let path = try Self.write(Array("this is not a capture file at all".utf8))
        defer { unlink(path) }
        #expect(performing: { try PacketSource.openFile(path) }, throws: { ($0 as? CaptureError)?.kind == .notACapture })
    }

    @Test func truncatedFileDecodesWhatIsThereThenReportsWhere() throws {
        let full = Self.pcap(packets: Self.session())
        let path = try Self.write(Array(full.dropLast(5)))
        defer { unlink(path) }
        let source = try PacketSource.openFile(path)
        var packets = 0
        var failure: CaptureError?
        do {
            while case .packet = try source.next() { packets += 1 }
        } catch {
            failure = error
        }
        #expect(packets == 6)
        #expect(failure?.kind == .truncated)
    }

    @Test func appliesBPFFilters() throws {
        let path = try Self.write(Self.pcap(packets: Self.session()))
        defer { unlink(path) }
        let source = try PacketSource.openFile(path)
        try source.setFilter("tcp port 81")
        #expect(try source.next() == .end)
        #expect(performing: { try source.setFilter("tcp portt 80") }, throws: { ($0 as? CaptureError)?.kind == .badFilter })
    }
}

extension PacketSource.ReadResult: Equatable {
    public static func == (lhs: Self, rhs: Self) -> Bool {
        switch (lhs, rhs) {
        case (.end, .end), (.timeout, .timeout): return true
        default: return false
        }
    }
}
