/// A fault the proxy applied on purpose (a rule or a control request), so
/// the log shows every change next to the frames the receiver then got.
public struct FaultEvent: Hashable, Sendable {
    public var connection: Int
    public var time: Timestamp
    /// The rule's id, or "control" for a control-API request.
    public var rule: String
    /// The action's name as rules spell it ("drop", "delay", …).
    public var action: String
    /// Which way the touched traffic travels.
    public var direction: Direction?
    /// The touched message's opcode, length and 1-based index in its
    /// direction, when the fault concerns one message.
    public var opcode: WebSocketOpcode?
    public var length: Int?
    public var message: Int?
    /// What happened, in words ("dropped pong, 4 bytes").
    public var detail: String

    public init(
        connection: Int,
        time: Timestamp,
        rule: String,
        action: String,
        direction: Direction?,
        opcode: WebSocketOpcode? = nil,
        length: Int? = nil,
        message: Int? = nil,
        detail: String
    ) {
        self.connection = connection
        self.time = time
        self.rule = rule
        self.action = action
        self.direction = direction
        self.opcode = opcode
        self.length = length
        self.message = message
        self.detail = detail
    }
}
