import FaultInjection
import Foundation
import WebSocketWire

/// The rules an input picks from: every action, timed and message-triggered,
/// with sane values (milliseconds, sizes), spelled as a rules file spells
/// them and parsed once through `RuleFile.parse`. A pick is an index into
/// this table and a modifier byte (``RuleTable/rule(_:modifier:id:)``).
enum RuleTable {
    static let sources: [String] = [
        // 0–2 drop
        #"{"action": "drop"}"#,
        #"{"action": "drop", "match": {"text": "^b"}}"#,
        #"{"action": "drop", "match": {"nth": 2}}"#,
        // 3–4 delay, with jitter
        #"{"action": "delay", "ms": 50}"#,
        #"{"action": "delay", "ms": 20, "jitter_ms": 30, "probability": 0.5}"#,
        // 5–7 stall: at a message, on time, for good
        #"{"action": "stall", "ms": 100, "match": {"nth": 1}}"#,
        #"{"action": "stall", "ms": 200, "at_ms": 0}"#,
        #"{"action": "stall", "match": {"text": "x"}}"#,
        // 8–9 timeout: at a message (closing), on time (never closing)
        #"{"action": "timeout", "ms": 300, "match": {"nth": 3}}"#,
        #"{"action": "timeout", "at_ms": 50}"#,
        // 10–13 inject: once at upgrade, every period, after a match, a close every period
        #"{"action": "inject", "text": "hi", "at_ms": 10}"#,
        #"{"action": "inject", "opcode": "ping", "text": "hb", "every_ms": 40, "times": 5}"#,
        #"{"action": "inject", "base64": "AAEC/w==", "match": {"opcode": "text"}}"#,
        #"{"action": "inject", "opcode": "close", "code": 4001, "reason": "tick", "every_ms": 500}"#,
        // 14–16 rewrite: replace, set text, set binary
        #"{"action": "rewrite", "replace": {"pattern": "a(.)", "with": "$1$1$9$"}}"#,
        #"{"action": "rewrite", "set": "Howdy"}"#,
        #"{"action": "rewrite", "set_base64": "AAEC/w=="}"#,
        // 17 duplicate
        #"{"action": "duplicate", "copies": 2}"#,
        // 18–19 fragment
        #"{"action": "fragment", "size": 1}"#,
        #"{"action": "fragment", "size": 3}"#,
        // 20–27 corrupt, every kind
        #"{"action": "corrupt", "kind": "invalid-utf8"}"#,
        #"{"action": "corrupt", "kind": "rsv1"}"#,
        #"{"action": "corrupt", "kind": "rsv2"}"#,
        #"{"action": "corrupt", "kind": "rsv3"}"#,
        #"{"action": "corrupt", "kind": "reserved-opcode"}"#,
        #"{"action": "corrupt", "kind": "unmasked"}"#,
        #"{"action": "corrupt", "kind": "masked"}"#,
        #"{"action": "corrupt", "kind": "oversized-control"}"#,
        // 28–29 close: after a match, on time
        #"{"action": "close", "code": 4000, "reason": "bye", "match": {"text": "x"}}"#,
        #"{"action": "close", "at_ms": 100}"#,
        // 30–31 abort: at a match, on time
        #"{"action": "abort", "match": {"text": "boom"}}"#,
        #"{"action": "abort", "at_ms": 250}"#,
        // 32–33 half-close: after a match, on time
        #"{"action": "half-close", "match": {"nth": 2}}"#,
        #"{"action": "half-close", "at_ms": 30}"#,
        // 34–36 limit: bytes, messages, one byte
        #"{"action": "limit", "bytes": 100}"#,
        #"{"action": "limit", "messages": 3}"#,
        #"{"action": "limit", "bytes": 1, "direction": "to-client"}"#,
        // 37–38 throttle
        #"{"action": "throttle", "bytes_per_second": 1000}"#,
        #"{"action": "throttle", "bytes_per_second": 10}"#,
        // 39 slow-close
        #"{"action": "slow-close", "ms": 100}"#,
        // 40 refuse (decided by the relay before a session exists; a session ignores it)
        #"{"action": "refuse"}"#,
        // 41–49 more matches: every, opcodes, control frames, time windows, path, connection
        #"{"action": "inject", "text": "after", "match": {"every": 2, "opcode": "binary"}, "direction": "to-client"}"#,
        #"{"action": "delay", "ms": 30, "match": {"opcode": ["ping", "pong"]}}"#,
        #"{"action": "drop", "match": {"opcode": ["ping", "pong"]}}"#,
        #"{"action": "duplicate", "copies": 1, "match": {"opcode": "close"}}"#,
        #"{"action": "rewrite", "replace": {"pattern": ".", "with": ""}, "match": {"text": "."}}"#,
        #"{"action": "drop", "match": {"after_ms": 100, "before_ms": 1000}}"#,
        #"{"action": "drop", "match": {"path": "^/chat", "connection": 1, "nth": 1}}"#,
        #"{"action": "drop", "match": {"connection": 2}}"#,
        #"{"action": "fragment", "size": 2, "probability": 0.5, "match": {"opcode": "text"}}"#,
        // 50–53 combinations that touch compressed traffic and the close handshake
        #"{"action": "rewrite", "set": "", "match": {"opcode": "text", "nth": 2}}"#,
        #"{"action": "corrupt", "kind": "invalid-utf8", "match": {"opcode": "binary"}}"#,
        #"{"action": "inject", "opcode": "pong", "at_ms": 0, "direction": "to-server"}"#,
        #"{"action": "half-close", "every_ms": 100, "times": 2, "direction": "to-server"}"#,
    ]

    static let rules: [FaultRule] = sources.map { source in
        do {
            let parsed = try RuleFile.parse(Data("[\(source)]".utf8), yaml: false).rules
            guard parsed.count == 1 else { fatalError("rule table entry is not one rule: \(source)") }
            return parsed[0]
        } catch {
            fatalError("rule table entry does not parse: \(source): \(error)")
        }
    }

    /// Table entry `index` (modulo the table) changed by `modifier`:
    /// bits 0–1 probability (as given, 0.5, 0, 0.25); bits 2–3 direction (as
    /// given, both, to-server, to-client); bits 4–5 `times` (as given, 1, 2,
    /// 3); bits 6–7 the match (as given, `nth` 2, `every` 2, text only).
    static func rule(_ index: UInt8, modifier: UInt8, id: String) -> FaultRule {
        var rule = rules[Int(index) % rules.count]
        rule.id = id
        switch modifier & 3 {
        case 1: rule.probability = 0.5
        case 2: rule.probability = 0
        case 3: rule.probability = 0.25
        default: break
        }
        switch modifier >> 2 & 3 {
        case 1: rule.direction = .both
        case 2: rule.direction = .toServer
        case 3: rule.direction = .toClient
        default: break
        }
        if modifier >> 4 & 3 != 0 { rule.times = Int(modifier >> 4 & 3) }
        switch modifier >> 6 {
        case 1: rule.match.nth = 2
        case 2: rule.match.every = 2
        case 3: rule.match.opcodes = [WebSocketOpcode.text.rawValue]
        default: break
        }
        return rule
    }
}

/// What a set of rules can do to the checks (``SessionRun``).
struct RuleTraits {
    /// Anything at all.
    var any = false
    /// Adds bytes of its own making (injections, copies, rewrites, frame
    /// headers of re-framing, corruptions).
    var adds = false
    /// Drops or corrupts a compressed message (the proxy compresses itself
    /// from then on, with output of its own size).
    var breaksDeflateContext = false
    /// Holds a direction (stall, timeout) or ends the connection.
    var holds = false
    var throttles = false
    var limitsBytes = false
    /// Corruptions, per kind.
    var corruptions: Set<FaultRule.Corruption> = []
    /// Only drop, delay, stall, timeout, fragment and standing rules:
    /// what the receiver gets is a subsequence of what was sent, message for
    /// message.
    var keepsMessages = true
    /// Injects data messages (text, binary, reserved) of its own.
    var injectsData = false
    var injectsReserved = false
    /// Inject or close rules: messages of the proxy's own making.
    var injectsAnything = false

    mutating func add(_ rule: FaultRule) {
        any = true
        switch rule.action {
        case .drop:
            breaksDeflateContext = true
        case .delay, .slowClose, .refuse:
            break
        case .stall, .timeout:
            holds = true
        case .abort:
            holds = true
        case .throttle:
            throttles = true
        case .limit(let bytes, _):
            if bytes != nil { limitsBytes = true }
        case .halfClose:
            break
        case .fragment:
            adds = true
        case .inject(let message):
            adds = true
            injectsAnything = true
            keepsMessages = false
            if !message.opcode.isControl { injectsData = true }
            if message.opcode.isReserved { injectsReserved = true }
        case .close:
            adds = true
            injectsAnything = true
            keepsMessages = false
        case .rewrite, .duplicate:
            adds = true
            keepsMessages = false
            breaksDeflateContext = true
        case .corrupt(let kind):
            adds = true
            keepsMessages = false
            breaksDeflateContext = true
            corruptions.insert(kind)
        }
    }
}
