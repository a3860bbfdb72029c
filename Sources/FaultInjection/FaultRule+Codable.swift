import Foundation
import WebSocketWire

/// A rule that cannot be used, with what is wrong in words a user can act on.
public struct FaultRuleError: Error, CustomStringConvertible {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// Any key of a flat rule object, so that unknown keys (a typo) are reported
/// instead of silently ignored.
struct RuleKey: CodingKey, Hashable {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

extension FaultRule: Codable {
    /// Keys every rule may have; each action adds its own.
    private static let commonKeys: Set<String> = [
        "id", "action", "direction", "match", "probability", "times", "at_ms", "every_ms",
    ]

    private static let actionKeys: [String: Set<String>] = [
        "delay": ["ms", "jitter_ms"],
        "stall": ["ms"],
        "timeout": ["ms"],
        "drop": [],
        "inject": ["text", "base64", "opcode", "code", "reason"],
        "rewrite": ["replace", "set", "set_base64"],
        "duplicate": ["copies"],
        "fragment": ["size"],
        "corrupt": ["kind"],
        "close": ["code", "reason"],
        "abort": [],
        "half-close": [],
        "limit": ["bytes", "messages"],
        "throttle": ["bytes_per_second"],
        "slow-close": ["ms"],
        "refuse": [],
    ]

    /// Bounds that keep times and counts far from overflowing: a million
    /// seconds is over eleven days.
    static let maximums: [String: Int] = [
        "ms": 1_000_000_000, "jitter_ms": 1_000_000_000, "at_ms": 1_000_000_000, "every_ms": 1_000_000_000,
        "copies": 1000,
    ]

    /// Decodes a rule; an id missing here is given by the ``RuleBook``.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: RuleKey.self)
        func string(_ key: String) throws -> String? { try c.decodeIfPresent(String.self, forKey: RuleKey(key)) }
        func int(_ key: String, minimum: Int = 0) throws -> Int? {
            guard let value = try c.decodeIfPresent(Int.self, forKey: RuleKey(key)) else { return nil }
            guard value >= minimum else { throw FaultRuleError("'\(key)' must be at least \(minimum), not \(value)") }
            let maximum = FaultRule.maximums[key] ?? Int.max
            guard value <= maximum else { throw FaultRuleError("'\(key)' must be at most \(maximum), not \(value)") }
            return value
        }
        guard let actionName = try string("action") else {
            throw FaultRuleError("a rule needs an 'action': one of \(FaultRule.actionKeys.keys.sorted().joined(separator: ", "))")
        }
        guard let allowed = FaultRule.actionKeys[actionName] else {
            throw FaultRuleError(
                "unknown action '\(actionName)'; actions are \(FaultRule.actionKeys.keys.sorted().joined(separator: ", "))"
            )
        }
        let unknown = c.allKeys.map(\.stringValue).filter { !FaultRule.commonKeys.contains($0) && !allowed.contains($0) }
        if !unknown.isEmpty {
            throw FaultRuleError(
                "'\(actionName)' rule: unknown key\(unknown.count > 1 ? "s" : "") \(unknown.sorted().map { "'\($0)'" }.joined(separator: ", "))"
            )
        }
        let action: Action
        switch actionName {
        case "delay":
            guard let ms = try int("ms") else { throw FaultRuleError("'delay' needs 'ms'") }
            action = .delay(milliseconds: ms, jitter: try int("jitter_ms") ?? 0)
        case "stall":
            action = .stall(milliseconds: try int("ms").flatMap { $0 == 0 ? nil : $0 })
        case "timeout":
            action = .timeout(milliseconds: try int("ms").flatMap { $0 == 0 ? nil : $0 })
        case "drop":
            action = .drop
        case "inject":
            action = .inject(try FaultRule.decodeMessage(c))
        case "rewrite":
            if c.contains(RuleKey("replace")) {
                let replace = try c.nestedContainer(keyedBy: RuleKey.self, forKey: RuleKey("replace"))
                guard let pattern = try replace.decodeIfPresent(String.self, forKey: RuleKey("pattern")) else {
                    throw FaultRuleError("'rewrite' 'replace' needs 'pattern' and 'with'")
                }
                let with = try replace.decodeIfPresent(String.self, forKey: RuleKey("with")) ?? ""
                action = .rewrite(.replace(try FaultRule.pattern(pattern, "replace.pattern"), with: with))
            } else if let text = try string("set") {
                action = .rewrite(.setText(text))
            } else if let base64 = try string("set_base64") {
                action = .rewrite(.setBinary(try FaultRule.base64(base64, "set_base64")))
            } else {
                throw FaultRuleError("'rewrite' needs 'replace' ({pattern, with}), 'set' or 'set_base64'")
            }
        case "duplicate":
            action = .duplicate(copies: try int("copies", minimum: 1) ?? 1)
        case "fragment":
            guard let size = try int("size", minimum: 1) else { throw FaultRuleError("'fragment' needs 'size' (payload bytes per frame)") }
            action = .fragment(size: size)
        case "corrupt":
            let kinds = Corruption.allCases.map(\.rawValue).joined(separator: ", ")
            guard let name = try string("kind") else { throw FaultRuleError("'corrupt' needs 'kind': one of \(kinds)") }
            guard let kind = Corruption(rawValue: name) else { throw FaultRuleError("unknown corrupt kind '\(name)'; kinds are \(kinds)") }
            action = .corrupt(kind)
        case "close":
            let code = try int("code") ?? 1000
            guard code <= 0xFFFF else { throw FaultRuleError("close code \(code) does not fit in 16 bits") }
            action = .close(code: UInt16(code), reason: try string("reason") ?? "")
        case "abort":
            action = .abort
        case "half-close":
            action = .halfClose
        case "limit":
            let bytes = try int("bytes")
            let messages = try int("messages")
            guard bytes != nil || messages != nil else { throw FaultRuleError("'limit' needs 'bytes' or 'messages'") }
            action = .limit(bytes: bytes, messages: messages)
        case "throttle":
            guard let rate = try int("bytes_per_second", minimum: 1) else { throw FaultRuleError("'throttle' needs 'bytes_per_second'") }
            action = .throttle(bytesPerSecond: rate)
        case "slow-close":
            guard let ms = try int("ms") else { throw FaultRuleError("'slow-close' needs 'ms'") }
            action = .slowClose(milliseconds: ms)
        default:
            action = .refuse
        }
        var direction = FaultDirection.both
        if let name = try string("direction") {
            guard let parsed = FaultDirection(rawValue: name) else {
                throw FaultRuleError("direction must be to-server, to-client or both, not '\(name)'")
            }
            direction = parsed
        }
        let probability = try c.decodeIfPresent(Double.self, forKey: RuleKey("probability")) ?? 1
        guard (0...1).contains(probability) else { throw FaultRuleError("probability must be between 0 and 1, not \(probability)") }
        self.init(
            id: try string("id") ?? "",
            action: action,
            direction: direction,
            match: c.contains(RuleKey("match")) ? try c.decode(FaultMatch.self, forKey: RuleKey("match")) : FaultMatch(),
            probability: probability,
            times: try int("times", minimum: 1),
            at: try int("at_ms"),
            every: try int("every_ms", minimum: 1)
        )
    }

    private static func decodeMessage(_ c: KeyedDecodingContainer<RuleKey>) throws -> InjectedMessage {
        let text = try c.decodeIfPresent(String.self, forKey: RuleKey("text"))
        let base64 = try c.decodeIfPresent(String.self, forKey: RuleKey("base64"))
        var opcode: WebSocketOpcode = base64 != nil ? .binary : .text
        if c.contains(RuleKey("opcode")) {
            opcode = try decodeOpcode(c, RuleKey("opcode"))
        }
        if opcode == .close {
            let code = try c.decodeIfPresent(Int.self, forKey: RuleKey("code")) ?? 1000
            guard (0...0xFFFF).contains(code) else { throw FaultRuleError("close code \(code) does not fit in 16 bits") }
            return .close(code: UInt16(code), reason: try c.decodeIfPresent(String.self, forKey: RuleKey("reason")) ?? "")
        }
        let payload = try base64.map { try FaultRule.base64($0, "base64") } ?? Array((text ?? "").utf8)
        if opcode.isControl && payload.count > 125 {
            throw FaultRuleError("a \(opcode.name) payload may hold at most 125 bytes (RFC 6455 §5.5), not \(payload.count)")
        }
        return InjectedMessage(opcode: opcode, payload: payload)
    }

    static func decodeOpcode(_ c: KeyedDecodingContainer<RuleKey>, _ key: RuleKey) throws -> WebSocketOpcode {
        if let number = try? c.decode(Int.self, forKey: key) {
            guard (0...15).contains(number) else { throw FaultRuleError("opcode \(number) is not in 0...15") }
            return WebSocketOpcode(rawValue: UInt8(number))
        }
        return try opcode(named: c.decode(String.self, forKey: key))
    }

    static func opcode(named name: String) throws -> WebSocketOpcode {
        switch name.lowercased() {
        case "continuation": return .continuation
        case "text": return .text
        case "binary": return .binary
        case "close": return .close
        case "ping": return .ping
        case "pong": return .pong
        default:
            if let number = UInt8(name), number < 16 { return WebSocketOpcode(rawValue: number) }
            throw FaultRuleError("unknown opcode '\(name)'; use text, binary, close, ping, pong or a number 0-15")
        }
    }

    static func pattern(_ source: String, _ key: String) throws -> FaultPattern {
        do {
            return try FaultPattern(source)
        } catch {
            throw FaultRuleError("'\(key)': '\(source)' is not a valid regular expression: \(error)")
        }
    }

    static func base64(_ text: String, _ key: String) throws -> [UInt8] {
        guard let data = Data(base64Encoded: text) else { throw FaultRuleError("'\(key)' is not valid base64") }
        return Array(data)
    }

    /// The same flat object the rule was read from (ids included), for
    /// `GET /rules`.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: RuleKey.self)
        try c.encode(id, forKey: RuleKey("id"))
        try c.encode(action.name, forKey: RuleKey("action"))
        try c.encode(direction.rawValue, forKey: RuleKey("direction"))
        switch action {
        case .delay(let ms, let jitter):
            try c.encode(ms, forKey: RuleKey("ms"))
            try c.encode(jitter, forKey: RuleKey("jitter_ms"))
        case .stall(let ms), .timeout(let ms):
            try c.encode(ms ?? 0, forKey: RuleKey("ms"))
        case .slowClose(let ms):
            try c.encode(ms, forKey: RuleKey("ms"))
        case .inject(let message):
            try c.encode(message.opcode.name, forKey: RuleKey("opcode"))
            if message.opcode == .text {
                try c.encode(String(decoding: message.payload, as: UTF8.self), forKey: RuleKey("text"))
            } else {
                try c.encode(Data(message.payload).base64EncodedString(), forKey: RuleKey("base64"))
            }
        case .rewrite(.replace(let pattern, let with)):
            try c.encode(["pattern": pattern.source, "with": with], forKey: RuleKey("replace"))
        case .rewrite(.setText(let text)):
            try c.encode(text, forKey: RuleKey("set"))
        case .rewrite(.setBinary(let bytes)):
            try c.encode(Data(bytes).base64EncodedString(), forKey: RuleKey("set_base64"))
        case .duplicate(let copies):
            try c.encode(copies, forKey: RuleKey("copies"))
        case .fragment(let size):
            try c.encode(size, forKey: RuleKey("size"))
        case .corrupt(let kind):
            try c.encode(kind.rawValue, forKey: RuleKey("kind"))
        case .close(let code, let reason):
            try c.encode(Int(code), forKey: RuleKey("code"))
            try c.encode(reason, forKey: RuleKey("reason"))
        case .limit(let bytes, let messages):
            try c.encodeIfPresent(bytes, forKey: RuleKey("bytes"))
            try c.encodeIfPresent(messages, forKey: RuleKey("messages"))
        case .throttle(let rate):
            try c.encode(rate, forKey: RuleKey("bytes_per_second"))
        case .drop, .abort, .halfClose, .refuse:
            break
        }
        try c.encode(match, forKey: RuleKey("match"))
        try c.encode(probability, forKey: RuleKey("probability"))
        try c.encodeIfPresent(times, forKey: RuleKey("times"))
        try c.encodeIfPresent(at, forKey: RuleKey("at_ms"))
        try c.encodeIfPresent(every, forKey: RuleKey("every_ms"))
    }
}

extension FaultMatch: Codable {
    private static let keys: Set<String> = ["opcode", "text", "nth", "every", "after_ms", "before_ms", "path", "connection"]

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: RuleKey.self)
        let unknown = c.allKeys.map(\.stringValue).filter { !FaultMatch.keys.contains($0) }
        if !unknown.isEmpty {
            throw FaultRuleError(
                "match: unknown key\(unknown.count > 1 ? "s" : "") \(unknown.sorted().map { "'\($0)'" }.joined(separator: ", ")); keys are \(FaultMatch.keys.sorted().joined(separator: ", "))"
            )
        }
        self.init()
        let opcodeKey = RuleKey("opcode")
        if c.contains(opcodeKey) {
            if let names = try? c.decode([String].self, forKey: opcodeKey) {
                opcodes = Set(try names.map { try FaultRule.opcode(named: $0).rawValue })
            } else if let numbers = try? c.decode([Int].self, forKey: opcodeKey) {
                opcodes = Set(
                    try numbers.map { number in
                        guard (0...15).contains(number) else { throw FaultRuleError("opcode \(number) is not in 0...15") }
                        return UInt8(number)
                    }
                )
            } else {
                opcodes = [try FaultRule.decodeOpcode(c, opcodeKey).rawValue]
            }
        }
        func int(_ key: String, minimum: Int) throws -> Int? {
            guard let value = try c.decodeIfPresent(Int.self, forKey: RuleKey(key)) else { return nil }
            guard value >= minimum else { throw FaultRuleError("match: '\(key)' must be at least \(minimum), not \(value)") }
            guard value <= 1_000_000_000 else { throw FaultRuleError("match: '\(key)' must be at most 1000000000, not \(value)") }
            return value
        }
        text = try c.decodeIfPresent(String.self, forKey: RuleKey("text")).map { try FaultRule.pattern($0, "match.text") }
        path = try c.decodeIfPresent(String.self, forKey: RuleKey("path")).map { try FaultRule.pattern($0, "match.path") }
        nth = try int("nth", minimum: 1)
        every = try int("every", minimum: 1)
        after = try int("after_ms", minimum: 0)
        before = try int("before_ms", minimum: 0)
        connection = try int("connection", minimum: 1)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: RuleKey.self)
        if let opcodes {
            try c.encode(opcodes.sorted().map { WebSocketOpcode(rawValue: $0).name }, forKey: RuleKey("opcode"))
        }
        try c.encodeIfPresent(text?.source, forKey: RuleKey("text"))
        try c.encodeIfPresent(nth, forKey: RuleKey("nth"))
        try c.encodeIfPresent(every, forKey: RuleKey("every"))
        try c.encodeIfPresent(after, forKey: RuleKey("after_ms"))
        try c.encodeIfPresent(before, forKey: RuleKey("before_ms"))
        try c.encodeIfPresent(path?.source, forKey: RuleKey("path"))
        try c.encodeIfPresent(connection, forKey: RuleKey("connection"))
    }
}
