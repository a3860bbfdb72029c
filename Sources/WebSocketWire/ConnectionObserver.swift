import NIOCore

/// How an observer decodes; the CLI maps flags onto it.
public struct ObserverConfiguration: Sendable {
    /// Payload bytes kept per frame and per message for display and JSON; the
    /// rest is still decoded, validated and inflated, but not kept.
    public var maximumRetainedPayload = 16 * 1024 * 1024
    /// The same for binary messages (and their frames), when they should
    /// keep less than text: the proxy's log previews binary payloads, which
    /// people rarely read whole, in less than text. `nil`: as
    /// ``maximumRetainedPayload``.
    public var maximumRetainedBinaryPayload: Int?
    /// Treat the connection as WebSocket framing from its first byte even
    /// without a handshake (`--websocket-port`).
    public var assumeWebSocket = false
    /// How much of each direction to examine for WebSocket framing when a
    /// connection shows no HTTP handshake.
    public var detectionWindow = 16 * 1024

    public init() {}
}

/// Turns the two byte streams of one TCP connection into inspector events.
///
/// Sans-IO: feed it bytes with ``receive(_:from:at:packet:)``, losses with
/// ``receiveGap(_:from:at:)`` and the end with ``finish(_:at:)``, then drain
/// ``nextEvent()``. It never reads a clock; every event carries the time the
/// caller passed in. The live proxy and the capture reader share it, so a
/// relayed connection and a captured one print alike.
public struct ConnectionObserver {
    public let id: Int
    public private(set) var endpoints: ConnectionEndpoints
    public var configuration: ObserverConfiguration

    private enum Phase {
        /// Reading HTTP heads in both directions.
        case handshake
        /// No HTTP seen; looking for WebSocket framing.
        case detecting
        case open
        /// Not WebSocket traffic: bytes are dropped unread.
        case ignored
        case finished
    }

    private var phase: Phase {
        didSet {
            isWebSocket = phase == .open || (phase == .finished && wasOpened)
            wantsData = phase != .ignored && phase != .finished
        }
    }
    @usableFromInline var events = EventQueue()
    private var time = Timestamp.zero
    private var packet: Int?
    private let startsAtBeginning: Bool
    /// Each direction's next byte starts an HTTP head or a frame: true from a
    /// SYN on, until a gap makes that unknown.
    private var framingAtStart: Bool
    /// Set when a gap cut the handshake, with why.
    private var handshakeCut: GapEvent.Cause?

    /// Roles as the caller guessed them may be wrong for a connection seen
    /// mid-stream; once masking shows who the client is, input is mapped.
    private var rolesSwapped = false

    // Handshake phase.
    private var pending: [Direction: ByteBuffer] = [:]
    private var bodyToSkip: [Direction: Int] = [.clientToServer: 0, .serverToClient: 0]
    private var unansweredRequests: [HandshakeRequest] = []
    private var clientAwaitsUpgrade = false

    /// While looking for framing: what arrived, when and in which packet, so
    /// frames found in it are reported with their own time and packet.
    private var detectionChunks: [(direction: Direction, bytes: ByteBuffer, time: Timestamp, packet: Int?)] = []

    // Open phase.
    private var origin = ConnectionOpened.Origin.handshake
    private var opened = Timestamp.zero
    private var wasOpened = false
    private var deflate: DeflateParameters?
    /// Compression was not negotiated in view; RSV1 frames are inflated on a
    /// best-effort basis from then on.
    private var deflateGuessed = false
    private var unknownExtensions = false
    private var client: StreamState
    private var server: StreamState
    public private(set) var findingCount = 0

    // The status below is stored, and the tally inlinable, because a caller
    // in another module asks for them after every packet: through a getter,
    // the whole observer (over a kilobyte) was copied to compute each.

    /// Whether the connection has been recognised as WebSocket.
    public private(set) var isWebSocket = false

    /// `false` once the observer has decided the connection is not WebSocket
    /// traffic, so the caller can stop feeding (and buffering) it.
    public private(set) var wantsData = true

    /// - Parameters:
    ///   - startsAtBeginning: the caller saw the connection open (a SYN), so
    ///     each direction's first byte starts an HTTP head or a frame.
    public init(
        id: Int,
        endpoints: ConnectionEndpoints,
        startsAtBeginning: Bool,
        configuration: ObserverConfiguration = ObserverConfiguration()
    ) {
        self.id = id
        self.endpoints = endpoints
        self.configuration = configuration
        self.startsAtBeginning = startsAtBeginning
        self.framingAtStart = startsAtBeginning
        self.phase = configuration.assumeWebSocket ? .detecting : .handshake
        self.client = StreamState(direction: .clientToServer)
        self.server = StreamState(direction: .serverToClient)
    }

    public mutating func nextEvent() -> InspectorEvent? {
        events.next()
    }

    /// Moves every pending event, in order, to the end of `destination`: the
    /// bulk form of ``nextEvent()`` for callers that pass events on in batches.
    public mutating func takeEvents(into destination: inout EventQueue) {
        events.take(into: &destination)
    }

    /// Counts of the events produced so far, taken or not.
    @inlinable public var eventTally: EventQueue.Tally { events.tally }

    /// Lets the observer add its events to `queue`'s storage: when it holds
    /// no events of its own, `queue`'s events move in (leaving `queue` empty)
    /// and new ones land after them; ``takeEvents(into:)`` hands all back.
    /// A caller that gathers the events of many observers in one queue thus
    /// moves none of them one by one.
    public mutating func lendQueue(_ queue: inout EventQueue) {
        guard events.isEmpty else { return }
        queue.take(into: &events)
    }

    // MARK: Input

    /// `bytes` is consuming: handing over the only reference lets the frame
    /// decoder unmask payloads in place instead of copying them.
    public mutating func receive(_ bytes: consuming ByteBuffer, from direction: Direction, at time: Timestamp, packet: Int? = nil) {
        guard bytes.readableBytes > 0 else { return }
        self.time = time
        self.packet = packet
        let direction = rolesSwapped ? direction.opposite : direction
        switch phase {
        case .handshake:
            pending[direction, default: ByteBuffer()].writeImmutableBuffer(bytes)
            advanceHandshake()
        case .detecting:
            pending[direction, default: ByteBuffer()].writeImmutableBuffer(bytes)
            detectionChunks.append((direction, bytes, time, packet))
            advanceDetection()
        case .open:
            feedFrames(bytes, from: direction)
        case .ignored, .finished:
            break
        }
    }

    /// `count` bytes of `direction` are missing from the capture, after all
    /// bytes received so far.
    public mutating func receiveGap(
        _ count: UInt64,
        from direction: Direction,
        at time: Timestamp,
        cause: GapEvent.Cause = .notCaptured
    ) {
        guard count > 0 else { return }
        self.time = time
        let direction = rolesSwapped ? direction.opposite : direction
        switch phase {
        case .handshake, .detecting:
            if phase == .handshake {
                // Part of the handshake is missing (a snapshot length cuts
                // every packet): its parameters are gone, so look for framing
                // in what follows.
                handshakeCut = cause
                phase = .detecting
            }
            framingAtStart = false
            if let buffer = pending[direction], buffer.readableBytes > 0 {
                // A masked frame that this gap cuts short identifies the client.
                var probe = FrameDecoder(senderMasks: true, synchronized: false)
                probe.append(buffer)
                if probe.skip(count) != .resynchronizing {
                    if direction == .serverToClient { swapRoles() }
                    openMidStream()
                    applyGap(count, to: .clientToServer, cause: cause)
                    return
                }
            }
            pending[direction] = nil
            detectionChunks.removeAll { $0.direction == direction }
        case .open:
            applyGap(count, to: direction, cause: cause)
        case .ignored, .finished:
            break
        }
    }

    private mutating func applyGap(_ count: UInt64, to direction: Direction, cause: GapEvent.Cause) {
        let outcome: FrameDecoder.GapOutcome
        // A loss inside a payload is marked when the decoder reports it, in
        // order after the bytes before it; lost framing drops what was open.
        if direction == .clientToServer {
            outcome = client.decoder.skip(count)
            if outcome == .resynchronizing { client.markLoss(outcome: outcome, deflate: deflate) }
        } else {
            outcome = server.decoder.skip(count)
            if outcome == .resynchronizing { server.markLoss(outcome: outcome, deflate: deflate) }
        }
        events.append(
            .gap(GapEvent(connection: id, time: time, direction: direction, byteCount: count, cause: cause, outcome: outcome))
        )
        drain(direction)
    }

    public mutating func finish(_ reason: ConnectionClosed.Reason, at time: Timestamp) {
        guard phase != .finished else { return }
        self.time = time
        if phase == .detecting && configuration.assumeWebSocket {
            openMidStream()
        }
        guard phase == .open else {
            phase = .finished
            return
        }
        for direction in Direction.allCases {
            flushIncomplete(direction)
        }
        var reason = reason
        if reason != .tcpReset, client.stats.close != nil, server.stats.close != nil {
            reason = .closeHandshake
        }
        events.append(
            .connectionClosed(
                ConnectionClosed(
                    connection: id,
                    time: time,
                    endpoints: endpoints,
                    reason: reason,
                    opened: opened,
                    clientToServer: client.stats,
                    serverToClient: server.stats,
                    findingCount: findingCount
                )
            )
        )
        phase = .finished
    }

    // MARK: Handshake (RFC 6455 §4)

    private mutating func advanceHandshake() {
        // Bytes that cannot start an HTTP message mean the capture began after
        // the handshake, or this is not HTTP at all.
        for direction in Direction.allCases {
            if let buffer = pending[direction], buffer.readableBytes > 0,
                bodyToSkip[direction] == 0, unansweredRequests.isEmpty || direction == .serverToClient,
                !buffer.withUnsafeReadableBytes(HTTPHead.looksLikeStart)
            {
                if direction == .clientToServer && clientAwaitsUpgrade { continue }
                phase = .detecting
                for direction in Direction.allCases {
                    if let bytes = pending[direction], bytes.readableBytes > 0 {
                        detectionChunks.append((direction, bytes, time, packet))
                    }
                }
                advanceDetection()
                return
            }
        }
        while phase == .handshake {
            let progressed = advanceRequests() || advanceResponses()
            if !progressed { break }
        }
    }

    private mutating func skipBody(_ direction: Direction) -> Bool {
        guard let skip = bodyToSkip[direction], skip > 0, var buffer = pending[direction], buffer.readableBytes > 0 else {
            return false
        }
        let count = min(skip, buffer.readableBytes)
        buffer.moveReaderIndex(forwardBy: count)
        pending[direction] = buffer
        bodyToSkip[direction] = skip - count
        return true
    }

    /// Takes the next complete HTTP head from `direction`'s bytes, if any; a
    /// head that is not HTTP, or of the wrong kind, means this is not an
    /// HTTP connection we can follow.
    private mutating func takeHead(from direction: Direction, isRequest: Bool) -> HTTPHead? {
        guard var buffer = pending[direction], buffer.readableBytes > 0, bodyToSkip[direction] == 0 else { return nil }
        switch buffer.withUnsafeReadableBytes(HTTPHead.parse) {
        case .incomplete:
            return nil
        case .invalid:
            phase = .ignored
            return nil
        case .complete(let head, let length):
            buffer.moveReaderIndex(forwardBy: length)
            pending[direction] = buffer
            switch head.startLine {
            case .request where isRequest, .response where !isRequest:
                return head
            default:
                phase = .ignored
                return nil
            }
        }
    }

    /// Parses the next request head, if complete; returns whether anything changed.
    private mutating func advanceRequests() -> Bool {
        if skipBody(.clientToServer) { return true }
        guard !clientAwaitsUpgrade, let head = takeHead(from: .clientToServer, isRequest: true) else { return false }
        let request = HandshakeRequest(head: head)
        unansweredRequests.append(request)
        bodyToSkip[.clientToServer] = head.contentLength ?? 0
        // After an upgrade request the client's next bytes may already be
        // frames; hold them until the response says which.
        clientAwaitsUpgrade = request.isUpgrade
        return true
    }

    private mutating func advanceResponses() -> Bool {
        if skipBody(.serverToClient) { return true }
        guard let head = takeHead(from: .serverToClient, isRequest: false) else { return false }
        let response = HandshakeResponse(head: head)
        if (100..<200).contains(response.status) && response.status != 101 {
            return true  // 100 Continue and friends precede the real answer.
        }
        let request = unansweredRequests.isEmpty ? nil : unansweredRequests.removeFirst()
        let problems = ConnectionObserver.upgradeProblems(request: request, response: response)
        if problems.isEmpty {
            openAfterHandshake(request: request, response: response)
            return false
        }
        clientAwaitsUpgrade = false
        if request?.isUpgrade == true || response.status == 101 || response.accept != nil {
            events.append(
                .handshakeRejected(
                    HandshakeRejected(
                        connection: id,
                        time: time,
                        endpoints: endpoints,
                        request: request,
                        response: response,
                        problems: problems
                    )
                )
            )
        }
        if response.status == 101 { return true }
        let bodyless = request?.method == "HEAD" || response.status == 204 || response.status == 304
        if !bodyless {
            if let length = head.contentLength {
                bodyToSkip[.serverToClient] = length
            } else if head.listElements("Transfer-Encoding").contains(where: { $0.caseInsensitiveEquals("chunked") })
                || head.first("Connection")?.lowercased().contains("close") == true
            {
                // A chunked or close-delimited body: no further handshake can
                // follow that we could find reliably.
                phase = .ignored
            }
        }
        return true
    }

    /// Why an exchange did not open a WebSocket connection; empty when it did.
    /// Lenient on purpose: a wrong Accept or a missing Connection header is
    /// reported as a finding on an open connection, since peers often go on.
    static func upgradeProblems(request: HandshakeRequest?, response: HandshakeResponse) -> [String] {
        var problems: [String] = []
        if response.status != 101 {
            problems.append("server answered \(response.status) \(response.reason)")
            return problems
        }
        if !response.isUpgrade { problems.append("the 101 response has no 'Upgrade: websocket' header (RFC 6455 §4.2.2)") }
        if let request {
            if request.method != "GET" { problems.append("the request method is \(request.method), not GET (RFC 6455 §4.1)") }
            if !request.isUpgrade { problems.append("the request has no 'Upgrade: websocket' header (RFC 6455 §4.1)") }
            if request.key == nil { problems.append("the request has no Sec-WebSocket-Key (RFC 6455 §4.1)") }
        }
        return problems
    }

    private mutating func openAfterHandshake(request: HandshakeRequest?, response: HandshakeResponse) {
        var findings: [Finding] = []
        var expectedAccept: String?
        if let request {
            let problems = request.problems
            if !problems.isEmpty {
                findings.append(Finding(.invalidHandshake, "request: " + problems.joined(separator: "; ") + " (RFC 6455 §4.2.1)"))
            }
            if let key = request.key {
                expectedAccept = HandshakeResponse.expectedAccept(forKey: key)
                if response.accept == nil {
                    findings.append(Finding(.acceptMismatch, "response has no Sec-WebSocket-Accept (RFC 6455 §4.2.2)"))
                } else if response.accept != expectedAccept {
                    findings.append(
                        Finding(
                            .acceptMismatch,
                            "Sec-WebSocket-Accept is \(response.accept!), expected \(expectedAccept!) (RFC 6455 §4.2.2)"
                        )
                    )
                }
            }
            let offered = Set(request.extensions.map { $0.name.lowercased() })
            for accepted in response.extensions where !offered.contains(accepted.name.lowercased()) {
                findings.append(
                    Finding(
                        .unrequestedExtension,
                        "server accepted extension \(accepted.name), which the client did not offer (RFC 6455 §9.1)"
                    )
                )
            }
            if let selected = response.selectedProtocol, !request.protocols.contains(selected) {
                findings.append(
                    Finding(
                        .unrequestedProtocol,
                        "server selected sub-protocol \(selected), which the client did not offer (RFC 6455 §4.2.2)"
                    )
                )
            }
        }
        if let (parameters, problems) = DeflateParameters.negotiated(from: response.extensions) {
            deflate = parameters
            for problem in problems {
                findings.append(Finding(.invalidHandshake, problem))
            }
        }
        unknownExtensions = response.extensions.contains { DeflateParameters.negotiated(from: [$0]) == nil }
        findingCount += findings.count
        origin = .handshake
        phase = .open
        wasOpened = true
        opened = time
        events.append(
            .connectionOpened(
                ConnectionOpened(
                    connection: id,
                    time: time,
                    endpoints: endpoints,
                    origin: .handshake,
                    request: request,
                    response: response,
                    expectedAccept: expectedAccept,
                    deflate: deflate,
                    findings: findings
                )
            )
        )
        prepareDecoders(synchronized: true)
        // Bytes after the heads (a server frame in the 101's segment, client
        // frames sent before the answer) are the first frames.
        let leftover = pending
        pending = [:]
        for direction in [Direction.serverToClient, .clientToServer] {
            if let bytes = leftover[direction], bytes.readableBytes > 0 {
                feedFrames(bytes, from: direction)
            }
        }
    }

    // MARK: Recognising framing without a handshake

    private mutating func advanceDetection() {
        if configuration.assumeWebSocket {
            openMidStream()
            return
        }
        for direction in Direction.allCases {
            guard let buffer = pending[direction], buffer.readableBytes > 0 else { continue }
            let window = configuration.detectionWindow
            let found: Int? = buffer.withUnsafeReadableBytes { bytes in
                if framingAtStart {
                    let (offset, _) = FrameDecoder.searchFrameStart(in: bytes, masked: true, window: window)
                    return offset == 0 ? 0 : nil
                }
                return FrameDecoder.searchFrameStart(in: bytes, masked: true, window: window).found
            }
            if found != nil {
                // Only clients mask (RFC 6455 §5.1): the sender of masked frames
                // is the client, whatever the caller guessed.
                if direction == .serverToClient { swapRoles() }
                openMidStream()
                return
            }
        }
        let examined = pending.values.map(\.readableBytes)
        let decided =
            framingAtStart
            ? examined.contains { $0 >= 14 } : examined.allSatisfy { $0 >= configuration.detectionWindow } && examined.count == 2
        if decided || examined.contains(where: { $0 >= 4 * configuration.detectionWindow }) {
            phase = .ignored
            pending = [:]
            detectionChunks = []
        }
    }

    private mutating func swapRoles() {
        rolesSwapped.toggle()
        endpoints = ConnectionEndpoints(client: endpoints.server, server: endpoints.client)
        let clientBytes = pending[.clientToServer]
        pending[.clientToServer] = pending[.serverToClient]
        pending[.serverToClient] = clientBytes
        for index in detectionChunks.indices {
            detectionChunks[index].direction = detectionChunks[index].direction.opposite
        }
    }

    private mutating func openMidStream() {
        origin = .midStream
        phase = .open
        wasOpened = true
        // The connection was seen from its first buffered byte on.
        opened = detectionChunks.first?.time ?? time
        deflateGuessed = true
        var findings: [Finding] = []
        if let handshakeCut {
            let why = handshakeCut == .snaplen ? "cut by the capture's snapshot length" : "missing from the capture"
            findings.append(
                Finding(
                    handshakeCut == .snaplen ? .snaplenTruncated : .gap,
                    "part of the handshake is \(why): frames are decoded without its parameters"
                )
            )
            findingCount += 1
        }
        events.append(
            .connectionOpened(
                ConnectionOpened(
                    connection: id,
                    time: opened,
                    endpoints: endpoints,
                    origin: .midStream,
                    request: nil,
                    response: nil,
                    expectedAccept: nil,
                    deflate: nil,
                    findings: findings
                )
            )
        )
        prepareDecoders(synchronized: framingAtStart)
        // Replay what arrived while looking, in arrival order, each piece with
        // its own time and packet.
        let (now, currentPacket) = (time, packet)
        let chunks = detectionChunks
        detectionChunks = []
        pending = [:]
        for chunk in chunks {
            time = chunk.time
            packet = chunk.packet
            feedFrames(chunk.bytes, from: chunk.direction)
        }
        time = now
        packet = currentPacket
    }

    private mutating func prepareDecoders(synchronized: Bool) {
        client.decoder = FrameDecoder(senderMasks: true, synchronized: synchronized)
        server.decoder = FrameDecoder(senderMasks: false, synchronized: synchronized)
        client.decoder.yieldsWholeFrames = true
        server.decoder.yieldsWholeFrames = true
        if let deflate, deflate.variant == .perMessage || deflate.variant == .perFrame {
            client.inflater = Inflater(windowBits: deflate.inflateWindowBits(for: .clientToServer))
            server.inflater = Inflater(windowBits: deflate.inflateWindowBits(for: .serverToClient))
        }
    }

    // MARK: Frames (RFC 6455 §5)

    private mutating func feedFrames(_ bytes: consuming ByteBuffer, from direction: Direction) {
        if direction == .clientToServer {
            client.stats.wireBytes += UInt64(bytes.readableBytes)
            client.decoder.append(bytes)
        } else {
            server.stats.wireBytes += UInt64(bytes.readableBytes)
            server.decoder.append(bytes)
        }
        drain(direction)
    }

    private var frameContext: FrameContext {
        FrameContext(
            connection: id,
            time: time,
            packet: packet,
            deflate: deflate,
            deflateGuessed: deflateGuessed,
            unknownExtensions: unknownExtensions,
            midStream: origin == .midStream,
            limit: configuration.maximumRetainedPayload,
            binaryLimit: configuration.maximumRetainedBinaryPayload ?? configuration.maximumRetainedPayload
        )
    }

    private mutating func drain(_ direction: Direction) {
        let context = frameContext
        if direction == .clientToServer {
            client.drain(context, events: &events, findingCount: &findingCount, peerPings: &server.pings)
        } else {
            server.drain(context, events: &events, findingCount: &findingCount, peerPings: &client.pings)
        }
    }

    private mutating func flushIncomplete(_ direction: Direction) {
        let context = frameContext
        if direction == .clientToServer {
            client.flushIncomplete(context, events: &events, findingCount: &findingCount)
        } else {
            server.flushIncomplete(context, events: &events, findingCount: &findingCount)
        }
    }
}
