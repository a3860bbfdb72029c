import Dispatch
import FaultInjection
import Foundation
import Hummingbird
import Logging
import NIOCore
import Synchronization
import WebSocketWire

/// The runtime control API (`--control`): HTTP and JSON over a
/// ``FaultController``, so test suites in any language can list
/// connections, send and close, pause directions and change rules while
/// traffic flows. Served by Hummingbird; every route is a few lines that
/// translate JSON to a controller call.
public final class ControlServer: Sendable {
    /// The address actually bound (port 0 picks one).
    public let address: String
    private let task: Task<Void, Never>
    private let stopped = DispatchSemaphore(value: 0)

    public struct StartError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Binds and serves; returns once listening. `token`, when given, must
    /// come with every request as `Authorization: Bearer TOKEN`.
    public init(controller: FaultController, host: String, port: Int, token: String?, eventLoopGroup: EventLoopGroup) throws {
        let router = Router()
        router.add(middleware: JSONErrors())
        if let token { router.add(middleware: BearerToken(token: token)) }
        ControlServer.addRoutes(to: router, controller)
        let outcome = Mutex<Result<String, Error>?>(nil)
        let started = DispatchSemaphore(value: 0)
        var logger = Logger(label: "wsinspect.control")
        logger.logLevel = .critical
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port)),
            onServerRunning: { channel in
                let bound = channel.localAddress.map { address -> String in
                    let ip = address.ipAddress ?? host
                    return ip.contains(":") ? "[\(ip)]:\(address.port ?? port)" : "\(ip):\(address.port ?? port)"
                }
                outcome.withLock { $0 = .success(bound ?? "\(host):\(port)") }
                started.signal()
            },
            eventLoopGroupProvider: .shared(eventLoopGroup),
            logger: logger
        )
        let stopped = self.stopped
        task = Task {
            do {
                try await app.run()
            } catch {
                outcome.withLock { if $0 == nil { $0 = .failure(error) } }
                started.signal()
            }
            stopped.signal()
        }
        started.wait()
        switch outcome.withLock({ $0 })! {
        case .success(let address):
            self.address = address
        case .failure(let error):
            throw StartError(description: "cannot serve the control API on \(host):\(port): \(describeNetworkError(error))")
        }
    }

    /// Stops serving and waits (up to 5 s) until the server is down, so the
    /// event loops it shares can be shut down after.
    public func stop() {
        task.cancel()
        _ = stopped.wait(timeout: .now() + 5)
    }

    private static func addRoutes(to router: Router<BasicRequestContext>, _ controller: FaultController) {
        router.get("/connections") { _, _ in
            try json(.ok, await controller.connections())
        }
        router.post("/connections/:id/messages") { request, context in
            let id = try connectionID(context)
            let body = try await request.decode(as: MessageRequest.self, context: context)
            try await controller.send(try body.message(), connection: id, to: try direction(body.direction, allowBoth: false)[0])
            return try json(.accepted, ["queued": true])
        }
        router.post("/connections/:id/close") { request, context in
            let id = try connectionID(context)
            let body = try await decodeOptional(CloseRequest.self, request, context) ?? CloseRequest()
            let code = body.code ?? 1000
            guard (0...0xFFFF).contains(code) else { throw HTTPError(.badRequest, message: "close code \(code) does not fit in 16 bits") }
            try await controller.close(
                connection: id,
                code: UInt16(code),
                reason: body.reason ?? "",
                directions: try direction(body.direction ?? "both", allowBoth: true)
            )
            return try json(.accepted, ["queued": true])
        }
        for (route, paused) in [("pause", true), ("resume", false)] {
            router.post("/connections/:id/\(route)") { request, context in
                let id = try connectionID(context)
                let body = try await decodeOptional(DirectionRequest.self, request, context) ?? DirectionRequest()
                try await controller.setPaused(paused, connection: id, directions: try direction(body.direction ?? "both", allowBoth: true))
                return try json(.ok, ["paused": paused])
            }
        }
        router.get("/rules") { _, _ in
            try json(.ok, controller.rules.snapshot.rules)
        }
        router.post("/rules") { request, context in
            let buffer = try await request.body.collect(upTo: 1024 * 1024)
            let data = Data(buffer: buffer)
            let rules: [FaultRule]
            do {
                if let list = try? JSONDecoder().decode([FaultRule].self, from: data) {
                    rules = list
                } else {
                    rules = [try JSONDecoder().decode(FaultRule.self, from: data)]
                }
                return try json(.created, try controller.rules.add(rules))
            } catch let error as FaultRuleError {
                throw HTTPError(.badRequest, message: error.description)
            } catch let error as DecodingError {
                throw HTTPError(.badRequest, message: RuleFile.describe(error))
            }
        }
        router.delete("/rules/:id") { _, context in
            let id = try context.parameters.require("id")
            guard controller.rules.remove(id: id) else { throw HTTPError(.notFound, message: "no rule '\(id)'") }
            return Response(status: .noContent)
        }
    }

    private static func connectionID(_ context: BasicRequestContext) throws -> Int {
        guard let id = context.parameters.get("id", as: Int.self) else {
            throw HTTPError(.notFound, message: "connection ids are numbers")
        }
        return id
    }

    /// A body that may be left out entirely.
    private static func decodeOptional<T: Decodable>(_ type: T.Type, _ request: Request, _ context: BasicRequestContext) async throws -> T?
    {
        var request = request
        let buffer = try await request.collectBody(upTo: 64 * 1024)
        guard buffer.readableBytes > 0 else { return nil }
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer: buffer))
        } catch let error as DecodingError {
            throw HTTPError(.badRequest, message: RuleFile.describe(error))
        }
    }

    private static func direction(_ name: String, allowBoth: Bool) throws -> [Direction] {
        switch name {
        case "to-server": return [.clientToServer]
        case "to-client": return [.serverToClient]
        case "both" where allowBoth: return [.clientToServer, .serverToClient]
        default:
            throw HTTPError(.badRequest, message: "direction must be to-client or to-server\(allowBoth ? " or both" : ""), not '\(name)'")
        }
    }

    struct MessageRequest: Decodable {
        var direction: String
        var text: String?
        var base64: String?
        var opcode: OpcodeValue?

        func message() throws -> InjectedMessage {
            var opcode = self.opcode?.opcode ?? (base64 != nil ? .binary : .text)
            if text == nil && base64 == nil && opcode != .ping && opcode != .pong {
                throw HTTPError(.badRequest, message: "give 'text' or 'base64'")
            }
            var payload = Array((text ?? "").utf8)
            if let base64 {
                guard let data = Data(base64Encoded: base64) else { throw HTTPError(.badRequest, message: "'base64' is not valid base64") }
                payload = Array(data)
            }
            if opcode == .continuation { opcode = .text }
            if opcode.isControl && payload.count > 125 {
                throw HTTPError(.badRequest, message: "a \(opcode.name) payload may hold at most 125 bytes (RFC 6455 §5.5)")
            }
            return InjectedMessage(opcode: opcode, payload: payload)
        }
    }

    /// An opcode as a number (2) or a name ("binary", "ping").
    struct OpcodeValue: Decodable {
        var opcode: WebSocketOpcode

        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let number = try? c.decode(Int.self) {
                guard (0...15).contains(number) else { throw HTTPError(.badRequest, message: "opcode \(number) is not in 0...15") }
                opcode = WebSocketOpcode(rawValue: UInt8(number))
                return
            }
            let name = try c.decode(String.self)
            let named: [String: WebSocketOpcode] = ["text": .text, "binary": .binary, "ping": .ping, "pong": .pong, "close": .close]
            guard let value = named[name] else { throw HTTPError(.badRequest, message: "unknown opcode '\(name)'") }
            opcode = value
        }
    }

    struct CloseRequest: Decodable {
        var code: Int?
        var reason: String?
        var direction: String?
    }

    struct DirectionRequest: Decodable {
        var direction: String?
    }
}

/// A response with a JSON body.
private func json(_ status: HTTPResponse.Status, _ value: some Encodable) throws -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    var data = try encoder.encode(value)
    data.append(0x0A)
    return Response(
        status: status,
        headers: [.contentType: "application/json"],
        body: .init(byteBuffer: ByteBuffer(bytes: data))
    )
}

/// Every error answers with `{"error": "…"}`, and the controller's errors
/// with the status that fits them.
private struct JSONErrors: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError {
            return try json(error.status, ["error": error.body ?? error.status.reasonPhrase])
        } catch let error as FaultController.ControlError {
            let status: HTTPResponse.Status
            switch error.kind {
            case .unknownConnection: status = .notFound
            case .notUpgraded, .closed: status = .conflict
            }
            return try json(status, ["error": error.description])
        } catch let error as DecodingError {
            return try json(.badRequest, ["error": RuleFile.describe(error)])
        } catch {
            return try json(.badRequest, ["error": "\(error)"])
        }
    }
}

/// Requires `Authorization: Bearer TOKEN` on every request.
private struct BearerToken: RouterMiddleware {
    typealias Context = BasicRequestContext
    let token: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.headers[.authorization] == "Bearer \(token)" else {
            throw HTTPError(.unauthorized, message: "this control API needs 'Authorization: Bearer <token>' (--control-token)")
        }
        return try await next(request, context)
    }
}
