import NIOCore

/// How an observer decodes; the CLI maps flags onto it.
public struct ObserverConfiguration: Sendable {
    /// Payload bytes kept per frame and per message for display and JSON; the
    /// rest is still decoded, validated and inflated, but not kept.
    public var maximumRetainedPayload = 16 * 1024 * 1024
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

    private var phase: Phase
    private var events = CircularBuffer<InspectorEvent>(initialCapacity: 8)
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

    // Open phase.
    private var origin = ConnectionOpened.Origin.handshake
    private var opened = Timestamp.zero
    private var deflate: DeflateParameters?
    /// Compression was not negotiated in view; RSV1 frames are inflated on a
    /// best-effort basis from then on.
    private var deflateGuessed = false
    private var unknownExtensions = false
    private var client: StreamState
    private var server: StreamState
    public private(set) var findingCount = 0

    /// Whether the connection has been recognised as WebSocket.
    public var isWebSocket: Bool {
        switch phase {
        case .open: return true
        case .finished: return opened != .zero
        default: return false
        }
    }

    /// `false` once the observer has decided the connection is not WebSocket
    /// traffic, so the caller can stop feeding (and buffering) it.
    public var wantsData: Bool {
        switch phase {
        case .ignored, .finished: return false
        default: return true
        }
    }

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
        events.popFirst()
    }

    // MARK: Input

    public mutating func receive(_ bytes: ByteBuffer, from direction: Direction, at time: Timestamp, packet: Int? = nil) {
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
                    connection: id, time: time, endpoints: endpoints, reason: reason, opened: opened,
                    clientToServer: client.stats, serverToClient: server.stats, findingCount: findingCount
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
                        connection: id, time: time, endpoints: endpoints, request: request, response: response,
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
                        Finding(.acceptMismatch, "Sec-WebSocket-Accept is \(response.accept!), expected \(expectedAccept!) (RFC 6455 §4.2.2)")
                    )
                }
            }
            let offered = Set(request.extensions.map { $0.name.lowercased() })
            for accepted in response.extensions where !offered.contains(accepted.name.lowercased()) {
                findings.append(Finding(.unrequestedExtension, "server accepted extension \(accepted.name), which the client did not offer (RFC 6455 §9.1)"))
            }
            if let selected = response.selectedProtocol, !request.protocols.contains(selected) {
                findings.append(Finding(.unrequestedProtocol, "server selected sub-protocol \(selected), which the client did not offer (RFC 6455 §4.2.2)"))
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
        opened = time
        events.append(
            .connectionOpened(
                ConnectionOpened(
                    connection: id, time: time, endpoints: endpoints, origin: .handshake, request: request,
                    response: response, expectedAccept: expectedAccept, deflate: deflate, findings: findings
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
        let decided = framingAtStart ? examined.contains { $0 >= 14 } : examined.allSatisfy { $0 >= configuration.detectionWindow } && examined.count == 2
        if decided || examined.contains(where: { $0 >= 4 * configuration.detectionWindow }) {
            phase = .ignored
            pending = [:]
        }
    }

    private mutating func swapRoles() {
        rolesSwapped.toggle()
        endpoints = ConnectionEndpoints(client: endpoints.server, server: endpoints.client)
        let clientBytes = pending[.clientToServer]
        pending[.clientToServer] = pending[.serverToClient]
        pending[.serverToClient] = clientBytes
    }

    private mutating func openMidStream() {
        origin = .midStream
        phase = .open
        opened = time
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
                    connection: id, time: time, endpoints: endpoints, origin: .midStream, request: nil,
                    response: nil, expectedAccept: nil, deflate: nil, findings: findings
                )
            )
        )
        prepareDecoders(synchronized: framingAtStart)
        let leftover = pending
        pending = [:]
        for direction in Direction.allCases {
            if let bytes = leftover[direction], bytes.readableBytes > 0 {
                feedFrames(bytes, from: direction)
            }
        }
    }

    private mutating func prepareDecoders(synchronized: Bool) {
        client.decoder = FrameDecoder(senderMasks: true, synchronized: synchronized)
        server.decoder = FrameDecoder(senderMasks: false, synchronized: synchronized)
        if let deflate, deflate.variant == .perMessage || deflate.variant == .perFrame {
            client.inflater = Inflater(windowBits: deflate.inflateWindowBits(for: .clientToServer))
            server.inflater = Inflater(windowBits: deflate.inflateWindowBits(for: .serverToClient))
        }
    }

    // MARK: Frames (RFC 6455 §5)

    private mutating func feedFrames(_ bytes: ByteBuffer, from direction: Direction) {
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
            connection: id, time: time, packet: packet, deflate: deflate, deflateGuessed: deflateGuessed,
            unknownExtensions: unknownExtensions, midStream: origin == .midStream,
            limit: configuration.maximumRetainedPayload
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

/// What the per-direction decoding needs to know about its connection.
struct FrameContext {
    var connection: Int
    var time: Timestamp
    var packet: Int?
    var deflate: DeflateParameters?
    var deflateGuessed: Bool
    var unknownExtensions: Bool
    var midStream: Bool
    var limit: Int
}

/// The frame being decoded in one direction.
struct FrameState {
    var header: FrameHeader
    var findings: [Finding]
    var packet: Int?
    var payload = ByteBuffer()
    var received: UInt64 = 0
    var lost = false
}

/// The message being assembled in one direction (RFC 6455 §5.4).
struct MessageState {
    var opcode: WebSocketOpcode
    var compressed: Bool
    var frameCount = 1
    var wireLength: UInt64 = 0
    var length: UInt64 = 0
    var payload = ByteBuffer()
    var lost = false
    var utf8 = UTF8Validator()
    var validatesText = true
    var inflateError: String?
    var findings: [Finding] = []
    /// Findings raised while the current frame was decoded, to attach to it.
    var newFindings: [Finding] = []

    init(opcode: WebSocketOpcode, compressed: Bool) {
        self.opcode = opcode
        self.compressed = compressed
    }

    mutating func keep(_ bytes: UnsafeRawBufferPointer, limit: Int) {
        length += UInt64(bytes.count)
        let room = limit - payload.readableBytes
        if room > 0 {
            payload.writeBytes(UnsafeRawBufferPointer(rebasing: bytes.prefix(room)))
        }
        validate(bytes)
    }

    /// Checks the next bytes of a text message (RFC 6455 §8.1).
    mutating func validate(_ bytes: UnsafeRawBufferPointer) {
        if opcode == .text && validatesText && utf8.isValid {
            utf8.feed(bytes)
            if !utf8.isValid {
                newFindings.append(Finding(.invalidUTF8, "text message is not valid UTF-8 at byte \(utf8.errorOffset!) (RFC 6455 §8.1)"))
            }
        }
    }

    func event(connection: Int, time: Timestamp, packet: Int?, direction: Direction) -> MessageEvent {
        MessageEvent(
            connection: connection, time: time, packet: packet, direction: direction, opcode: opcode,
            frameCount: frameCount, compressed: compressed, wireLength: wireLength, length: length,
            payload: payload, payloadTruncated: lost || length > UInt64(payload.readableBytes),
            inflateError: inflateError, findings: findings
        )
    }
}

/// Decoding state of one direction of an open connection.
struct StreamState {
    let direction: Direction
    var decoder = FrameDecoder()
    var frame: FrameState?
    var message: MessageState?
    var inflater: Inflater?
    /// Set when this direction's inflate context can no longer be trusted.
    var inflateUnusable: String?
    /// The inflater was made without a handshake in view, on a guess.
    var inflaterGuessed = false
    var closeSent = false
    var stats = DirectionStatistics()
    var pings: [(payload: [UInt8], time: Timestamp)] = []

    init(direction: Direction) {
        self.direction = direction
    }

    // MARK: Frames (RFC 6455 §5)

    mutating func drain(
        _ context: FrameContext,
        events: inout CircularBuffer<InspectorEvent>,
        findingCount: inout Int,
        peerPings: inout [(payload: [UInt8], time: Timestamp)]
    ) {
        while let output = decoder.next() {
            switch output {
            case .header(let header):
                beginFrame(header, context)
            case .payload(let piece):
                consumePayload(piece, limit: context.limit, deflate: context.deflate)
            case .end:
                endFrame(context, events: &events, findingCount: &findingCount, peerPings: &peerPings)
            case .payloadLoss:
                markLoss(outcome: .insidePayload, deflate: context.deflate)
            case .skipped(let count):
                let finding = Finding(.resynchronized, "skipped \(count) bytes to reach the next plausible frame header")
                findingCount += 1
                events.append(.finding(FindingEvent(connection: context.connection, time: context.time, direction: direction, finding: finding)))
            }
        }
    }

    mutating func beginFrame(_ header: FrameHeader, _ context: FrameContext) {
        var findings = header.intrinsicFindings
        if direction == .clientToServer && !header.isMasked {
            findings.append(Finding(.unmaskedClientFrame, "client frame is not masked (RFC 6455 §5.1)"))
        } else if direction == .serverToClient && header.isMasked {
            findings.append(Finding(.maskedServerFrame, "server frame is masked (RFC 6455 §5.1)"))
        }
        let deflate = context.deflate
        if !context.unknownExtensions {
            if header.rsv1 {
                if let deflate {
                    let allowed = deflate.variant == .perFrame ? !header.opcode.isControl : header.opcode.startsMessage
                    if !allowed {
                        findings.append(Finding(.unexpectedRSVBits, "RSV1 is set on a \(header.opcode.name) frame; permessage-deflate allows it only on a message's first frame (RFC 7692 §6.1)"))
                    }
                } else if !context.deflateGuessed {
                    findings.append(Finding(.unexpectedRSVBits, "RSV1 is set but no extension was negotiated (RFC 6455 §5.2)"))
                }
            }
            if header.rsv2 || header.rsv3 {
                findings.append(Finding(.unexpectedRSVBits, "RSV\(header.rsv2 ? 2 : 3) is set but no extension defines it (RFC 6455 §5.2)"))
            }
        }
        if closeSent {
            findings.append(Finding(.frameAfterClose, "\(header.opcode.name) frame sent after this side's Close frame (RFC 6455 §5.5.1)"))
        }
        if header.opcode == .continuation {
            if message == nil && !(context.midStream && stats.messages == 0) {
                findings.append(Finding(.continuationWithoutStart, "continuation frame with no message in progress (RFC 6455 §5.4)"))
            }
            message?.frameCount += 1
        } else if header.opcode.startsMessage {
            if let unfinished = message {
                findings.append(Finding(.dataFrameInsideMessage, "\(header.opcode.name) frame starts a new message while a fragmented \(unfinished.opcode.name) message is unfinished (RFC 6455 §5.4)"))
                message = nil
            }
            let perMessage = deflate?.variant == .perMessage || (deflate == nil && context.deflateGuessed)
            let compressed = header.rsv1 && (perMessage || deflate?.variant == .perFrame)
            if compressed, deflate == nil, inflater == nil {
                // Mid-stream: assume permessage-deflate and see whether the bytes
                // inflate; with context takeover they only can if this is the
                // first compressed message of the connection.
                inflater = Inflater(windowBits: 15)
                inflaterGuessed = true
            }
            message = MessageState(opcode: header.opcode, compressed: compressed)
        }
        frame = FrameState(header: header, findings: findings, packet: context.packet)
    }

    mutating func endFrame(
        _ context: FrameContext,
        events: inout CircularBuffer<InspectorEvent>,
        findingCount: inout Int,
        peerPings: inout [(payload: [UInt8], time: Timestamp)]
    ) {
        // Moved out, not copied: a copy would share the payload buffers and
        // force copy-on-write on every later append.
        guard var frame = self.frame.take() else { return }
        let header = frame.header
        let deflate = context.deflate
        var close: CloseBody?
        var roundTrip: Int64?
        var finishedMessage: MessageEvent?
        let compressed = !header.opcode.isControl && (message?.compressed ?? false)
            && (deflate?.variant != .perFrame || header.rsv1)

        if header.opcode == .close {
            close = StreamState.parseClose(frame.payload, complete: !frame.lost, findings: &frame.findings)
            closeSent = true
            stats.close = close
        } else if header.opcode == .ping, !frame.lost {
            if pings.count >= 64 { pings.removeFirst() }
            pings.append((Array(buffer: frame.payload), context.time))
        } else if header.opcode == .pong, !frame.lost {
            // RFC 6455 §5.5.3: a pong echoes the ping's application data; match
            // the earliest unanswered ping from the other side.
            let payload = Array(buffer: frame.payload)
            if let index = peerPings.firstIndex(where: { $0.payload == payload }) {
                roundTrip = context.time - peerPings[index].time
                peerPings.removeSubrange(0...index)
            }
        }

        if !header.opcode.isControl, var message = self.message.take() {
            if deflate?.variant == .perFrame && header.rsv1 {
                inflateTail(into: &message, limit: context.limit, resetAfter: false)
            }
            if header.fin {
                if message.compressed && deflate?.variant != .perFrame {
                    let reset = deflate?.noContextTakeover(for: direction) ?? false
                    inflateTail(into: &message, limit: context.limit, resetAfter: reset)
                }
                if message.opcode == .text, message.validatesText, message.utf8.isValid, !message.utf8.isCompleteAndValid {
                    message.newFindings.append(Finding(.invalidUTF8, "text message ends inside a UTF-8 sequence (RFC 6455 §8.1)"))
                }
            }
            frame.findings += message.newFindings
            message.findings += message.newFindings
            message.newFindings = []
            if header.fin {
                stats.messages += 1
                finishedMessage = message.event(connection: context.connection, time: context.time, packet: context.packet, direction: direction)
            } else {
                self.message = message
            }
        }

        stats.frames += 1
        stats.payloadBytes += header.payloadLength
        findingCount += frame.findings.count
        var event = FrameEvent(
            connection: context.connection, time: context.time, packet: context.packet, direction: direction,
            header: header, payload: frame.payload,
            payloadTruncated: frame.lost || frame.received > UInt64(frame.payload.readableBytes),
            close: close, pingRoundTrip: roundTrip, findings: frame.findings,
            inflated: finishedMessage.flatMap { message in
                message.compressed
                    ? InflatedMessage(opcode: message.opcode, payload: message.payload, length: message.length, error: message.inflateError)
                    : nil
            }
        )
        event.isCompressed = compressed
        events.append(.frame(event))
        if let finishedMessage {
            events.append(.message(finishedMessage))
        }
    }

    /// Close payload: empty, or a 2-byte code and a UTF-8 reason (RFC 6455 §5.5.1).
    static func parseClose(_ payload: ByteBuffer, complete: Bool, findings: inout [Finding]) -> CloseBody {
        var payload = payload
        let count = payload.readableBytes
        if count == 0 { return CloseBody(code: nil, reason: nil) }
        if count == 1 {
            findings.append(Finding(.closePayloadTooShort, "close payload is 1 byte; it must be empty or start with a 2-byte code (RFC 6455 §5.5.1)"))
            return CloseBody(code: nil, reason: nil)
        }
        let code = WebSocketCloseCode(code: payload.readInteger(as: UInt16.self)!)
        if !code.isAllowedOnWire {
            findings.append(Finding(.invalidCloseCode, "close code \(code.code) (\(code.name)) must not be sent in a Close frame (RFC 6455 §7.4)"))
        }
        let reasonBytes = payload.readableBytesView
        var validator = UTF8Validator()
        reasonBytes.withUnsafeBytes { validator.feed($0) }
        if complete && !validator.isCompleteAndValid {
            findings.append(Finding(.invalidCloseReason, "close reason is not valid UTF-8 (RFC 6455 §5.5.1)"))
        }
        return CloseBody(code: code, reason: String(decoding: reasonBytes, as: UTF8.self))
    }

    /// Reports a frame or message the capture ended inside of.
    mutating func flushIncomplete(_ context: FrameContext, events: inout CircularBuffer<InspectorEvent>, findingCount: inout Int) {
        if let frame {
            var findings = frame.findings
            let missing = frame.header.payloadLength - frame.received
            findings.append(Finding(.truncatedFrame, "the connection ends \(missing) bytes before the end of this frame"))
            findingCount += findings.count
            stats.frames += 1
            events.append(
                .frame(
                    FrameEvent(
                        connection: context.connection, time: context.time, packet: frame.packet, direction: direction,
                        header: frame.header, payload: frame.payload, payloadTruncated: true, close: nil,
                        pingRoundTrip: nil, findings: findings
                    )
                )
            )
            self.frame = nil
        }
        if var message {
            message.lost = true
            message.findings.append(Finding(.truncatedFrame, "the connection ends before the end of this message"))
            findingCount += 1
            events.append(.message(message.event(connection: context.connection, time: context.time, packet: context.packet, direction: direction)))
            self.message = nil
        }
    }

    mutating func consumePayload(_ piece: ByteBuffer, limit: Int, deflate: DeflateParameters?) {
        guard var frame = self.frame.take() else { return }
        frame.received += UInt64(piece.readableBytes)
        if frame.payload.readableBytes == 0 && piece.readableBytes <= limit {
            frame.payload = piece
        } else if frame.payload.readableBytes < limit {
            var piece = piece
            let room = limit - frame.payload.readableBytes
            if var part = piece.readSlice(length: min(room, piece.readableBytes)) {
                frame.payload.writeBuffer(&part)
            }
        }
        self.frame = frame
        guard !frame.header.opcode.isControl, var message = self.message.take() else { return }
        message.wireLength += UInt64(piece.readableBytes)
        let compressedFrame = message.compressed && (deflate?.variant != .perFrame || frame.header.rsv1)
        if compressedFrame {
            inflate(piece, into: &message, limit: limit)
        } else if message.payload.readableBytes == 0 && piece.readableBytes <= limit {
            // Uncompressed and the first bytes: share the frame's buffer.
            piece.withUnsafeReadableBytes { message.validate($0) }
            message.length += UInt64(piece.readableBytes)
            message.payload = piece
        } else {
            piece.withUnsafeReadableBytes { message.keep($0, limit: limit) }
        }
        self.message = message
    }

    mutating func inflate(_ bytes: ByteBuffer, into message: inout MessageState, limit: Int) {
        guard message.inflateError == nil else { return }
        if let reason = inflateUnusable {
            message.inflateError = reason
            message.newFindings.append(Finding(.cannotInflate, "message not inflated: \(reason)"))
            return
        }
        guard let inflater else { return }
        do {
            try inflater.inflate(bytes) { message.keep($0, limit: limit) }
        } catch {
            let description = (error as? Inflater.Error)?.description ?? "\(error)"
            message.inflateError = description
            if inflaterGuessed {
                message.newFindings.append(Finding(.cannotInflate, "message not inflated: the capture began after the handshake, so the compression parameters and the context of earlier messages are unknown (zlib: \(description))"))
            } else {
                message.newFindings.append(Finding(.inflateError, "inflating the message failed: \(description) (RFC 7692 §7.2.2)"))
            }
            inflateUnusable = "an earlier message failed to inflate, so the shared compression context is lost"
        }
    }

    mutating func inflateTail(into message: inout MessageState, limit: Int, resetAfter: Bool) {
        if message.inflateError == nil, !message.lost {
            var tail = ByteBuffer()
            tail.writeBytes(Inflater.messageTail)
            inflate(tail, into: &message, limit: limit)
        }
        if resetAfter {
            // No context takeover: the next message starts afresh, so losses
            // before it no longer matter (RFC 7692 §7.1.1).
            inflater?.reset()
            inflateUnusable = nil
        }
    }

    /// Bytes went missing; the current frame, its message and (with context
    /// takeover) the inflate context are incomplete from here on.
    mutating func markLoss(outcome: FrameDecoder.GapOutcome, deflate: DeflateParameters?) {
        frame?.lost = true
        guard var message else { return }
        message.lost = true
        message.validatesText = false
        if message.compressed && message.inflateError == nil {
            message.inflateError = "bytes of this message are missing from the capture"
            message.newFindings.append(Finding(.cannotInflate, "message not inflated: bytes are missing from the capture"))
        }
        if message.compressed && !(deflate?.noContextTakeover(for: direction) ?? false) {
            inflateUnusable = "bytes were missing earlier in this direction, so the shared compression context is lost"
        }
        if outcome == .resynchronizing {
            self.frame = nil
            self.message = nil
        } else {
            self.message = message
        }
    }
}
