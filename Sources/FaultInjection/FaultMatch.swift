import WebSocketWire

/// Which messages a rule touches. Every condition given must hold; an empty
/// match takes every message of the rule's direction.
public struct FaultMatch: Sendable {
    /// Opcodes of the message (the first frame's, for a fragmented one).
    public var opcodes: Set<UInt8>?
    /// Searched in a text message's text (inflated when compressed).
    public var text: FaultPattern?
    /// Only the nth message that meets the other conditions, counting from 1.
    public var nth: Int?
    /// Only every nth such message.
    public var every: Int?
    /// Milliseconds after the upgrade before which nothing matches.
    public var after: Int?
    /// Milliseconds after the upgrade from which nothing matches.
    public var before: Int?
    /// Searched in the request target (path and query).
    public var path: FaultPattern?
    /// Only the connection with this number (the log's `connection`).
    public var connection: Int?

    public init() {}

    /// Conditions on the connection as a whole, known once its request is.
    func admits(connection id: Int, target: String) -> Bool {
        if let connection, connection != id { return false }
        if let path, !path.matches(target) { return false }
        return true
    }

    /// Conditions on one message, apart from the counting ones (nth, every).
    func admits(opcode: WebSocketOpcode, text messageText: () -> String?, sinceUpgrade milliseconds: Int64) -> Bool {
        if let opcodes, !opcodes.contains(opcode.rawValue) { return false }
        if let after, milliseconds < after { return false }
        if let before, milliseconds >= before { return false }
        if let text = self.text {
            guard let message = messageText(), text.matches(message) else { return false }
        }
        return true
    }

    /// Whether the count-th admitted message (from 1) is taken.
    func takes(count: Int) -> Bool {
        if let nth, count != nth { return false }
        if let every, every > 0, count % every != 0 { return false }
        return true
    }

    /// Conditions that only a message can meet, which make an inject rule
    /// fire after messages instead of on the clock.
    var concernsMessages: Bool {
        opcodes != nil || text != nil || nth != nil || every != nil
    }
}
