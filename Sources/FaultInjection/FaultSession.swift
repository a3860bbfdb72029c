import NIOCore
import WebSocketWire

/// The fault engine for one relayed connection, sans-IO: the relay feeds it
/// the bytes each side sends and the time, and drains what to deliver to
/// each side and when. It never touches a socket, reads a clock or draws
/// randomness of its own (probabilities come from a seeded ``SplitMix64``,
/// masking keys from the closure it is given), so a scenario replays exactly.
///
/// Until the server's 101 arrives bytes pass as they are; after it, each
/// direction is cut into frames and whole messages (RFC 6455 §5.4) so that
/// rules can match, hold, change or drop them. A message nothing touches is
/// forwarded as its original bytes.
public struct FaultSession {
    /// What the relay does next for one direction.
    public enum Delivery: Equatable {
        /// Write these bytes to the direction's receiver.
        case bytes(ByteBuffer)
        /// Half-close towards the receiver (TCP FIN).
        case endOutput
        /// Close the receiver's side entirely.
        case closeReceiver
        /// Close both sides (a `limit` reached).
        case closeBoth
        /// Log this applied fault now: it sits in the queue where it
        /// happened, so the log shows it next to the frames it concerns.
        case log(FaultEvent)
    }

    /// What the relay must do to the whole connection at once.
    public enum Termination: Equatable {
        /// Close both sides now (a `timeout` ran out).
        case close
        /// Reset both sides now, no close frame (`abort`).
        case abort
    }

    public struct Statistics: Sendable {
        public var messages = 0
        public var bytes = 0
        public var paused = false
    }

    /// Frames larger than this pass untouched as they arrive: a rule sees a
    /// message only when it can hold all of it.
    public static let largestHeldFrame = 16 * 1024 * 1024

    public let connection: Int
    /// The request target (path and query), for `match.path`.
    public let target: String
    private var random: SplitMix64
    private let maskingKey: () -> MaskingKey
    private var rules: [FaultRule] = []
    /// Per rule, by its serial: a rule removed and added again under the
    /// same id starts afresh.
    private var ruleStates: [Int: RuleState] = [:]
    private var lanes: [Lane]
    private var deflate: DeflateParameters?
    private var upgradedAt: Timestamp?
    private var events: [FaultEvent] = []
    private var closeDeadline: Timestamp?
    /// How much of the response head has been searched for its end.
    private var headScanned = 0
    public private(set) var termination: Termination?
    private let allocator = ByteBufferAllocator()

    private struct RuleState {
        var admitted: [Direction: Int] = [:]
        var applied = 0
        var nextFire: Timestamp?
        var scheduled = false
        var announced = false
    }

    /// - Parameters:
    ///   - isUpgradeRequest: whether the client's request asked for a
    ///     WebSocket; a plain HTTP exchange passes through untouched.
    ///   - seed: the run's seed; each connection draws from its own stream of
    ///     it, so connections do not disturb each other's sequences.
    public init(
        connection: Int,
        target: String,
        isUpgradeRequest: Bool,
        seed: UInt64,
        maskingKey: @escaping () -> MaskingKey
    ) {
        self.connection = connection
        self.target = target
        self.random = SplitMix64(seed: seed ^ (UInt64(truncatingIfNeeded: connection) &* 0xD1B5_4A32_D192_ED03))
        self.maskingKey = maskingKey
        lanes = [
            Lane(direction: .clientToServer, phase: isUpgradeRequest ? .awaitingUpgrade : .raw),
            Lane(direction: .serverToClient, phase: isUpgradeRequest ? .http : .raw),
        ]
    }

    public var isUpgraded: Bool { upgradedAt != nil }

    /// A side has closed or been sent a close frame: the connection is ending.
    public var isClosing: Bool { lanes.contains { $0.ended || $0.receiverClosed } }

    public func statistics(_ direction: Direction) -> Statistics {
        let lane = lanes[direction.laneIndex]
        return Statistics(messages: lane.deliveredMessages, bytes: lane.deliveredBytes, paused: lane.paused)
    }

    /// Bytes waiting to be delivered in a direction; the relay stops reading
    /// from the sender while there are many.
    public func queuedBytes(_ direction: Direction) -> Int {
        lanes[direction.laneIndex].queuedBytes
    }

    // MARK: Rules

    /// Takes the rules now in force. Timed rules new to this connection are
    /// scheduled from the upgrade (or from now, if that time has passed).
    public mutating func update(rules: [FaultRule], at now: Timestamp) {
        self.rules = rules.filter { $0.match.admits(connection: connection, target: target) }
        let serials = Set(self.rules.map(\.serial))
        ruleStates = ruleStates.filter { serials.contains($0.key) }
        if upgradedAt != nil { scheduleTimedRules(at: now) }
        applyStandingRules(at: now)
    }

    private mutating func scheduleTimedRules(at now: Timestamp) {
        guard let upgradedAt else { return }
        for rule in rules where rule.firesOnTime && ruleStates[rule.serial]?.scheduled != true {
            let offset = Int64(rule.at ?? rule.every ?? 0) * 1_000_000
            ruleStates[rule.serial, default: RuleState()].nextFire = max(now, Timestamp(nanoseconds: upgradedAt.nanoseconds + offset))
            ruleStates[rule.serial]?.scheduled = true
        }
    }

    /// Rules that hold for a whole direction: throttle, slow-close, limit.
    private mutating func applyStandingRules(at now: Timestamp) {
        for index in lanes.indices {
            lanes[index].bytesPerSecond = nil
            lanes[index].slowClose = 0
            lanes[index].limit = nil
        }
        for rule in rules where rule.action.isStanding {
            for direction in rule.direction.directions {
                let index = direction.laneIndex
                var detail: String?
                switch rule.action {
                case .throttle(let rate):
                    lanes[index].bytesPerSecond = rate
                    detail = "\(direction.name) limited to \(rate) bytes/s"
                case .slowClose(let ms):
                    lanes[index].slowClose = Int64(ms) * 1_000_000
                    detail = "a close from the \(direction == .clientToServer ? "client" : "server") reaches the other side \(ms) ms late"
                case .limit(let bytes, let messages):
                    lanes[index].limit = (rule.id, bytes, messages)
                default:
                    break
                }
                if let detail, ruleStates[rule.serial]?.announced != true {
                    record(rule, direction, at: now, detail)
                }
            }
            ruleStates[rule.serial, default: RuleState()].announced = true
        }
    }

    // MARK: Input

    /// Bytes a side sent, in order.
    public mutating func receive(_ bytes: ByteBuffer, from direction: Direction, at now: Timestamp) {
        let index = direction.laneIndex
        guard !lanes[index].ended else { return }
        switch lanes[index].phase {
        case .raw:
            enqueue(bytes, in: index, at: now)
        case .awaitingUpgrade:
            var bytes = bytes
            lanes[index].input.writeBuffer(&bytes)
            if lanes[index].input.readableBytes > 1024 * 1024 {
                // A client that sends this much before any answer is not
                // waiting for a WebSocket upgrade: let its bytes through.
                lanes[index].phase = .raw
                flushHeld(index, at: now)
            }
        case .http:
            var bytes = bytes
            lanes[index].input.writeBuffer(&bytes)
            readResponseHead(at: now)
        case .frames:
            if lanes[index].input.readableBytes == 0 {
                // Nothing left over: work on the incoming buffer itself.
                lanes[index].input = bytes
            } else {
                var bytes = bytes
                lanes[index].input.writeBuffer(&bytes)
            }
            readFrames(index, at: now)
            lanes[index].compactInput()
        }
    }

    /// A side half-closed (`full`: closed entirely). Its pending bytes still
    /// go out; then the other side learns of it, `slow-close` late.
    public mutating func receiveEnd(from direction: Direction, full: Bool, at now: Timestamp) {
        let index = direction.laneIndex
        if !lanes[index].ended {
            flushHeld(index, at: now)
            let due = max(lanes[index].lastDue, Timestamp(nanoseconds: now.nanoseconds + lanes[index].slowClose))
            lanes[index].queue.append(Item(due: due, delivery: full ? .closeReceiver : .endOutput, size: 0))
            lanes[index].ended = true
        } else if full {
            lanes[index].queue.append(Item(due: lanes[index].lastDue, delivery: .closeReceiver, size: 0))
        }
        if full {
            // Nothing can reach the side that closed any more.
            let other = direction.opposite.laneIndex
            events += lanes[other].abandon()
            lanes[other].ended = true
        }
        for held in lanes.indices where lanes[held].holdUntil?.nanoseconds == .max && lanes.allSatisfy(\.ended) {
            // Both senders are done and this way is stalled for good: what it
            // holds can never go out, but the closes must.
            lanes[held].queue.removeAll { if case .bytes = $0.delivery { return true } else { return false } }
            lanes[held].queuedBytes = 0
            lanes[held].holdUntil = nil
        }
    }

    /// Sends a message to one side now (at the next message boundary), as a
    /// control-API request does. False when that side can take no more.
    @discardableResult
    public mutating func inject(
        _ message: InjectedMessage,
        to direction: Direction,
        rule: String = "control",
        action: String? = nil,
        at now: Timestamp
    ) -> Bool {
        guard upgradedAt != nil, !lanes[direction.laneIndex].ended, !lanes[direction.laneIndex].receiverClosed else { return false }
        note(
            FaultEvent(
                connection: connection,
                time: now,
                rule: rule,
                action: action ?? (message.opcode == .close ? "close" : "inject"),
                direction: direction,
                opcode: message.opcode,
                length: message.payload.count,
                detail: "sent \(describe(message)) to the \(direction.receiverName)"
            ),
            in: direction.laneIndex
        )
        enqueueInjection(message, in: direction.laneIndex, at: now)
        return true
    }

    /// Holds (or releases) everything travelling in a direction.
    public mutating func setPaused(_ paused: Bool, _ direction: Direction, at now: Timestamp) {
        lanes[direction.laneIndex].paused = paused
        events.append(
            FaultEvent(
                connection: connection,
                time: now,
                rule: "control",
                action: paused ? "pause" : "resume",
                direction: direction,
                detail: paused ? "holding \(direction.name) traffic" : "releasing \(direction.name) traffic"
            )
        )
    }

    // MARK: Output

    /// Fires the timed rules that are due. Call before draining.
    public mutating func advance(to now: Timestamp) {
        if let closeDeadline, now >= closeDeadline, termination == nil {
            termination = .close
        }
        for rule in rules where rule.firesOnTime {
            // Catch up on every period that has passed, in order.
            while var state = ruleStates[rule.serial], let due = state.nextFire, due <= now {
                if let times = rule.times, state.applied >= times {
                    ruleStates[rule.serial]?.nextFire = nil
                    break
                }
                state.nextFire = rule.every.map { Timestamp(nanoseconds: due.nanoseconds + Int64($0) * 1_000_000) }
                let fires = random.chance(rule.probability)
                if fires { state.applied += 1 }
                ruleStates[rule.serial] = state
                if fires { fireOnTime(rule, at: now) }
            }
        }
        for index in lanes.indices where !lanes[index].deferred.isEmpty && lanes[index].atMessageBoundary {
            let deferred = lanes[index].deferred
            lanes[index].deferred = []
            for message in deferred { enqueueInjection(message, in: index, at: now) }
        }
    }

    /// The next thing due for delivery in a direction, if any is due now.
    public mutating func nextDelivery(_ direction: Direction, at now: Timestamp) -> Delivery? {
        let index = direction.laneIndex
        guard !lanes[index].paused else { return nil }
        if let until = lanes[index].holdUntil {
            guard now >= until else { return nil }
            lanes[index].holdUntil = nil
        }
        guard let head = lanes[index].queue.first, head.due <= now else { return nil }
        lanes[index].queue.removeFirst()
        lanes[index].queuedBytes -= head.size
        lanes[index].deliveredBytes += head.size
        if head.endsMessage { lanes[index].deliveredMessages += 1 }
        return head.delivery
    }

    /// The connection is gone: nothing queued will be delivered. Returns the
    /// applied faults that were waiting in the queues, for the log.
    public mutating func abandon() -> [FaultEvent] {
        let waiting = events + lanes.indices.flatMap { lanes[$0].abandon() }
        events = []
        return waiting
    }

    /// The applied faults since the last call, for the log.
    public mutating func nextEvent() -> FaultEvent? {
        events.isEmpty ? nil : events.removeFirst()
    }

    /// When the relay must call ``advance(to:)`` again, if nothing arrives.
    public var nextWakeUp: Timestamp? {
        var times: [Timestamp] = []
        if let closeDeadline { times.append(closeDeadline) }
        for state in ruleStates.values { if let next = state.nextFire { times.append(next) } }
        for lane in lanes where !lane.paused {
            guard let head = lane.queue.first else { continue }
            times.append(max(head.due, lane.holdUntil ?? head.due))
        }
        return times.min()
    }

    // MARK: Handshake

    private mutating func readResponseHead(at now: Timestamp) {
        let server = Direction.serverToClient.laneIndex
        let client = Direction.clientToServer.laneIndex
        // Parse only once the head's blank line has arrived: a head sent a
        // byte at a time must not be parsed from its start on every read.
        let view = lanes[server].input.readableBytesView
        let ended = view.dropFirst(max(0, headScanned - 2)).indices.contains { index in
            view[index] == 0x0A && index + 1 < view.endIndex
                && (view[index + 1] == 0x0A || (view[index + 1] == 0x0D && index + 2 < view.endIndex && view[index + 2] == 0x0A))
        }
        headScanned = lanes[server].input.readableBytes
        guard ended || lanes[server].input.readableBytes > 64 * 1024 else { return }
        let parsed = lanes[server].input.withUnsafeReadableBytes(HTTPHead.parse)
        switch parsed {
        case .incomplete:
            if lanes[server].input.readableBytes > 64 * 1024 { fallBackToRaw(at: now) }
        case .invalid:
            fallBackToRaw(at: now)
        case .complete(let head, let length):
            let response = HandshakeResponse(head: head)
            if case .response(_, let status, _) = head.startLine, status < 200, status != 101 {
                // An interim 1xx answer: the real one follows.
                enqueue(lanes[server].input.readSlice(length: length)!, in: server, at: now)
                headScanned = 0
                readResponseHead(at: now)
                return
            }
            enqueue(lanes[server].input.readSlice(length: length)!, in: server, at: now)
            guard response.isUpgrade else {
                fallBackToRaw(at: now)
                return
            }
            upgradedAt = now
            if let (parameters, _) = DeflateParameters.negotiated(from: response.extensions), parameters.variant == .perMessage {
                deflate = parameters
                for index in lanes.indices {
                    let direction = lanes[index].direction
                    lanes[index].inflater = Inflater(windowBits: parameters.inflateWindowBits(for: direction))
                    lanes[index].keepsContext = !parameters.noContextTakeover(for: direction)
                }
            }
            lanes[server].phase = .frames
            lanes[client].phase = .frames
            scheduleTimedRules(at: now)
            advance(to: now)
            readFrames(client, at: now)
            readFrames(server, at: now)
        }
    }

    /// Not a WebSocket exchange after all: everything passes as it is.
    private mutating func fallBackToRaw(at now: Timestamp) {
        for index in lanes.indices {
            lanes[index].phase = .raw
            if lanes[index].input.readableBytes > 0 {
                let rest = lanes[index].input
                lanes[index].input.clear()
                enqueue(rest, in: index, at: now)
            }
        }
    }

    // MARK: Frames

    private mutating func readFrames(_ index: Int, at now: Timestamp) {
        while !lanes[index].ended {
            if lanes[index].passthroughRemaining > 0 {
                let count = Int(min(UInt64(lanes[index].input.readableBytes), lanes[index].passthroughRemaining))
                guard count > 0 else { return }
                let chunk = lanes[index].input.readSlice(length: count)!
                lanes[index].passthroughRemaining -= UInt64(count)
                enqueue(chunk, in: index, at: now)
                continue
            }
            guard let (header, headerLength) = lanes[index].input.withUnsafeReadableBytes(FrameHeader.parse) else { return }
            if header.payloadLength > UInt64(FaultSession.largestHeldFrame) {
                // Too large to hold: its bytes flow as they come, untouched.
                flushPending(index, at: now)
                if !header.opcode.isControl { lanes[index].passthroughMessage = !header.fin }
                if isCompressed(header) { lanes[index].inflateFailed = true }
                lanes[index].passthroughRemaining = header.payloadLength
                enqueue(lanes[index].input.readSlice(length: headerLength)!, in: index, at: now)
                if header.fin && !header.opcode.isControl { lanes[index].messages += 1 }
                continue
            }
            let total = headerLength + Int(header.payloadLength)
            guard lanes[index].input.readableBytes >= total else { return }
            let raw = lanes[index].input.readSlice(length: total)!
            take(Frame(header: header, headerLength: headerLength, raw: raw), in: index, at: now)
        }
    }

    /// Sorts a frame into messages: control frames stand alone, data frames
    /// gather until FIN (RFC 6455 §5.4).
    private mutating func take(_ frame: Frame, in index: Int, at now: Timestamp) {
        let opcode = frame.header.opcode
        if opcode.isControl {
            if !lanes[index].pending.isEmpty {
                // Between the fragments of a message (RFC 6455 §5.4): it waits
                // with them, so that byte order holds when the message passes
                // unchanged, and is matched on its own when the message ends.
                lanes[index].pending.append(frame)
                return
            }
            process([frame], in: index, at: now)
            return
        }
        if opcode == .continuation {
            if lanes[index].passthroughMessage || lanes[index].pending.isEmpty {
                enqueue(frame.raw, in: index, at: now)
                if frame.header.fin && lanes[index].passthroughMessage {
                    lanes[index].passthroughMessage = false
                    lanes[index].messages += 1
                    countForwardedMessage(index, at: now)
                }
                return
            }
            lanes[index].pending.append(frame)
            lanes[index].pendingBytes += Int(frame.header.payloadLength)
            if frame.header.fin {
                let message = lanes[index].pending
                lanes[index].pending = []
                lanes[index].pendingBytes = 0
                process(message, in: index, at: now)
            } else if lanes[index].pendingBytes > FaultSession.largestHeldFrame {
                flushPending(index, at: now)
                lanes[index].passthroughMessage = true
            }
            return
        }
        // A new data message; one still open was broken off (RFC 6455 §5.4
        // forbids it, and the receiver will say so): let it through as it was.
        flushPending(index, at: now)
        lanes[index].passthroughMessage = false
        if frame.header.fin {
            process([frame], in: index, at: now)
        } else {
            lanes[index].pending = [frame]
            lanes[index].pendingBytes = Int(frame.header.payloadLength)
        }
    }

    /// Lets the frames of an open message through as they were; a rule will
    /// not see that message.
    private mutating func flushPending(_ index: Int, at now: Timestamp) {
        let pending = lanes[index].pending
        lanes[index].pending = []
        lanes[index].pendingBytes = 0
        if pending.first.map({ isCompressed($0.header) }) == true {
            // Its end passes uninflated, so this direction's inflater can no
            // longer follow the sender.
            lanes[index].inflateFailed = true
        }
        for frame in pending {
            if frame.header.opcode.isControl {
                process([frame], in: index, at: now)
            } else {
                enqueue(frame.raw, in: index, at: now)
            }
        }
    }

    /// Everything held in a direction goes out as it came (the sender closed).
    private mutating func flushHeld(_ index: Int, at now: Timestamp) {
        flushPending(index, at: now)
        if lanes[index].input.readableBytes > 0 {
            let rest = lanes[index].input
            lanes[index].input.clear()
            enqueue(rest, in: index, at: now)
        }
    }

    private func isCompressed(_ header: FrameHeader) -> Bool {
        deflate != nil && header.rsv1 && !header.opcode.isControl && header.opcode != .continuation
    }

    /// Inflates a message's payload with this direction's own inflater,
    /// which follows the sender's compressor message by message (RFC 7692
    /// §7.2.2); `nil` when the data does not inflate.
    private mutating func inflate(_ payload: [UInt8], in index: Int) -> [UInt8]? {
        guard let inflater = lanes[index].inflater, !lanes[index].inflateFailed else { return nil }
        var out: [UInt8] = []
        // A message that inflates past this is a deflate bomb, not traffic
        // to fault: the direction is then passed on untouched.
        let cap = 4 * FaultSession.largestHeldFrame
        let keep: (UnsafeRawBufferPointer) throws -> Void = { piece in
            guard out.count + piece.count <= cap else { throw FaultRuleError("the message inflates past \(cap) bytes") }
            out.append(contentsOf: piece)
        }
        do {
            try payload.withUnsafeBytes { bytes in try inflater.inflate(bytes, sink: keep) }
            try Inflater.messageTail.withUnsafeBytes { bytes in try inflater.inflate(bytes, sink: keep) }
        } catch {
            lanes[index].inflateFailed = true
            return nil
        }
        if !lanes[index].keepsContext { inflater.reset() }
        return out
    }

    // MARK: Messages

    private struct Plan {
        var drop = false
        var abort = false
        var delay: Int64 = 0
        var payload: [UInt8]?
        var copies = 0
        var fragmentSize: Int?
        var corruptions: [FaultRule.Corruption] = []
        var injections: [(message: InjectedMessage, to: [Direction])] = []
        var halfClose = false

        var reframes: Bool { payload != nil || fragmentSize != nil || !corruptions.isEmpty }
    }

    /// Runs one whole message (or control frame) through the rules and
    /// queues what the receiver gets.
    private mutating func process(_ entries: [Frame], in index: Int, at now: Timestamp) {
        // Control frames that arrived between a message's fragments.
        let interleaved = entries.count > 1 ? entries.filter { $0.header.opcode.isControl } : []
        let frames = interleaved.isEmpty ? entries : entries.filter { !$0.header.opcode.isControl }
        let direction = lanes[index].direction
        lanes[index].messages += 1
        let number = lanes[index].messages
        let opcode = frames[0].header.opcode
        let compressed = isCompressed(frames[0].header)
        // The payload is only gathered when something needs it: inflating (to
        // stay in step with the sender), a text pattern, or a change.
        let applicable = rules.filter { $0.direction.includes(direction) && !$0.firesOnTime && !$0.action.isStanding }
        let needsContent = compressed || applicable.contains { $0.match.text != nil || $0.action.changesContent }
        let payload = !needsContent ? [] : frames.count == 1 ? frames[0].payload : frames.flatMap(\.payload)
        let length = frames.reduce(0) { $0 + Int($1.header.payloadLength) }
        let plain = compressed ? inflate(payload, in: index) : payload
        if lanes[index].receiverClosed { return }
        let sinceUpgrade = (now - (upgradedAt ?? now)) / 1_000_000
        let text: () -> String? = { opcode == .text ? plain.map { String(decoding: $0, as: UTF8.self) } : nil }

        var plan = Plan()
        for rule in applicable {
            guard rule.match.admits(opcode: opcode, text: text, sinceUpgrade: sinceUpgrade) else { continue }
            var state = ruleStates[rule.serial] ?? RuleState()
            let count = state.admitted[direction, default: 0] + 1
            state.admitted[direction] = count
            ruleStates[rule.serial] = state
            guard rule.match.takes(count: count) else { continue }
            if let times = rule.times, state.applied >= times { continue }
            if rule.times == nil && state.applied > 0 {
                // A stall or timeout starts once, at its first match.
                if case .stall = rule.action { continue }
                if case .timeout = rule.action { continue }
            }
            guard random.chance(rule.probability) else { continue }
            ruleStates[rule.serial]?.applied += 1
            let what = "\(opcode.name) message #\(number), \(plain?.count ?? length) bytes"
            var detail = what
            switch rule.action {
            case .delay(let ms, let jitter):
                let extra = jitter > 0 ? Int(random.next() % UInt64(jitter + 1)) : 0
                plan.delay += Int64(ms + extra) * 1_000_000
                detail = "held \(what) for \(ms + extra) ms"
            case .stall(let ms):
                hold(index, for: ms, at: now)
                detail = ms.map { "stalled \(direction.name) for \($0) ms at \(what)" } ?? "stalled \(direction.name) for good at \(what)"
            case .timeout(let ms):
                startTimeout(index, ms, at: now)
                detail = "stopped \(direction.name) at \(what)" + (ms.map { "; closing in \($0) ms" } ?? "")
            case .drop:
                plan.drop = true
                detail = "dropped \(what)"
            case .inject(let message):
                plan.injections.append((message, [direction]))
                detail = "after \(what): sent \(describe(message)) to the \(direction.receiverName)"
            case .rewrite(let rewrite):
                let before = plan.payload ?? plain ?? payload
                var after = apply(rewrite, to: before, opcode: opcode)
                // A control frame carries at most 125 bytes (RFC 6455 §5.5);
                // breaking that is what `corrupt: oversized-control` is for.
                if opcode.isControl && after.count > 125 { after.removeLast(after.count - 125) }
                plan.payload = after
                detail = "rewrote \(what) to \(after.count) bytes"
            case .duplicate(let copies):
                plan.copies += copies
                detail = "sent \(what) \(copies + 1) times"
            case .fragment(let size):
                guard !opcode.isControl else { continue }
                plan.fragmentSize = size
                detail = "re-framed \(what) into frames of \(size) bytes"
            case .corrupt(let kind):
                plan.corruptions.append(kind)
                detail = "corrupted \(what): \(kind.rawValue)"
            case .close(let code, let reason):
                let targets = rule.direction == .both ? Direction.allCases : [direction]
                plan.injections.append((.close(code: code, reason: reason), targets))
                detail =
                    "after \(what): sent close \(WebSocketCloseCode(code: code)) to the "
                    + (targets.count > 1 ? "client and the server" : direction.receiverName)
            case .abort:
                plan.abort = true
                detail = "reset the connection at \(what)"
            case .halfClose:
                plan.halfClose = true
                detail = "after \(what): half-closed towards the \(direction.receiverName)"
            case .limit, .throttle, .slowClose, .refuse:
                continue
            }
            let event = FaultEvent(
                connection: connection,
                time: now,
                rule: rule.id,
                action: rule.action.name,
                direction: direction,
                opcode: opcode,
                length: plain?.count ?? length,
                message: number,
                detail: detail
            )
            switch rule.action {
            case .stall, .timeout, .abort: events.append(event)  // about the direction, not a place in it
            default: note(event, in: index)
            }
        }

        if plan.abort {
            termination = .abort
            return
        }
        if plan.corruptions.contains(.oversizedControl) {
            // Ahead of the message: a ping of 126 bytes (RFC 6455 §5.5 allows 125).
            enqueue(
                encodeFrame(.ping, [UInt8](repeating: 0x21, count: 126), fin: true, rsv: 0, masked: direction.senderMasks),
                in: index,
                at: now,
                delay: plan.delay
            )
        }
        // With context takeover the receiver's inflater expects every
        // compressed message the sender made (RFC 7692 §7.2.2). Once one is
        // lost or changed, this direction is compressed by the proxy itself.
        let breaksContext =
            compressed && lanes[index].keepsContext && (plan.drop || plan.payload != nil || plan.corruptions.contains(.invalidUTF8))
        let keepsOrder = !plan.drop && !plan.reframes && !(compressed && lanes[index].reencoding)
        if !keepsOrder {
            // The message is changed or gone: its control frames go first.
            for control in interleaved { process([control], in: index, at: now) }
        }
        if !plan.drop {
            var body = plan.payload ?? plain ?? payload
            if plan.corruptions.contains(.invalidUTF8) {
                body.insert(0xFF, at: body.count / 2)
            }
            let changed = plan.payload != nil || plan.corruptions.contains(.invalidUTF8)
            if keepsOrder {
                // Unchanged: the original bytes, in their original order.
                for entry in entries {
                    if !interleaved.isEmpty && entry.header.opcode.isControl {
                        process([entry], in: index, at: now)
                    } else {
                        enqueue(entry.raw, in: index, at: now, delay: plan.delay)
                    }
                }
            } else if compressed && !changed && lanes[index].reencoding, let plain {
                let wire = lanes[index].deflater(deflate).compressMessage(plain)
                enqueue(encode(opcode, wire, rsv1: true, plan, direction), in: index, at: now, delay: plan.delay)
            } else {
                // Changed messages go uncompressed (RSV1 clear), which leaves
                // both peers' compression state alone (RFC 7692 §6).
                let keepCompressed = compressed && !changed && !lanes[index].reencoding
                enqueue(
                    encode(opcode, keepCompressed ? payload : body, rsv1: keepCompressed, plan, direction),
                    in: index,
                    at: now,
                    delay: plan.delay
                )
            }
            // Copies go uncompressed too, unless the message could not be inflated.
            let copy = plan.payload ?? plain ?? payload
            var copyPlan = plan
            copyPlan.corruptions = []
            for _ in 0..<plan.copies {
                enqueue(
                    encode(opcode, copy, rsv1: compressed && plain == nil && plan.payload == nil, copyPlan, direction),
                    in: index,
                    at: now,
                    delay: plan.delay
                )
            }
            countForwardedMessage(index, at: now)
        }
        if breaksContext && !lanes[index].reencoding && !lanes[index].inflateFailed {
            lanes[index].reencoding = true
        }
        for (message, targets) in plan.injections {
            for target in targets { enqueueInjection(message, in: target.laneIndex, at: now) }
        }
        if plan.halfClose {
            lanes[index].queue.append(Item(due: lanes[index].lastDue, delivery: .endOutput, size: 0))
            lanes[index].ended = true
        }
    }

    private func apply(_ rewrite: FaultRule.Rewrite, to payload: [UInt8], opcode: WebSocketOpcode) -> [UInt8] {
        switch rewrite {
        case .setText(let text): return Array(text.utf8)
        case .setBinary(let bytes): return bytes
        case .replace(let pattern, let template):
            guard opcode == .text else { return payload }
            return Array(pattern.replacingMatches(in: String(decoding: payload, as: UTF8.self), with: template).utf8)
        }
    }

    private mutating func fireOnTime(_ rule: FaultRule, at now: Timestamp) {
        let directions = rule.direction.directions
        switch rule.action {
        case .inject(let message):
            for direction in directions {
                inject(message, to: direction, rule: rule.id, action: rule.action.name, at: now)
            }
        case .close(let code, let reason):
            for direction in directions {
                inject(.close(code: code, reason: reason), to: direction, rule: rule.id, action: rule.action.name, at: now)
            }
        case .abort:
            termination = .abort
            record(rule, nil, at: now, "reset the connection")
        case .halfClose:
            for direction in directions {
                let index = direction.laneIndex
                guard !lanes[index].ended else { continue }
                record(rule, direction, at: now, "half-closed towards the \(direction.receiverName)", in: index)
                lanes[index].queue.append(Item(due: lanes[index].lastDue, delivery: .endOutput, size: 0))
                lanes[index].ended = true
            }
        case .stall(let ms):
            for direction in directions {
                hold(direction.laneIndex, for: ms, at: now)
                record(
                    rule,
                    direction,
                    at: now,
                    ms.map { "stalled \(direction.name) for \($0) ms" } ?? "stalled \(direction.name) for good"
                )
            }
        case .timeout(let ms):
            for direction in directions {
                startTimeout(direction.laneIndex, ms, at: now)
                record(rule, direction, at: now, "stopped \(direction.name)" + (ms.map { "; closing in \($0) ms" } ?? ""))
            }
        default:
            break
        }
    }

    private mutating func record(_ rule: FaultRule, _ direction: Direction?, at now: Timestamp, _ detail: String, in index: Int? = nil) {
        note(
            FaultEvent(connection: connection, time: now, rule: rule.id, action: rule.action.name, direction: direction, detail: detail),
            in: index
        )
    }

    /// Logs an applied fault: at its place in a direction's queue when it
    /// concerns what travels there, else at once.
    private mutating func note(_ event: FaultEvent, in index: Int?) {
        if let index, !lanes[index].ended {
            lanes[index].queue.append(Item(due: lanes[index].lastDue, delivery: .log(event), size: 0))
        } else {
            events.append(event)
        }
    }

    private mutating func hold(_ index: Int, for milliseconds: Int?, at now: Timestamp) {
        lanes[index].holdUntil =
            milliseconds.map { Timestamp(nanoseconds: now.nanoseconds + Int64($0) * 1_000_000) }
            ?? Timestamp(nanoseconds: .max)
    }

    private mutating func startTimeout(_ index: Int, _ milliseconds: Int?, at now: Timestamp) {
        hold(index, for: nil, at: now)
        if let milliseconds {
            let deadline = Timestamp(nanoseconds: now.nanoseconds + Int64(milliseconds) * 1_000_000)
            closeDeadline = min(closeDeadline ?? deadline, deadline)
        }
    }

    private func describe(_ message: InjectedMessage) -> String {
        if message.opcode == .close {
            let code = message.payload.count >= 2 ? UInt16(message.payload[0]) << 8 | UInt16(message.payload[1]) : 1005
            return "close \(WebSocketCloseCode(code: code))"
        }
        if message.opcode == .text {
            return "text \"\(String(decoding: message.payload.prefix(60), as: UTF8.self))\""
        }
        return "\(message.opcode.name) of \(message.payload.count) bytes"
    }

    // MARK: Queueing

    /// Queues a message of the proxy's own making for a side, never inside a
    /// fragmented message being passed through (RFC 6455 §5.4): it waits for
    /// that message's end.
    private mutating func enqueueInjection(_ message: InjectedMessage, in index: Int, at now: Timestamp) {
        guard !lanes[index].ended, !lanes[index].receiverClosed else { return }
        if !message.opcode.isControl && !lanes[index].atMessageBoundary {
            lanes[index].deferred.append(message)
            return
        }
        let direction = lanes[index].direction
        enqueue(encodeFrame(message.opcode, message.payload, fin: true, rsv: 0, masked: direction.senderMasks), in: index, at: now)
        if message.opcode == .close {
            // The receiver has its close; what the other side still sends it
            // would break the closing handshake (RFC 6455 §5.5.1).
            lanes[index].receiverClosed = true
        }
    }

    private mutating func enqueue(_ bytes: ByteBuffer, in index: Int, at now: Timestamp, delay: Int64 = 0) {
        guard !lanes[index].ended, bytes.readableBytes > 0 else { return }
        var bytes = bytes
        var closeAfter: String?
        if let (rule, limit, _) = lanes[index].limit, let limit {
            let room = limit - lanes[index].forwardedBytes
            if room <= bytes.readableBytes {
                bytes = bytes.getSlice(at: bytes.readerIndex, length: max(0, room))!
                closeAfter = rule
            }
        }
        var due = max(Timestamp(nanoseconds: now.nanoseconds + delay), lanes[index].lastDue)
        if let rate = lanes[index].bytesPerSecond {
            due = Timestamp(nanoseconds: due.nanoseconds + Int64(bytes.readableBytes) * 1_000_000_000 / Int64(rate))
        }
        lanes[index].queue.append(Item(due: due, delivery: .bytes(bytes), size: bytes.readableBytes))
        lanes[index].queuedBytes += bytes.readableBytes
        lanes[index].forwardedBytes += bytes.readableBytes
        lanes[index].lastDue = due
        if let closeAfter { closeForLimit(index, rule: closeAfter, "\(lanes[index].forwardedBytes) bytes", at: now) }
    }

    private mutating func countForwardedMessage(_ index: Int, at now: Timestamp) {
        lanes[index].forwardedMessages += 1
        if !lanes[index].queue.isEmpty { lanes[index].queue[lanes[index].queue.count - 1].endsMessage = true }
        if let (rule, _, messages) = lanes[index].limit, let messages, lanes[index].forwardedMessages >= messages, !lanes[index].ended {
            closeForLimit(index, rule: rule, "\(messages) messages", at: now)
        }
    }

    private mutating func closeForLimit(_ index: Int, rule: String, _ what: String, at now: Timestamp) {
        note(
            FaultEvent(
                connection: connection,
                time: now,
                rule: rule,
                action: "limit",
                direction: lanes[index].direction,
                detail: "closing the connection after \(what) \(lanes[index].direction.name)"
            ),
            in: index
        )
        lanes[index].queue.append(Item(due: lanes[index].lastDue, delivery: .closeBoth, size: 0))
        lanes[index].ended = true
    }

    /// A whole message as frames: fragmented on request, masked when the
    /// client sends it (RFC 6455 §5.3), broken on purpose when asked.
    private func encode(_ opcode: WebSocketOpcode, _ payload: [UInt8], rsv1: Bool, _ plan: Plan, _ direction: Direction) -> ByteBuffer {
        var masked = direction.senderMasks
        var rsv: UInt8 = rsv1 ? 4 : 0
        var firstOpcode = opcode
        for corruption in plan.corruptions {
            switch corruption {
            case .rsv1: rsv |= 4
            case .rsv2: rsv |= 2
            case .rsv3: rsv |= 1
            case .reservedOpcode: firstOpcode = WebSocketOpcode(rawValue: opcode.isControl ? 0xB : 0x3)
            case .unmasked: masked = false
            case .masked: masked = true
            case .invalidUTF8, .oversizedControl: break
            }
        }
        guard let size = plan.fragmentSize, payload.count > size else {
            return encodeFrame(firstOpcode, payload, fin: true, rsv: rsv, masked: masked)
        }
        var out = allocator.buffer(capacity: payload.count + payload.count / size * 14 + 14)
        var offset = 0
        while offset < payload.count {
            let end = min(payload.count, offset + size)
            var frame = encodeFrame(
                offset == 0 ? firstOpcode : .continuation,
                Array(payload[offset..<end]),
                fin: end == payload.count,
                rsv: offset == 0 ? rsv : 0,
                masked: masked
            )
            out.writeBuffer(&frame)
            offset = end
        }
        return out
    }

    private func encodeFrame(_ opcode: WebSocketOpcode, _ payload: [UInt8], fin: Bool, rsv: UInt8, masked: Bool) -> ByteBuffer {
        let header = FrameHeader(
            fin: fin,
            rsv1: rsv & 4 != 0,
            rsv2: rsv & 2 != 0,
            rsv3: rsv & 1 != 0,
            opcode: opcode,
            maskingKey: masked ? maskingKey() : nil,
            payloadLength: UInt64(payload.count),
            lengthEncoding: FrameHeader.minimalEncoding(for: UInt64(payload.count))
        )
        var out = allocator.buffer(capacity: header.headerLength + payload.count)
        out.writeBytes(header.bytes)
        var body = payload
        if let key = header.maskingKey {
            body.withUnsafeMutableBytes { key.apply(to: $0, offset: 0) }
        }
        out.writeBytes(body)
        return out
    }
}

/// One direction of a connection inside the session.
private struct Lane {
    enum Phase {
        /// Waiting for the server's response head.
        case http
        /// The client's bytes after its upgrade request, held until the
        /// server answers (a frame must not be cut before it is one).
        case awaitingUpgrade
        case frames
        /// Not WebSocket (or not any more): bytes pass as they are.
        case raw
    }

    let direction: Direction
    var phase: Phase
    var input = ByteBuffer()
    /// Frames of the data message being gathered.
    var pending: [Frame] = []
    var pendingBytes = 0
    /// Payload bytes of an over-large frame still to pass untouched.
    var passthroughRemaining: UInt64 = 0
    /// The open message passes untouched up to its last frame.
    var passthroughMessage = false
    /// Injections waiting for the end of a message passing through.
    var deferred: [InjectedMessage] = []
    var queue: [Item] = []
    var queuedBytes = 0
    var lastDue = Timestamp.zero
    var holdUntil: Timestamp?
    var paused = false
    /// Nothing more goes out this way (closed, half-closed or limited).
    var ended = false
    /// The receiver was sent a close frame by a fault.
    var receiverClosed = false
    var messages = 0
    var forwardedMessages = 0
    var forwardedBytes = 0
    /// What has actually gone out (the control API's statistics).
    var deliveredMessages = 0
    var deliveredBytes = 0
    var bytesPerSecond: Int?
    var slowClose: Int64 = 0
    var limit: (rule: String, bytes: Int?, messages: Int?)?
    var inflater: Inflater?
    var inflateFailed = false
    /// The sender compresses with context takeover (RFC 7692 §7.1.1).
    var keepsContext = false
    /// The proxy compresses this direction itself from now on.
    var reencoding = false
    private var ownDeflater: Deflater?

    init(direction: Direction, phase: Phase) {
        self.direction = direction
        self.phase = phase
    }

    var atMessageBoundary: Bool { passthroughRemaining == 0 && !passthroughMessage }

    /// Lets go of input already cut into frames, so that a long connection
    /// does not keep every byte it ever carried.
    mutating func compactInput() {
        if input.readableBytes == 0 {
            input = ByteBuffer()
        } else if input.readerIndex > 64 * 1024 {
            var rest = ByteBufferAllocator().buffer(capacity: input.readableBytes)
            rest.writeImmutableBuffer(input)
            input = rest
        }
    }

    /// Empties the queue; returns the fault events it held.
    mutating func abandon() -> [FaultEvent] {
        let logged = queue.compactMap { item -> FaultEvent? in
            if case .log(let event) = item.delivery { return event }
            return nil
        }
        queue.removeAll()
        queuedBytes = 0
        return logged
    }

    /// The proxy's compressor for this direction, with the window the
    /// receiver agreed to (RFC 7692 §7.1.2).
    mutating func deflater(_ parameters: DeflateParameters?) -> Deflater {
        if let ownDeflater { return ownDeflater }
        let bits = (direction == .clientToServer ? parameters?.clientMaxWindowBits : parameters?.serverMaxWindowBits) ?? 15
        let made = Deflater(windowBits: bits)
        ownDeflater = made
        return made
    }
}

private struct Item {
    var due: Timestamp
    var delivery: FaultSession.Delivery
    var size: Int
    /// The last bytes of a message: delivering them completes it.
    var endsMessage = false
}

private struct Frame {
    var header: FrameHeader
    var headerLength: Int
    /// The frame's bytes as they came.
    var raw: ByteBuffer

    /// The unmasked payload (RFC 6455 §5.3), made only when a rule needs it.
    var payload: [UInt8] {
        var payload = Array(raw.readableBytesView.dropFirst(headerLength))
        if let key = header.maskingKey {
            payload.withUnsafeMutableBytes { key.apply(to: $0, offset: 0) }
        }
        return payload
    }
}

extension Direction {
    fileprivate var laneIndex: Int { self == .clientToServer ? 0 : 1 }

    /// Who gets what travels this way.
    var receiverName: String { self == .clientToServer ? "server" : "client" }
}
