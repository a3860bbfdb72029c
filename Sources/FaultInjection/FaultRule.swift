import WebSocketWire

/// One fault: what to do (``Action``), to which traffic (``direction`` and
/// ``match``), how often (``probability``, ``times``) and, for faults that
/// need no message to trigger them, when (``at``, ``every``).
///
/// Rules files and the control API spell a rule as one flat object, e.g.
/// `{"id": "slow", "action": "delay", "ms": 200, "direction": "to-client"}`;
/// see ``FaultRule/init(from:)`` for the keys.
public struct FaultRule: Sendable {
    public enum Action: Sendable {
        /// Hold each matched message this long (plus up to `jitter`), keeping order.
        case delay(milliseconds: Int, jitter: Int)
        /// Stop forwarding the direction for a while (`nil`: for good); TCP stays open.
        case stall(milliseconds: Int?)
        /// Stop forwarding and close the connection after a while (`nil`: never).
        case timeout(milliseconds: Int?)
        case drop
        case inject(InjectedMessage)
        case rewrite(Rewrite)
        case duplicate(copies: Int)
        /// Re-frame the matched data message into frames of this many payload bytes.
        case fragment(size: Int)
        case corrupt(Corruption)
        /// Send a close frame to the direction's receiver(s) after the matched message.
        case close(code: UInt16, reason: String)
        /// TCP reset to both sides, no close frame.
        case abort
        /// TCP FIN to the direction's receiver only.
        case halfClose
        /// Close both sides once this many bytes or messages were forwarded.
        case limit(bytes: Int?, messages: Int?)
        case throttle(bytesPerSecond: Int)
        /// A TCP close from one side reaches the other this much later.
        case slowClose(milliseconds: Int)
        /// Matching connections are reset before the upstream is contacted.
        case refuse

        public var name: String {
            switch self {
            case .delay: return "delay"
            case .stall: return "stall"
            case .timeout: return "timeout"
            case .drop: return "drop"
            case .inject: return "inject"
            case .rewrite: return "rewrite"
            case .duplicate: return "duplicate"
            case .fragment: return "fragment"
            case .corrupt: return "corrupt"
            case .close: return "close"
            case .abort: return "abort"
            case .halfClose: return "half-close"
            case .limit: return "limit"
            case .throttle: return "throttle"
            case .slowClose: return "slow-close"
            case .refuse: return "refuse"
            }
        }

        /// Actions that happen on their own at a time, without a message.
        var canFireOnTime: Bool {
            switch self {
            case .inject, .close, .abort, .halfClose, .stall, .timeout: return true
            default: return false
            }
        }

        /// Actions that need the message's payload.
        var changesContent: Bool {
            switch self {
            case .rewrite, .duplicate, .fragment, .corrupt: return true
            default: return false
            }
        }

        /// Actions that hold for the whole direction rather than per message.
        var isStanding: Bool {
            switch self {
            case .limit, .throttle, .slowClose, .refuse: return true
            default: return false
            }
        }
    }

    public enum Rewrite: Sendable {
        /// Replace every match of the pattern in a text message; `$1` names groups.
        case replace(FaultPattern, with: String)
        case setText(String)
        case setBinary([UInt8])
    }

    /// Ways to break a frame on purpose, to test a peer's validation (RFC 6455 §5.2, §8.1).
    public enum Corruption: String, Sendable, CaseIterable {
        case invalidUTF8 = "invalid-utf8"
        case rsv1, rsv2, rsv3
        case reservedOpcode = "reserved-opcode"
        case unmasked, masked
        case oversizedControl = "oversized-control"
    }

    public var id: String
    public var action: Action
    public var direction: FaultDirection
    public var match: FaultMatch
    /// Chance that a matching message (or a timed firing) is faulted, decided
    /// with the seeded generator so a run replays exactly.
    public var probability: Double
    /// At most this many applications per connection.
    public var times: Int?
    /// For faults that fire on time: milliseconds after the upgrade.
    public var at: Int?
    /// For faults that fire on time: the period.
    public var every: Int?
    /// Told apart from every other rule of the run by the ``RuleBook`` that
    /// stores it, whatever its id.
    public internal(set) var serial = 0

    public init(
        id: String,
        action: Action,
        direction: FaultDirection = .both,
        match: FaultMatch = FaultMatch(),
        probability: Double = 1,
        times: Int? = nil,
        at: Int? = nil,
        every: Int? = nil
    ) {
        self.id = id
        self.action = action
        self.direction = direction
        self.match = match
        self.probability = probability
        self.times = times
        self.at = at
        self.every = every
    }

    /// Fires by the clock rather than on messages: a timed action with a time
    /// given, or an inject with no match at all (sent once, on upgrade).
    var firesOnTime: Bool {
        guard action.canFireOnTime else { return false }
        if at != nil || every != nil { return true }
        if case .inject = action { return !match.concernsMessages }
        return false
    }
}

/// A message a rule or a control request sends to one side.
public struct InjectedMessage: Sendable {
    public var opcode: WebSocketOpcode
    public var payload: [UInt8]

    public init(opcode: WebSocketOpcode, payload: [UInt8]) {
        self.opcode = opcode
        self.payload = payload
    }

    /// A close frame's body: the code in network order, then the reason (RFC 6455 §5.5.1).
    public static func close(code: UInt16, reason: String) -> InjectedMessage {
        InjectedMessage(opcode: .close, payload: [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8))
    }
}

/// Which traffic a rule concerns: what travels to the server, to the client, or both.
public enum FaultDirection: String, Sendable, CaseIterable {
    case toServer = "to-server"
    case toClient = "to-client"
    case both

    public func includes(_ direction: Direction) -> Bool {
        switch self {
        case .both: return true
        case .toServer: return direction == .clientToServer
        case .toClient: return direction == .serverToClient
        }
    }

    public var directions: [Direction] {
        Direction.allCases.filter(includes)
    }
}
