import FaultInjection
import NIOCore
import Synchronization
import WebSocketWire

/// Fault injection for a running proxy: the rules in force and the live
/// connections they act on. The control API is a thin HTTP skin over this
/// type, and Swift test suites that run the proxy in-process can use it
/// directly (`ProxyServer.faults`).
public final class FaultController: Sendable {
    /// The rules every connection follows; add and remove at any time.
    public let rules: RuleBook
    /// Seeds every probability and jitter decision: the same seed on the
    /// same traffic gives the same faults.
    public let seed: UInt64
    private let live = Mutex<[Int: LiveConnection]>([:])

    public init(rules: RuleBook, seed: UInt64) {
        self.rules = rules
        self.seed = seed
    }

    /// A relayed connection as the control API lists it.
    public struct ConnectionInfo: Sendable, Encodable {
        public struct DirectionInfo: Sendable, Encodable {
            public var messages: Int
            public var bytes: Int
            public var paused: Bool
        }

        public var id: Int
        public var client: String
        public var server: String
        public var path: String
        /// "handshake" until the server's 101, then "open", then "closing"
        /// once a side has closed or been sent a close frame.
        public var state: String
        public var toServer: DirectionInfo
        public var toClient: DirectionInfo

        enum CodingKeys: String, CodingKey {
            case id, client, server, path, state
            case toServer = "to_server"
            case toClient = "to_client"
        }
    }

    public struct ControlError: Error, CustomStringConvertible {
        public enum Kind: Sendable { case unknownConnection, notUpgraded, closed }
        public var kind: Kind
        public var description: String
    }

    private struct LiveConnection: Sendable {
        var eventLoop: EventLoop
        var relay: NIOLoopBound<FaultRelay>
    }

    func register(_ relay: FaultRelay, id: Int, on eventLoop: EventLoop) {
        live.withLock { $0[id] = LiveConnection(eventLoop: eventLoop, relay: NIOLoopBound(relay, eventLoop: eventLoop)) }
    }

    func unregister(id: Int) {
        _ = live.withLock { $0.removeValue(forKey: id) }
    }

    /// Runs `body` on the connection's event loop, with its relay.
    private func onConnection<T: Sendable>(_ id: Int, _ body: @escaping @Sendable (FaultRelay) throws -> T) async throws -> T {
        guard let connection = live.withLock({ $0[id] }) else {
            throw ControlError(kind: .unknownConnection, description: "no open connection \(id)")
        }
        return try await connection.eventLoop.submit { try body(connection.relay.value) }.get()
    }

    /// The connections being relayed now, in id order.
    public func connections() async -> [ConnectionInfo] {
        let all = live.withLock { Array($0) }
        var infos: [ConnectionInfo] = []
        for (_, connection) in all {
            if let info = try? await connection.eventLoop.submit({ connection.relay.value.info }).get() {
                infos.append(info)
            }
        }
        return infos.sorted { $0.id < $1.id }
    }

    /// Sends a message to one side of a connection, after any message being
    /// passed through (never inside one).
    public func send(_ message: InjectedMessage, connection id: Int, to direction: Direction) async throws {
        try await onConnection(id) { relay in try relay.inject(message, to: direction) }
    }

    /// Sends a close frame with this code and reason to the given sides.
    public func close(connection id: Int, code: UInt16, reason: String, directions: [Direction]) async throws {
        try await onConnection(id) { relay in
            for direction in directions {
                try relay.inject(.close(code: code, reason: reason), to: direction)
            }
        }
    }

    /// Holds (or releases, in order) the traffic of the given directions.
    public func setPaused(_ paused: Bool, connection id: Int, directions: [Direction]) async throws {
        try await onConnection(id) { relay in
            for direction in directions { relay.setPaused(paused, direction) }
        }
    }
}
