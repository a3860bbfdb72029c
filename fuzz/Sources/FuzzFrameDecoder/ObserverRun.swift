import FuzzSupport
import NIOCore
import WebSocketWire

/// How a script's bytes are handed to the observer.
enum Feeding: CaseIterable {
    /// Record by record, as the script splits them.
    case records
    /// Each direction's bytes in one call, client first (scripts without gaps).
    case wholePerDirection
    /// One byte per call.
    case bytewise
}

/// What a run produced, reduced to what must not depend on the feeding:
/// per direction, every frame and message as decoded, and the closing totals.
/// Times, packet numbers and ping round trips (which depend on how the two
/// directions interleave) are left out.
struct Outcome: Equatable {
    struct Frame: Equatable {
        var header: FrameHeader
        var payload: [UInt8]
        var payloadTruncated: Bool
        var isCompressed: Bool
        var close: CloseBody?
        var findings: [Finding]
    }

    struct Message: Equatable {
        var opcode: WebSocketOpcode
        var frameCount: Int
        var compressed: Bool
        var wireLength: UInt64
        var length: UInt64
        var payload: [UInt8]
        var payloadTruncated: Bool
        var inflateError: String?
        var findings: [Finding]

        init(_ event: MessageEvent) {
            opcode = event.opcode
            frameCount = event.frameCount
            compressed = event.compressed
            wireLength = event.wireLength
            length = event.length
            payload = Array(buffer: event.payload)
            payloadTruncated = event.payloadTruncated
            inflateError = event.inflateError
            findings = event.findings
        }
    }

    struct Closed: Equatable {
        var reason: ConnectionClosed.Reason
        var clientToServer: DirectionStatistics
        var serverToClient: DirectionStatistics
        var findingCount: Int
    }

    var opened: ConnectionOpened.Origin?
    var frames: [Direction: [Frame]] = [:]
    var messages: [Direction: [Message]] = [:]
    var closed: Closed?

    mutating func record(_ event: InspectorEvent) {
        switch event {
        case .connectionOpened(let opened):
            self.opened = opened.origin
        case .frame(let frame):
            frames[frame.direction, default: []].append(
                Frame(
                    header: frame.header,
                    payload: Array(buffer: frame.payload),
                    payloadTruncated: frame.payloadTruncated,
                    isCompressed: frame.isCompressed,
                    close: frame.close,
                    findings: frame.findings
                )
            )
        case .message(let message):
            messages[message.direction, default: []].append(Message(message))
        case .connectionClosed(let closed):
            self.closed = Closed(
                reason: closed.reason,
                clientToServer: closed.clientToServer,
                serverToClient: closed.serverToClient,
                findingCount: closed.findingCount
            )
        case .handshakeRejected, .finding, .gap, .fault:
            break
        }
    }

    /// The first difference from `other`, for the crash message.
    func difference(from other: Outcome) -> String {
        if opened != other.opened { return "opened \(String(describing: opened)) vs \(String(describing: other.opened))" }
        for direction in Direction.allCases {
            let mine = frames[direction] ?? []
            let theirs = other.frames[direction] ?? []
            for (index, (a, b)) in zip(mine, theirs).enumerated() where a != b {
                return "\(direction.name) frame \(index): \(a) vs \(b)"
            }
            if mine.count != theirs.count { return "\(direction.name): \(mine.count) vs \(theirs.count) frames" }
            let myMessages = messages[direction] ?? []
            let theirMessages = other.messages[direction] ?? []
            for (index, (a, b)) in zip(myMessages, theirMessages).enumerated() where a != b {
                return "\(direction.name) message \(index): \(a) vs \(b)"
            }
            if myMessages.count != theirMessages.count {
                return "\(direction.name): \(myMessages.count) vs \(theirMessages.count) messages"
            }
        }
        return "closed \(String(describing: closed)) vs \(String(describing: other.closed))"
    }
}

let clientAndServer = ConnectionEndpoints(client: "192.0.2.1:50000", server: "192.0.2.2:80")

/// Feeds the script to one observer, checking every event and what must
/// hold once the connection is finished; returns the reduced outcome.
func observe(_ script: Script, feeding: Feeding) -> Outcome {
    var observer = ConnectionObserver(
        id: 1,
        endpoints: clientAndServer,
        startsAtBeginning: script.start != .midStream,
        configuration: script.configuration
    )
    var checker = EventChecker(retainedLimit: script.configuration.maximumRetainedPayload)
    var outcome = Outcome()
    var clock: Int64 = 1_700_000_000_000_000_000

    func drain() {
        while let event = observer.nextEvent() {
            checker.observe(event)
            outcome.record(event)
        }
        check(observer.nextEvent() == nil, "nextEvent() yielded an event after nil")
    }

    var operations: [Script.Record] = []
    let records = script.observerRecords
    switch feeding {
    case .records:
        operations = records
    case .wholePerDirection:
        var bytes: [Direction: [UInt8]] = [:]
        for case .data(let direction, let data) in records { bytes[direction, default: []] += data }
        for direction in Direction.allCases {
            if let data = bytes[direction] { operations.append(.data(direction, data)) }
        }
    case .bytewise:
        for record in records {
            switch record {
            case .data(let direction, let data): operations += data.map { .data(direction, [$0]) }
            case .gap: operations.append(record)
            }
        }
    }

    for operation in operations {
        clock += 1_000_000
        let time = Timestamp(nanoseconds: clock)
        switch operation {
        case .data(let direction, let data):
            observer.receive(ByteBuffer(bytes: data), from: direction, at: time, packet: 1)
        case .gap(let direction, let count):
            observer.receiveGap(count, from: direction, at: time)
        }
        if !script.drainLazily { drain() }
    }
    clock += 1_000_000
    observer.finish(script.finishReason, at: Timestamp(nanoseconds: clock))
    drain()

    let opened = checker.isOpened(1)
    check(observer.isWebSocket == opened, "isWebSocket \(observer.isWebSocket), opened \(opened)")
    check(!observer.wantsData, "a finished observer still wants data")
    check(checker.isClosed(1) == opened, "opened \(opened) but closed \(checker.isClosed(1))")
    if script.start == .handshake && !script.configuration.assumeWebSocket {
        // The generated handshake is valid, so the connection must open on it.
        check(outcome.opened == .handshake, "a valid handshake did not open the connection: \(String(describing: outcome.opened))")
    }
    if script.configuration.assumeWebSocket && !script.records.isEmpty {
        check(opened, "assumeWebSocket did not open the connection")
    }

    // Once finished, nothing more comes out.
    let events = checker.eventCount
    observer.receive(ByteBuffer(bytes: [0x81, 0x00]), from: .serverToClient, at: Timestamp(nanoseconds: clock))
    observer.receiveGap(7, from: .clientToServer, at: Timestamp(nanoseconds: clock))
    observer.finish(.tcpReset, at: Timestamp(nanoseconds: clock))
    drain()
    check(checker.eventCount == events, "events after finish")
    return outcome
}
