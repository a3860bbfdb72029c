import NIOCore

/// Decides, flush by flush, whether Nagle's algorithm (RFC 896) may hold
/// back a socket's small writes: the sans-IO half of `--nagle auto`. The
/// handler that writes to the socket tells it when the peer sent data and
/// how much it writes, and performs the ``Step`` it returns before each flush.
///
/// Why: a relay that sends every read at once (TCP_NODELAY) spends a segment,
/// and a wake-up of the receiving peer, on each small read. Under a pipeline
/// of small messages that is more segments than a relay with Nagle's
/// algorithm sends, such as socat by default, which gathers small writes
/// while an earlier small segment is unacknowledged. But Nagle's algorithm
/// waits for the peer's ACK, and a peer that has nothing to answer delays
/// its ACK (RFC 1122 4.2.3.2; Linux waits ~40 ms): a frame written as
/// header, then payload, or a message right after one the server leaves
/// unanswered, would wait that long.
///
/// So Nagle's algorithm is on only while the peer is behind: at least
/// ``flushesBeforeGathering`` flushes went to it since it last sent data.
/// A peer with that much to answer answers soon, and its answer carries
/// the ACK that frees what is held. The first writes after the peer spoke
/// (a header, a notification, one request) go out at once, and turning
/// Nagle's algorithm off again pushes out anything held (Linux's
/// TCP_NODELAY does). A held write still waits at most ``longestHold``:
/// the peer may be behind on requests it will never answer. And a flush
/// of ``largeFlush`` bytes or more goes out at once: it fills segments of
/// its own, so gathering would only hold back the end of a large message.
struct NagleSwitch {
    /// Flushes to a peer, since it last sent data, after which Nagle's
    /// algorithm gathers: two lets a frame's header and payload, or a
    /// notification and a request, each go out at once.
    static let flushesBeforeGathering = 2
    /// How long a write may be held for a delayed ACK before it is pushed.
    static let longestHold = TimeAmount.milliseconds(1)
    /// Bytes in one flush from which it is sent at once.
    static let largeFlush = 8 * 1024

    /// What the handler does before a flush.
    struct Step: Equatable {
        /// Set TCP_NODELAY to this (`false` turns Nagle's algorithm on;
        /// `true` turns it off and sends anything it held); `nil` leaves it.
        var noDelay: Bool?
        /// Arm a timer for ``longestHold`` that calls ``holdExpired()``.
        var armsHoldTimer = false

        /// Nothing to do but flush.
        static let none = Step()
    }

    private let policy: ProxyConfiguration.Nagle
    /// Flushes to the peer since it last sent data.
    private var unansweredFlushes = 0
    /// Whether the socket has Nagle's algorithm on now (TCP_NODELAY off).
    private(set) var gathers: Bool
    private var holdTimerArmed = false
    /// Bytes written since the last flush.
    private var unflushedBytes = 0

    /// `policy` as given by `--nagle`; the socket starts with TCP_NODELAY
    /// set accordingly (``ProxyConfiguration/Nagle/initialNoDelay``).
    init(policy: ProxyConfiguration.Nagle) {
        self.policy = policy
        self.gathers = !policy.initialNoDelay
    }

    /// The peer sent data: whatever it sent also acknowledged what it had.
    mutating func peerSent() {
        unansweredFlushes = 0
    }

    /// Bytes are written to the peer, to go with the next flush.
    mutating func willWrite(_ count: Int) {
        unflushedBytes += count
    }

    /// Before each flush to the peer; most flushes return ``Step/none``.
    mutating func willFlush() -> Step {
        defer { unflushedBytes = 0 }
        guard policy == .auto else { return Step() }
        let gather = unansweredFlushes >= Self.flushesBeforeGathering && unflushedBytes < Self.largeFlush
        unansweredFlushes = min(unansweredFlushes + 1, Self.flushesBeforeGathering)
        var step = Step()
        if gather != gathers {
            gathers = gather
            step.noDelay = !gather
        }
        if gathers && !holdTimerArmed {
            holdTimerArmed = true
            step.armsHoldTimer = true
        }
        return step
    }

    /// The timer armed by a ``Step`` fired: `true` if the handler should
    /// push out what Nagle's algorithm may still hold (TCP_NODELAY on, then
    /// off again).
    mutating func holdExpired() -> Bool {
        holdTimerArmed = false
        return gathers
    }
}

/// A handler whose socket's Nagle's algorithm a ``NagleSwitch`` runs: both
/// relay handlers, which share the flush below.
protocol NagleSwitched: AnyObject {
    var nagle: NagleSwitch { get set }
}

extension NagleSwitched {
    /// Carries out what ``NagleSwitch/willFlush()`` asks on the socket of
    /// `context`, then flushes it. Only a step that arms the hold timer
    /// builds a closure; it holds the handler strongly, for at most
    /// ``NagleSwitch/longestHold`` (a weak reference would slow every
    /// retain of the handler).
    func flushSwitchingNagle(_ context: ChannelHandlerContext) {
        let step = nagle.willFlush()
        if let noDelay = step.noDelay {
            context.channel.setNoDelay(noDelay)
        }
        if step.armsHoldTimer {
            let channel = context.channel
            context.eventLoop.assumeIsolated().scheduleTask(in: NagleSwitch.longestHold) {
                guard self.nagle.holdExpired() else { return }
                // Setting TCP_NODELAY sends what is held; clearing it gathers again.
                channel.setNoDelay(true)
                channel.setNoDelay(false)
            }
        }
        context.flush()
    }
}

extension Channel {
    fileprivate func setNoDelay(_ noDelay: Bool) {
        // A socket that is closing may refuse; it has nothing left to send.
        try? syncOptions?.setOption(.tcpOption(.tcp_nodelay), value: noDelay ? 1 : 0)
    }
}
