import NIOCore
import WebSocketWire

/// The offline and live capture pipeline after libpcap: link layer → IP → TCP
/// reassembly per direction → one ``ConnectionObserver`` per TCP connection.
///
/// Sans-IO like the observer: feed it packets with ``process(_:originalLength:linkType:time:number:)``,
/// end with ``finish(at:)``, and drain ``nextEvent()`` (or ``takeEvents(into:)``)
/// after each call.
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

    fileprivate struct FlowKey: Hashable {
        var a: Endpoint
        var b: Endpoint

        static func == (lhs: FlowKey, rhs: FlowKey) -> Bool {
            (lhs.a == rhs.a && lhs.b == rhs.b) || (lhs.a == rhs.b && lhs.b == rhs.a)
        }

        func hash(into hasher: inout Hasher) {
            hasher.combine(symmetricFingerprint)
        }

        /// The same for both directions, so both find the same flow.
        var symmetricFingerprint: UInt64 {
            let x = a.fingerprint
            let y = b.fingerprint
            return min(x, y) &* 0x9E37_79B9_7F4A_7C15 ^ max(x, y)
        }

        /// Its place in `recentFlows`: the fingerprint's top bits, mixed in
        /// from the low ones first. Unmixed, flows between the same two hosts
        /// (whose fingerprints differ only in the low bits, the ports) all
        /// fell in one place, and every packet after another flow's went to
        /// the index.
        var recentBucket: Int { Int(truncatingIfNeeded: (symmetricFingerprint &* 0x9E37_79B9_7F4A_7C15) >> 58) }
    }

    fileprivate struct Flow {
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
        /// The observer's tally when its events were last counted.
        var counted = EventQueue.Tally()
    }

    /// Where a connection that has ended stopped, per side: the sequence
    /// number after the last byte each side sent (its reassembler's next).
    fileprivate struct EndedFlow {
        var client: Endpoint?
        var clientNext: UInt32?
        var serverNext: UInt32?
        /// Which entry of `endedOrder` this is, so that a port pair that
        /// ended twice is forgotten only with its last ending.
        var generation: Int

        /// Whether `segment`, which carries data, is a straggler of this
        /// connection: at or before where its side stopped (a retransmission).
        /// Data beyond that point, or from a side whose end is unknown, is
        /// left to start a connection seen mid-stream.
        func holds(_ segment: TCPSegmentView) -> Bool {
            guard let client else { return false }
            guard let next = segment.source == client ? clientNext : serverNext else { return false }
            let behind = Int64(Int32(bitPattern: next &- segment.sequenceNumber))
            return (0...(1 << 30)).contains(behind)
        }
    }

    public var configuration: Configuration
    public private(set) var statistics = CaptureStatistics()
    private var index: [FlowKey: Int] = [:]
    /// Connections that ended by FIN or reset, remembered by port pair (the
    /// last `endedMemory` of them): Linux keeps a closed connection's port
    /// pair in TIME_WAIT for 60 s, and a segment retransmitted late still
    /// reaches the capture after both FINs.
    private var ended: [FlowKey: EndedFlow] = [:]
    private var endedOrder = CircularBuffer<(key: FlowKey, generation: Int)>()
    private var endedCount = 0
    static let endedMemory = 4096
    /// The slot of a recently seen flow, by a few bits of its fingerprint:
    /// most packets belong to a flow seen just before, and this check is
    /// cheaper than the index's hashing.
    private var recentFlows = [(key: FlowKey, slot: Int)?](repeating: nil, count: 64)
    private var slots: [Flow?] = []
    private var freeSlots: [Int] = []
    private var events = EventQueue()
    private var nextConnection = 1

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    public mutating func nextEvent() -> InspectorEvent? {
        events.next()
    }

    /// Moves every pending event, in order, to the end of `destination`: the
    /// bulk form of ``nextEvent()``.
    public mutating func takeEvents(into destination: inout [InspectorEvent]) {
        events.take(into: &destination)
    }

    /// Events not yet taken. Callers that batch can let them gather here and
    /// take them into an empty array, which moves them all at once.
    public var pendingEventCount: Int { events.count }

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
        var slot: Int?
        if let recent = recentFlows[key.recentBucket], recent.key == key {
            slot = recent.slot
        } else {
            slot = index[key]
            if let slot { recentFlows[key.recentBucket] = (key, slot) }
        }
        if let existing = slot, segment.syn && !segment.ack, let flow = slots[existing],
            flow.clientISN != nil && flow.clientISN != segment.sequenceNumber || flow.toServer.finished || flow.toClient.finished
        {
            // A new SYN on a finished (or differently numbered) connection: the
            // port pair was reused for a new connection.
            end(slot: existing, reason: .tcpFin, at: time)
            slot = nil
        }
        if slot == nil {
            // Only a SYN or data starts tracking a connection: a lone ACK, FIN
            // or RST is the tail of one that has ended (or began unseen).
            guard segment.syn || !segment.payload.isEmpty || segment.missingPayload > 0 else { return }
            if !segment.syn, let endedFlow = ended[key], endedFlow.holds(segment) {
                statistics.skip(.afterConnectionEnded)
                return
            }
            slot = open(key, time: time)
        }
        guard let slot else { return }
        // Mutated in place: a flow holds the observer's whole state, too big to
        // move in and out of the table for every packet.
        let done = slots[slot]!.handle(
            segment,
            configuration: configuration,
            statistics: &statistics,
            events: &events,
            time: time,
            number: number
        )
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
        recentFlows[key.recentBucket] = (key, slot)
        ended[key] = nil
        return slot
    }

    /// Remembers where an ended connection stopped (see ``EndedFlow``),
    /// forgetting the oldest beyond ``endedMemory``.
    private mutating func remember(_ flow: Flow) {
        endedCount += 1
        ended[flow.key] = EndedFlow(
            client: flow.client,
            clientNext: flow.toServer.nextSequence,
            serverNext: flow.toClient.nextSequence,
            generation: endedCount
        )
        endedOrder.append((flow.key, endedCount))
        if endedOrder.count > Self.endedMemory, let oldest = endedOrder.popFirst(), ended[oldest.key]?.generation == oldest.generation {
            ended[oldest.key] = nil
        }
    }

    private mutating func end(slot: Int, reason: ConnectionClosed.Reason, at time: Timestamp) {
        guard var flow = slots[slot].take() else { return }
        if flow.observer != nil {
            flow.toServer.flush()
            flow.toClient.flush()
            CaptureDecoder.deliver(&flow.toServer, .clientToServer, to: &flow.observer!, at: time, packet: nil)
            CaptureDecoder.deliver(&flow.toClient, .serverToClient, to: &flow.observer!, at: time, packet: nil)
            flow.observer!.finish(reason, at: time)
            flow.collect(statistics: &statistics, events: &events)
            statistics.findings += flow.observer!.findingCount
        }
        if index[flow.key] == slot { index[flow.key] = nil }
        if reason != .endOfCapture { remember(flow) }
        for bucket in recentFlows.indices where recentFlows[bucket]?.slot == slot {
            recentFlows[bucket] = nil
        }
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

    /// Passes what one direction's reassembler has ready to the observer.
    private static func deliver(
        _ reassembler: inout TCPReassembler,
        _ direction: Direction,
        to observer: inout ConnectionObserver,
        at time: Timestamp,
        packet: Int?
    ) {
        while let delivery = reassembler.nextDelivery() {
            switch consume delivery {
            case .data(let bytes):
                observer.receive(bytes, from: direction, at: time, packet: packet)
            case .gap(let count, let snaplen):
                observer.receiveGap(count, from: direction, at: time, cause: snaplen ? .snaplen : .notCaptured)
            }
        }
    }
}

extension CaptureDecoder.Flow {
    /// Takes one segment of this connection; returns whether the connection
    /// has ended (reset, or both directions finished).
    mutating func handle(
        _ segment: TCPSegmentView,
        configuration: CaptureDecoder.Configuration,
        statistics: inout CaptureStatistics,
        events: inout EventQueue,
        time: Timestamp,
        number: Int
    ) -> Bool {
        if segment.syn {
            sawSYN = true
            if client == nil {
                client = segment.ack ? segment.destination : segment.source
            }
            if !segment.ack { clientISN = segment.sequenceNumber }
        }
        if client == nil && (!segment.payload.isEmpty || segment.missingPayload > 0) {
            client = Self.guessClient(segment, configuration: configuration)
        }
        guard let client = client, !ignored else { return segment.rst }
        if observer == nil {
            let server = segment.source == client ? segment.destination : segment.source
            var observerConfiguration = configuration.observer
            if configuration.webSocketPorts.contains(server.port) { observerConfiguration.assumeWebSocket = true }
            observer = ConnectionObserver(
                id: id,
                endpoints: ConnectionEndpoints(client: client.description, server: server.description),
                startsAtBeginning: sawSYN,
                configuration: observerConfiguration
            )
        }
        let direction: Direction = segment.source == client ? .clientToServer : .serverToClient
        // The observer appends straight to the decoder's queue and hands it back.
        observer!.lendQueue(&events)
        var inOrder = false
        if !segment.rst {
            let sequence = segment.sequenceNumber
            let count = segment.payload.count
            let missing = segment.missingPayload
            inOrder =
                direction == .clientToServer
                ? toServer.takeIfNext(sequence: sequence, syn: segment.syn, fin: segment.fin, byteCount: count, missingTail: missing)
                : toClient.takeIfNext(sequence: sequence, syn: segment.syn, fin: segment.fin, byteCount: count, missingTail: missing)
        }
        if inOrder {
            // The common case: straight to the observer, without the queue.
            observer!.receive(ByteBuffer(bytes: segment.payload), from: direction, at: time, packet: number)
        } else {
            let payload = segment.payload.isEmpty ? ByteBuffer() : ByteBuffer(bytes: segment.payload)
            if direction == .clientToServer {
                toServer.add(
                    sequence: segment.sequenceNumber,
                    syn: segment.syn,
                    fin: segment.fin,
                    payload: payload,
                    missingTail: segment.missingPayload
                )
            } else {
                toClient.add(
                    sequence: segment.sequenceNumber,
                    syn: segment.syn,
                    fin: segment.fin,
                    payload: payload,
                    missingTail: segment.missingPayload
                )
            }
            if segment.rst {
                toServer.flush()
                toClient.flush()
            }
        }
        CaptureDecoder.deliver(&toServer, .clientToServer, to: &observer!, at: time, packet: number)
        CaptureDecoder.deliver(&toClient, .serverToClient, to: &observer!, at: time, packet: number)
        collect(statistics: &statistics, events: &events)
        if !observer!.wantsData && !observer!.isWebSocket {
            // Not WebSocket: stop buffering this connection's bytes.
            ignored = true
            observer = nil
            toServer = TCPReassembler(bufferLimit: 0)
            toClient = TCPReassembler(bufferLimit: 0)
        }
        return segment.rst || (toServer.finished && toClient.finished)
    }

    /// Which endpoint opened a connection whose SYN was not captured.
    static func guessClient(_ segment: TCPSegmentView, configuration: CaptureDecoder.Configuration) -> Endpoint {
        if configuration.webSocketPorts.contains(segment.destination.port) { return segment.source }
        if configuration.webSocketPorts.contains(segment.source.port) { return segment.destination }
        if let first = segment.payload.first {
            if first == UInt8(ascii: "H") && segment.payload.starts(with: "HTTP/".utf8) { return segment.destination }
            if HTTPHead.looksLikeStart(segment.payload) { return segment.source }
        }
        // Clients usually connect from an ephemeral (higher) port.
        return segment.source.port > segment.destination.port ? segment.source : segment.destination
    }

    /// Moves the observer's events to the decoder's queue, counting them.
    mutating func collect(statistics: inout CaptureStatistics, events: inout EventQueue) {
        guard observer != nil else { return }
        let tally = observer!.eventTally
        let new = tally.since(counted)
        counted = tally
        if new.opened > 0 && !countedAsWebSocket {
            statistics.webSocketConnections += 1
            countedAsWebSocket = true
        }
        statistics.rejectedHandshakes += new.rejected
        statistics.frames += new.frames
        statistics.messages += new.messages
        statistics.gaps += new.gaps
        statistics.lostBytes += new.lostBytes
        observer!.takeEvents(into: &events)
    }
}
