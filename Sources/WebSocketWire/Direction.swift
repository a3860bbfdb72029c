/// Which way bytes travel on a connection.
public enum Direction: Hashable, Sendable, CaseIterable {
    case clientToServer
    case serverToClient

    public var opposite: Direction { self == .clientToServer ? .serverToClient : .clientToServer }

    /// The JSON name, also accepted by `--direction`.
    public var name: String { literalName.description }

    public var literalName: StaticString { self == .clientToServer ? "client-to-server" : "server-to-client" }

    /// RFC 6455 §5.1: clients mask every frame, servers never do.
    public var senderMasks: Bool { self == .clientToServer }
}
