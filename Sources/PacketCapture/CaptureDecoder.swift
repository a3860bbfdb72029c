import NIOCore
import WebSocketWire

/// The offline and live capture pipeline after libpcap: link layer → IP → TCP
/// reassembly per direction → one ``ConnectionObserver`` per TCP connection.
///
/// Sans-IO like the observer: feed it packets with ``process(_:originalLength:linkType:time:number:)``,
/// end with ``finish(at:)``, and drain ``nextEvent()`` after each call.
public struct CaptureDecoder {
    public struct Configuration: Sendable {
        public var observer = ObserverConfiguration()
        /// Ports named by `--websocket-port`: connections to them are decoded as
        /// WebSocket framing even without a handshake, with that side the server.
        public var webSocketPorts: Set<UInt16> = []
        /// Out-of-order bytes held per direction before a hole is declared lost.
        public var reassemblyBufferLimit = 4 * 1024 * 1024

        public init() {}
    }

    private struct FlowKey: Hashable {
        var a: Endpoint
        var b: Endpoint

        static func == (lhs: FlowKey, rhs: FlowKey) -> Bool {
            (lhs.a == rhs.a && lhs.b == rhs.b) || (lhs.a == rhs.b && lhs.b == rhs.a)
        }

        func hash(into hasher: inout Hasher) {
            // Symmetric, so both directions find the same flow.
            hasher.combine(a.hashValue ^ b.hashValue)
        }
    }

    private struct Flow {
        var key: FlowKey
        var id: Int
        var client: Endpoint?
        var clientISN: UInt32?
        var sawSYN = false
        var observer: ConnectionObserver?
        var toServer: TCPReassembler
        var toClient: TCPReassembler
        var ignored = false
        var countedAsWebSocket = false
    }

    public var configuration: Configuration
    public private(set) var statistics = CaptureStatistics()
    private var index: [FlowKey: Int] = [:]
    private var slots: [Flow?] = []
    private var freeSlots: [Int] = []
    private var events = CircularBuffer<InspectorEvent>(initialCapacity: 64)
    private var nextConnection = 1

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    public mutating func nextEvent() -> InspectorEvent? {
        events.popFirst()
    }

    /// Decodes one captured packet. `number` is its 1-based position in the
    /// capture, reported with the frames it completes.
    public mutating func process(
        _ bytes: UnsafeRawBufferPointer,
        originalLength: Int,
        linkType: LinkType,
        time: Timestamp,
        number: Int
    ) {
        statistics.packets += 1
        statistics.bytes += UInt64(originalLength)
        let segment: TCPSegmentView
        switch PacketDecoder.decode(bytes, linkType: linkType, originalLength: originalLength) {
        case .success(let decoded): segment = decoded
        case .failure(let reason):
            statistics.skip(reason)
            return
        }
        statistics.tcpSegments += 1
        if segment.missingPayload > 0 { statistics.truncatedPackets += 1 }

        let key = FlowKey(a: segment.source, b: segment.destination)
        var slot = index[key]
        if let existing = slot, segment.syn && !segment.ack, let flow = slots[existing],
            flow.clientISN != nil && flow.clientISN != segment.sequenceNumber || flow.toServer.finished || flow.toClient.finished
        {
            // A new SYN on a finished (or differently numbered) connection: the
            // port pair was reused for a new connection.
            end(slot: existing, reason: .tcpFin, at: time)
            slot = nil
        }
        if slot == nil {
            if segment.rst || (segment.fin && segment.payload.isEmpty) { return }
            slot = open(key, time: time)
        }
        guard let slot else { return }
        var flow = slots[slot]!
        slots[slot] = nil
        handle(segment, in: &flow, time: time, number: number)
        let done = segment.rst || (flow.toServer.finished && flow.toClient.finished)
        slots[slot] = flow
        if done {
            end(slot: slot, reason: segment.rst ? .tcpReset : .tcpFin, at: time)
        }
    }

    private mutating func open(_ key: FlowKey, time: Timestamp) -> Int {
        let flow = Flow(
            key: key,
            id: nextConnection,
            toServer: TCPReassembler(bufferLimit: configuration.reassemblyBufferLimit),
            toClient: TCPReassembler(bufferLimit: configuration.reassemblyBufferLimit)
        )
        nextConnection += 1
        statistics.tcpConnections += 1
        let slot: Int
        if let free = freeSlots.popLast() {
            slots[free] = flow
            slot = free
        } else {
            slots.append(flow)
            slot = slots.count - 1
        }
        index[key] = slot
        return slot
    }

    private mutating func handle(_ segment: TCPSegmentView, in flow: inout Flow, time: Timestamp, number: Int) {
        if segment.syn {
            flow.sawSYN = true
            if flow.client == nil {
                flow.client = segment.ack ? segment.destination : segment.source
            }
            if !segment.ack { flow.clientISN = segment.sequenceNumber }
        }
        if flow.client == nil && (!segment.payload.isEmpty || segment.missingPayload > 0) {
            flow.client = guessClient(segment)
        }
        guard let client = flow.client, !flow.ignored else { return }
        if flow.observer == nil {
            let server = segment.source == client ? segment.destination : segment.source
            var observerConfiguration = configuration.observer
            if configuration.webSocketPorts.contains(server.port) { observerConfiguration.assumeWebSocket = true }
            flow.observer = ConnectionObserver(
                id: flow.id,
                endpoints: ConnectionEndpoints(client: client.description, server: server.description),
                startsAtBeginning: flow.sawSYN,
                configuration: observerConfiguration
            )
        }
        let direction: Direction = segment.source == client ? .clientToServer : .serverToClient
        var payload = ByteBuffer()
        if !segment.payload.isEmpty { payload = ByteBuffer(bytes: segment.payload) }
        var observer = flow.observer.take()!
        let deliver: (TCPReassembler.Delivery) -> Void = { delivery in
            switch delivery {
            case .data(let bytes):
                observer.receive(bytes, from: direction, at: time, packet: number)
            case .gap(let count, let snaplen):
                observer.receiveGap(count, from: direction, at: time, cause: snaplen ? .snaplen : .notCaptured)
            }
        }
        if direction == .clientToServer {
            flow.toServer.add(sequence: segment.sequenceNumber, syn: segment.syn, fin: segment.fin, payload: payload, missingTail: segment.missingPayload, deliver: deliver)
        } else {
            flow.toClient.add(sequence: segment.sequenceNumber, syn: segment.syn, fin: segment.fin, payload: payload, missingTail: segment.missingPayload, deliver: deliver)
        }
        if segment.rst {
            flow.toServer.flush { delivery in deliverFlushed(delivery, .clientToServer, &observer, time) }
            flow.toClient.flush { delivery in deliverFlushed(delivery, .serverToClient, &observer, time) }
        }
        collect(from: &observer, flow: &flow)
        if observer.wantsData {
            flow.observer = observer
        } else if !observer.isWebSocket {
            // Not WebSocket: stop buffering this connection's bytes.
            flow.ignored = true
            flow.toServer = TCPReassembler(bufferLimit: 0)
            flow.toClient = TCPReassembler(bufferLimit: 0)
        } else {
            flow.observer = observer
        }
    }

    /// Which endpoint opened a connection whose SYN was not captured.
    private func guessClient(_ segment: TCPSegmentView) -> Endpoint {
        if configuration.webSocketPorts.contains(segment.destination.port) { return segment.source }
        if configuration.webSocketPorts.contains(segment.source.port) { return segment.destination }
        if let first = segment.payload.first {
            if first == UInt8(ascii: "H") && segment.payload.starts(with: "HTTP/".utf8) { return segment.destination }
            if HTTPHead.looksLikeStart(segment.payload) { return segment.source }
        }
        // Clients usually connect from an ephemeral (higher) port.
        return segment.source.port > segment.destination.port ? segment.source : segment.destination
    }

    private mutating func collect(from observer: inout ConnectionObserver, flow: inout Flow) {
        while let event = observer.nextEvent() {
            switch event {
            case .connectionOpened:
                if !flow.countedAsWebSocket {
                    statistics.webSocketConnections += 1
                    flow.countedAsWebSocket = true
                }
            case .handshakeRejected: statistics.rejectedHandshakes += 1
            case .frame:
                statistics.frames += 1
            case .message: statistics.messages += 1
            case .finding: break
            case .gap(let gap):
                statistics.gaps += 1
                statistics.lostBytes += gap.byteCount
            case .connectionClosed: break
            }
            events.append(event)
        }
    }

    private mutating func end(slot: Int, reason: ConnectionClosed.Reason, at time: Timestamp) {
        guard var flow = slots[slot] else { return }
        slots[slot] = nil
        if var observer = flow.observer.take() {
            flow.toServer.flush { delivery in deliverFlushed(delivery, .clientToServer, &observer, time) }
            flow.toClient.flush { delivery in deliverFlushed(delivery, .serverToClient, &observer, time) }
            observer.finish(reason, at: time)
            collect(from: &observer, flow: &flow)
            statistics.findings += observer.findingCount
        }
        if index[flow.key] == slot { index[flow.key] = nil }
        freeSlots.append(slot)
    }

    /// Ends every connection still open: the capture is over.
    public mutating func finish(at time: Timestamp) {
        let open = index.values.sorted { (slots[$0]?.id ?? 0) < (slots[$1]?.id ?? 0) }
        for slot in open {
            end(slot: slot, reason: .endOfCapture, at: time)
        }
        index = [:]
    }
}

private func deliverFlushed(
    _ delivery: TCPReassembler.Delivery,
    _ direction: Direction,
    _ observer: inout ConnectionObserver,
    _ time: Timestamp
) {
    switch delivery {
    case .data(let bytes): observer.receive(bytes, from: direction, at: time)
    case .gap(let count, let snaplen):
        observer.receiveGap(count, from: direction, at: time, cause: snaplen ? .snaplen : .notCaptured)
    }
}
