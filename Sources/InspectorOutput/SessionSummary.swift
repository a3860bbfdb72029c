/// The totals printed at the end of a run, whatever produced the events.
public struct SessionSummary: Sendable {
    public var packets: Int?
    public var bytes: UInt64?
    public var tcpConnections: Int?
    public var webSocketConnections = 0
    public var rejectedHandshakes = 0
    public var frames = 0
    public var messages = 0
    public var findings = 0
    public var gaps = 0
    public var lostBytes: UInt64 = 0
    public var truncatedPackets = 0
    /// Faults the proxy applied; `nil` where faults cannot happen (`read`).
    public var faults: Int?
    /// Packets passed over, by reason.
    public var skipped: [String: Int] = [:]
    /// Set when input stopped early (a truncated file), with where and why.
    public var stoppedEarly: String?
    /// Events a view's filters left out.
    public var filteredOut = 0

    public init() {}
}
