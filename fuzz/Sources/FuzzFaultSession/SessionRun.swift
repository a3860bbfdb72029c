import FaultInjection
import FuzzSupport
import NIOCore
import WebSocketWire

/// Masking keys for the session's own client frames: a counter, so that two
/// runs of one script mask alike.
final class KeySource {
    private var next: UInt32 = 0x1234_5678

    func key() -> MaskingKey {
        next = next &* 1_664_525 &+ 1_013_904_223
        return MaskingKey(rawValue: next)
    }
}

/// One script played against a ``FaultSession`` the way `FaultRelay` drives
/// it: after every input, `advance` then `nextDelivery` for both directions
/// until `nil`, then `nextEvent` until `nil`; a `termination` or a
/// `closeBoth` ends the connection (`abandon`), as does the second side to
/// close. What each side receives is collected, and the invariants that hold
/// whatever the input are checked after every pump.
struct SessionRun {
    let script: Script
    /// Feeds each `receive` in pieces of this size (draining after each), or whole.
    let pieceSize: Int?
    var session: FaultSession
    var now = Script.clockStart
    var fed: [[UInt8]] = [[], []]
    var delivered: [[UInt8]] = [[], []]
    /// Everything but bytes, per direction, in order.
    var ends: [[String]] = [[], []]
    var events = 0
    /// The relay would have torn the connection down (a termination or a `closeBoth`).
    var terminated: String?
    /// Both sides closed: the relay finished the connection.
    var finished = false
    var paused = [false, false]
    /// A side's socket: half-closed (no more input) or closed.
    var inputEnded = [false, false]
    var closed = [false, false]
    var successfulInjections = 0
    var lastMessages = [0, 0]
    /// Queues were dropped (a side closed entirely): delivery may stop short.
    var lostQueues = false
    /// The rules in force, as the control API keeps them (ids unique, each
    /// rule added gets a new serial), with the table source of each id.
    let book: RuleBook
    var sources: [String: String] = [:]

    init(_ script: Script, pieceSize: Int?) {
        self.script = script
        self.pieceSize = pieceSize
        let keys = KeySource()
        session = FaultSession(
            connection: 1,
            target: "/chat?room=1",
            isUpgradeRequest: script.start != .notUpgrade,
            seed: script.seed,
            maskingKey: { keys.key() }
        )
        do {
            book = try RuleBook()
        } catch {
            fatalError("an empty RuleBook: \(error)")
        }
        setRules(script.initialRules)
    }

    /// Makes `picks` the rules in force, as control-API calls would: a rule
    /// whose id now names another is removed, and added anew.
    mutating func setRules(_ picks: [Script.RulePick]) {
        let wanted = Dictionary(picks.map { ($0.rule.id, $0.source) }, uniquingKeysWith: { first, _ in first })
        for (id, source) in sources where wanted[id] != source {
            check(book.remove(id: id), "rule \(id) was not in the book")
            sources[id] = nil
        }
        let new = picks.filter { sources[$0.rule.id] == nil }
        do {
            try book.add(new.map(\.rule))
        } catch {
            fatalError("the rule book refused \(new.map(\.rule.id)): \(error)")
        }
        for pick in new { sources[pick.rule.id] = pick.source }
        session.update(rules: book.snapshot.rules, at: now)
    }

    var isOver: Bool { terminated != nil || finished }

    static func lane(_ direction: Direction) -> Int { direction == .clientToServer ? 0 : 1 }

    /// Whether what reaches each side must be exactly what the other sent.
    var transparent: Bool { !script.traits.any && script.controlInjections == 0 }

    mutating func play() {
        for step in script.steps {
            if isOver { break }
            perform(step)
        }
        guard !isOver else { return }
        // Wind down: everything resumes, both sides finish sending, and time
        // runs on through every wake-up (as the relay's timer would), then
        // far past the end of the script.
        for direction in Direction.allCases where paused[Self.lane(direction)] {
            perform(.pause(false, direction))
        }
        for direction in Direction.allCases where !inputEnded[Self.lane(direction)] && !isOver {
            perform(.end(direction, full: false))
        }
        let deadline = Timestamp(nanoseconds: Script.clockStart.nanoseconds + 2 * Script.timeSpan)
        var steps = 0
        while !isOver, steps < 256, let due = session.nextWakeUp, due.nanoseconds < Int64.max / 2, due <= deadline {
            now = max(now, due)
            pump()
            steps += 1
        }
        if !isOver {
            now = max(now, deadline)
            pump()
        }
    }

    mutating func perform(_ step: Script.Step) {
        if fuzzVerbose { say("at +\(Double(now.nanoseconds - Script.clockStart.nanoseconds) / 1e6) ms: \(describe(step))") }
        switch step {
        case .receive(let direction, let bytes):
            let lane = Self.lane(direction)
            guard !inputEnded[lane], !closed[lane] else { return }
            let size = pieceSize ?? bytes.count
            var offset = 0
            while offset < bytes.count && !isOver {
                let piece = bytes[offset..<min(bytes.count, offset + max(1, size))]
                offset += piece.count
                fed[lane] += piece
                session.receive(ByteBuffer(bytes: piece), from: direction, at: now)
                pump()
            }
        case .advance(let nanoseconds):
            guard now.nanoseconds + nanoseconds <= Script.clockStart.nanoseconds + Script.timeSpan else { return }
            now = Timestamp(nanoseconds: now.nanoseconds + nanoseconds)
            pump()
        case .advanceToWakeUp(let offset):
            guard let due = session.nextWakeUp, due.nanoseconds + offset <= Script.clockStart.nanoseconds + Script.timeSpan else { return }
            now = max(now, Timestamp(nanoseconds: due.nanoseconds + offset))
            pump()
        case .inject(let message, let direction):
            // FaultRelay.inject: refused before the upgrade, and by the session
            // when that side can take no more.
            guard session.isUpgraded else { return }
            if session.inject(message, to: direction, at: now) { successfulInjections += 1 }
            pump()
        case .pause(let pause, let direction):
            paused[Self.lane(direction)] = pause
            session.setPaused(pause, direction, at: now)
            pump()
        case .end(let direction, let full):
            let lane = Self.lane(direction)
            guard !closed[lane] else { return }
            if full {
                closeSide(sending: direction)
            } else if !inputEnded[lane] {
                inputEnded[lane] = true
                session.receiveEnd(from: direction, full: false, at: now)
                pump()
            }
        case .update(let picks):
            setRules(picks)
            pump()
        }
    }

    /// The socket of the side that sends `direction` closed (channelInactive).
    mutating func closeSide(sending direction: Direction) {
        let lane = Self.lane(direction)
        guard !closed[lane], !isOver else { return }
        closed[lane] = true
        inputEnded[lane] = true
        lostQueues = true
        session.receiveEnd(from: direction, full: true, at: now)
        pump()
        if closed[0] && closed[1] && !isOver {
            finished = true
            abandon()
        }
    }

    mutating func abandon() {
        for event in session.abandon() {
            check(event.time <= now, "abandoned event from the future: \(event)")
        }
        for direction in Direction.allCases {
            check(session.queuedBytes(direction) == 0, "\(direction.name): \(session.queuedBytes(direction)) bytes queued after abandon()")
            check(session.nextDelivery(direction, at: Timestamp(nanoseconds: .max)) == nil, "\(direction.name): a delivery after abandon()")
        }
        check(session.nextEvent() == nil, "an event after abandon()")
    }

    /// FaultRelay.pump, with the checks.
    mutating func pump() {
        guard !isOver else { return }
        session.advance(to: now)
        if let termination = session.termination {
            while let event = session.nextEvent() { note(event) }
            terminated = "\(termination)"
            abandon()
            return
        }
        var closing: [Direction] = []
        for direction in Direction.allCases {
            let lane = Self.lane(direction)
            while let delivery = session.nextDelivery(direction, at: now) {
                if fuzzVerbose { say("  \(direction.name) gets \(describe(delivery))") }
                switch delivery {
                case .bytes(let bytes):
                    check(bytes.readableBytes > 0 || script.traits.limitsBytes, "\(direction.name): an empty delivery")
                    let start = delivered[lane].count
                    delivered[lane] += bytes.readableBytesView
                    if script.framingKnown && direction == .serverToClient && start < script.handshakeResponse.count {
                        let end = min(delivered[lane].count, script.handshakeResponse.count)
                        check(
                            delivered[lane][start..<end].elementsEqual(script.handshakeResponse[start..<end]),
                            "the response head was not delivered as it came"
                        )
                    }
                    if transparent {
                        let end = delivered[lane].count
                        check(end <= fed[lane].count, "\(direction.name): \(end) bytes delivered, \(fed[lane].count) fed, without rules")
                        check(
                            delivered[lane][start..<end].elementsEqual(fed[lane][start..<end]),
                            "\(direction.name): bytes \(start)..<\(end) delivered differ from those fed, without rules"
                        )
                    }
                case .endOutput:
                    ends[lane].append("end-output@\(delivered[lane].count)")
                case .closeReceiver:
                    ends[lane].append("close-receiver@\(delivered[lane].count)")
                    // The receiver's socket closes: the relay hears that side
                    // go inactive, as a full close of what it sends.
                    closing.append(direction.opposite)
                case .closeBoth:
                    ends[lane].append("close-both@\(delivered[lane].count)")
                    terminated = "close-both (limit)"
                    abandon()
                    return
                case .log(let event):
                    note(event)
                }
            }
        }
        while let event = session.nextEvent() { note(event) }
        checkState()
        for side in closing { closeSide(sending: side) }
    }

    mutating func note(_ event: FaultEvent) {
        events += 1
        check(event.connection == 1, "event for connection \(event.connection)")
        check(event.time <= now, "event from the future: \(event.time.nanoseconds) > \(now.nanoseconds)")
        if fuzzVerbose { say("  event \(event.rule) \(event.action) \(event.direction?.name ?? "-"): \(event.detail)") }
    }

    /// What must hold after every pump.
    mutating func checkState() {
        for direction in Direction.allCases {
            let lane = Self.lane(direction)
            let statistics = session.statistics(direction)
            check(
                statistics.bytes == delivered[lane].count,
                "\(direction.name): statistics count \(statistics.bytes) bytes delivered, the relay got \(delivered[lane].count)"
            )
            check(statistics.paused == paused[lane], "\(direction.name): statistics say paused \(statistics.paused)")
            check(statistics.messages >= lastMessages[lane], "\(direction.name): delivered messages went down")
            lastMessages[lane] = statistics.messages
            check(session.queuedBytes(direction) >= 0, "\(direction.name): \(session.queuedBytes(direction)) bytes queued")
            // Bytes of the proxy's own making aside, nothing comes from nowhere.
            let keepsContext = script.start == .scripted || script.deflate.map { !$0.noContextTakeover(for: direction) } ?? false
            let recompressed = script.traits.breaksDeflateContext && keepsContext
            if !script.traits.adds && !recompressed {
                let allowance = fed[lane].count + script.injectedAllowance
                check(
                    delivered[lane].count <= allowance,
                    "\(direction.name): \(delivered[lane].count) bytes delivered, only \(fed[lane].count) fed (+ \(script.injectedAllowance) injectable)"
                )
            }
        }
        if fuzzVerbose {
            let due = session.nextWakeUp.map { "+\(Double($0.nanoseconds - Script.clockStart.nanoseconds) / 1e6) ms" } ?? "none"
            say(
                "  pumped at +\(Double(now.nanoseconds - Script.clockStart.nanoseconds) / 1e6) ms; queued \(Direction.allCases.map { session.queuedBytes($0) }); next wake-up \(due)"
            )
        }
        // The relay sleeps until nextWakeUp: one in the past means it would
        // spin (a zero-delay timer that finds nothing to do, again and again).
        if let due = session.nextWakeUp {
            check(due > now, "nextWakeUp \(due.nanoseconds) is not after now \(now.nanoseconds) once everything due was drained")
        }
    }

    /// The checks on what each side received in the end.
    func checkOutcome() {
        for direction in Direction.allCases {
            let lane = Self.lane(direction)
            if transparent && !lostQueues && !isOver {
                check(
                    delivered[lane] == fed[lane],
                    "\(direction.name): without rules \(fed[lane].count) bytes fed, \(delivered[lane].count) delivered"
                )
            }
            guard script.framingKnown && script.clean[lane] else { continue }
            var output = delivered[lane][...]
            if direction == .serverToClient {
                guard output.count >= script.handshakeResponse.count else { continue }
                output = output.dropFirst(script.handshakeResponse.count)
            }
            let checker = WireCheck(
                direction: direction,
                deflate: script.deflate,
                traits: script.traits,
                injectsReserved: script.injectsReserved,
                mayEndInsideAFrame: script.traits.limitsBytes
            )
            let received = checker.check(output)
            if script.traits.keepsMessages && !script.injectsData {
                // (A message that did not inflate ends the list: only the
                // known empty-deflate issue leaves one here.)
                let whole = received.compactMap { $0 }
                check(
                    (whole.count == received.count || knownIssues.contains("empty-deflate"))
                        && isSubsequence(whole, of: script.sentMessages[lane]),
                    "\(direction.name): the messages received (\(received.count)) are not among those sent (\(script.sentMessages[lane].count)), in order: "
                        + "received \(received.map { $0.map { String(decoding: $0.prefix(40), as: UTF8.self) } ?? "<not inflatable>" }), "
                        + "sent \(script.sentMessages[lane].map { String(decoding: $0.prefix(40), as: UTF8.self) })"
                )
            }
        }
    }

    func describe(_ step: Script.Step) -> String {
        switch step {
        case .receive(let direction, let bytes): return "\(direction.name) sends \(bytes.count) bytes \(hex(bytes))"
        case .advance(let nanoseconds): return "time +\(Double(nanoseconds) / 1e6) ms"
        case .advanceToWakeUp(let offset): return "time to the next wake-up \(offset) ns"
        case .inject(let message, let direction):
            return "control API injects \(message.opcode.name) of \(message.payload.count) bytes \(direction.name)"
        case .pause(let pause, let direction): return "\(pause ? "pause" : "resume") \(direction.name)"
        case .end(let direction, let full): return "the \(direction.name) sender \(full ? "closes" : "half-closes")"
        case .update(let picks): return "rules now \(picks.map { "\($0.rule.id) \($0.rule.action.name)" })"
        }
    }

    func describe(_ delivery: FaultSession.Delivery) -> String {
        switch delivery {
        case .bytes(let bytes): return "\(bytes.readableBytes) bytes \(hex(Array(bytes.readableBytesView)))"
        case .log(let event): return "log \(event.rule) \(event.action): \(event.detail)"
        default: return "\(delivery)"
        }
    }
}

func hex(_ bytes: [UInt8]) -> String {
    let shown = bytes.prefix(48).map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    return bytes.count > 48 ? shown + "…" : shown
}
