/// The events a sans-IO decoder has produced and its caller has not taken yet.
///
/// Callers take them one at a time (``next()``) or all at once
/// (``take(into:)``). Taking all into an empty array swaps storage, so an event
/// passes from the observer to the capture decoder without a reference-count
/// operation; a per-event queue cost about a tenth of `wsinspect read`'s time.
public struct EventQueue: Sendable {
    /// How many events of the kinds a summary counts were ever appended.
    public struct Tally: Hashable, Sendable {
        public var opened = 0
        public var rejected = 0
        public var frames = 0
        public var messages = 0
        public var gaps = 0
        public var lostBytes: UInt64 = 0
        public init() {}
    }

    private var events: [InspectorEvent] = []
    /// Events before this index went out through ``next()``.
    private var taken = 0
    /// Counted here, where the event is owned, so that callers need not walk
    /// the events again (and reference-count each) to count them.
    public private(set) var tally = Tally()

    public init() {}

    public var isEmpty: Bool { taken == events.count }

    /// Events not yet taken.
    public var count: Int { events.count - taken }

    public mutating func append(_ event: consuming InspectorEvent) {
        switch event {
        case .connectionOpened: tally.opened += 1
        case .handshakeRejected: tally.rejected += 1
        case .frame: tally.frames += 1
        case .message: tally.messages += 1
        case .gap(let gap):
            tally.gaps += 1
            tally.lostBytes += gap.byteCount
        case .finding, .fault, .connectionClosed: break
        }
        events.append(event)
    }

    public mutating func next() -> InspectorEvent? {
        guard taken < events.count else {
            if taken > 0 {
                events.removeAll(keepingCapacity: true)
                taken = 0
            }
            return nil
        }
        taken += 1
        return events[taken - 1]
    }

    /// Moves every event not yet taken, in order, to the end of `destination`.
    public mutating func take(into destination: inout [InspectorEvent]) {
        if taken == 0 && destination.isEmpty {
            swap(&events, &destination)
        } else {
            destination.append(contentsOf: events[taken...])
            events.removeAll(keepingCapacity: true)
        }
        taken = 0
    }

    /// Moves every event not yet taken to the end of `destination` (whose
    /// tally does not count them: they were counted here).
    public mutating func take(into destination: inout EventQueue) {
        if destination.isEmpty {
            destination.events.removeAll(keepingCapacity: true)
            destination.taken = 0
        }
        take(into: &destination.events)
    }
}

extension EventQueue.Tally {
    /// What `self` counted after `earlier` (an earlier tally of the same queue).
    public func since(_ earlier: EventQueue.Tally) -> EventQueue.Tally {
        var difference = EventQueue.Tally()
        difference.opened = opened - earlier.opened
        difference.rejected = rejected - earlier.rejected
        difference.frames = frames - earlier.frames
        difference.messages = messages - earlier.messages
        difference.gaps = gaps - earlier.gaps
        difference.lostBytes = lostBytes - earlier.lostBytes
        return difference
    }
}
