import FuzzSupport
import PacketCapture
import WebSocketWire

#if canImport(Glibc)
import Glibc
#endif

/// libFuzzer target: one input is a sequence of captured packets (built from
/// compact records, raw, or a whole capture file read by libpcap) fed to a
/// `CaptureDecoder`; see ``PacketScript``.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCapturePath(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard var script = PacketScript(fuzzBytes(start, count)) else { return 0 }
    var run = CaptureRun(configuration: script.configuration)
    switch script.mode {
    case .built:
        var builder = PacketBuilder(linkType: script.linkType)
        while let packet = builder.nextPacket(&script.body) {
            run.process(packet.bytes, originalLength: packet.originalLength, linkType: script.linkType)
        }
    case .raw:
        for (bytes, originalLength) in script.rawPackets() {
            run.process(bytes, originalLength: originalLength, linkType: script.linkType)
        }
    case .file:
        run.readFile(script.body.rest())
    }
    run.finish()
    return 0
}

@_cdecl("FuzzCapturePath_main")
public func fuzzCapturePathMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, fuzzCapturePath)
}

/// One pass over a capture, checking every event and the totals.
struct CaptureRun {
    var decoder: CaptureDecoder
    var checker: EventChecker
    var number = 0
    var clock: Int64 = 1_700_000_000_000_000_000
    var lastTime = Timestamp.zero

    init(configuration: CaptureDecoder.Configuration) {
        decoder = CaptureDecoder(configuration: configuration)
        checker = EventChecker(retainedLimit: configuration.observer.maximumRetainedPayload)
    }

    /// Feeds one packet from its own allocation of exactly its size, so that
    /// AddressSanitizer sees any read past its end.
    mutating func process(_ bytes: [UInt8], originalLength: Int, linkType: LinkType, time: Timestamp? = nil) {
        number += 1
        clock += 1_000_000
        let time = time ?? Timestamp(nanoseconds: clock)
        lastTime = time
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        defer { copy.deallocate() }
        copy.copyBytes(from: bytes)
        decoder.process(UnsafeRawBufferPointer(copy), originalLength: originalLength, linkType: linkType, time: time, number: number)
        drain()
    }

    mutating func drain() {
        while let event = decoder.nextEvent() {
            checker.observe(event)
        }
        check(decoder.nextEvent() == nil, "nextEvent() yielded an event after nil")
    }

    /// Writes `bytes` to a scratch file and reads it through libpcap.
    mutating func readFile(_ bytes: [UInt8]) {
        let path = scratchPath
        guard let file = fopen(path, "wb") else { return }
        _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        fclose(file)
        let opened = Result { () throws(CaptureError) in try PacketSource.openFile(path) }
        // libpcap keeps the file open, so the name can go at once: nothing is
        // left behind when a crash or a fork-mode timeout ends the process.
        unlink(path)
        guard case .success(let source) = opened else { return }
        check(!source.isLive, "a file opened as a live source")
        // A capture file of a few KiB holds at most a few hundred packets;
        // the cap only guards against a reader that never ends.
        for _ in 0..<100_000 {
            let result: PacketSource.ReadResult
            do {
                result = try source.next()
            } catch {
                break
            }
            guard case .packet(let packet) = result else { break }
            check(packet.originalLength >= 0, "negative original length")
            process(
                Array(packet.bytes),
                originalLength: packet.originalLength,
                linkType: source.linkType,
                time: packet.time
            )
        }
    }

    mutating func finish() {
        let time = Timestamp(nanoseconds: max(lastTime.nanoseconds, clock))
        decoder.finish(at: time)
        drain()
        let statistics = decoder.statistics
        if fuzzVerbose { print(statistics) }
        check(statistics.packets == number, "statistics count \(statistics.packets) packets, fed \(number)")
        check(statistics.tcpSegments <= number, "more TCP segments than packets")
        check(statistics.frames == checker.frameCount, "statistics count \(statistics.frames) frames, events \(checker.frameCount)")
        check(
            statistics.messages == checker.messageCount,
            "statistics count \(statistics.messages) messages, events \(checker.messageCount)"
        )
        check(statistics.gaps == checker.gapCount, "statistics count \(statistics.gaps) gaps, events \(checker.gapCount)")
        check(statistics.lostBytes == checker.lostBytes, "statistics count \(statistics.lostBytes) lost bytes, gaps \(checker.lostBytes)")
        check(
            statistics.webSocketConnections == checker.openedConnections,
            "statistics count \(statistics.webSocketConnections) WebSocket connections, \(checker.openedConnections) opened"
        )
        check(
            statistics.rejectedHandshakes == checker.rejectedHandshakes,
            "statistics count \(statistics.rejectedHandshakes) rejected handshakes, events \(checker.rejectedHandshakes)"
        )
        check(statistics.webSocketConnections <= statistics.tcpConnections, "more WebSocket than TCP connections")
        check(
            checker.closedConnections == checker.openedConnections,
            "\(checker.openedConnections) connections opened, \(checker.closedConnections) closed after finish"
        )
        // Finishing twice adds nothing.
        let events = checker.eventCount
        decoder.finish(at: time)
        drain()
        check(checker.eventCount == events, "events after a second finish")
    }
}

/// One scratch file per process, in memory where the system has /dev/shm;
/// removed after each read.
let scratchPath: String = {
    let directory = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
    return "\(directory)/wsinspect-fuzz-\(getpid()).pcap"
}()
