import FaultInjection
import FuzzSupport
import WebSocketWire

/// One relayed connection in fault mode as a script: the rules in force, how
/// the connection starts, then what each side sends and what happens in
/// between. Built once per input into concrete ``Step``s (frames with their
/// final bytes, compressed with a real deflater), so that the same steps can
/// be fed whole and in pieces.
///
/// Layout (every byte string is a valid script; missing bytes read as 0):
///
/// - byte 0: bits 0–2 the number of rules; bit 3 rule ids by position (a
///   later `update` reuses an id for another rule, as the control API's
///   remove-then-add can), else ids name the table entry; bits 4–7 the
///   seed's low nibble. Rules live in a `RuleBook`, as the relay's do: an
///   update removes the rules that are gone or replaced and adds the new.
/// - byte 1: bits 0–2 the extension the 101 accepts (``Script/extensions``);
///   bits 3–4 how the connection starts: 0 a generated 101 first, 1 a
///   100 Continue and the 101 in two reads, 2 the script's own server bytes
///   (no generated response), 3 not an upgrade request (bytes pass raw);
///   bits 5–7 the piece size of the second, split feed
///   (``Script/pieceSizes``; at least 1/256 of all the bytes sent).
/// - byte 2: the seed's next byte.
/// - then two bytes per rule: an index into ``RuleTable`` and a modifier
///   (``RuleTable/rule(_:modifier:id:)``).
/// - then operations, each a byte `c` with the kind in bits 0–3 (11–15 are
///   0–4 again) and arguments in bits 4–7; bit 4 is the direction (0 client
///   to server) unless said otherwise. A payload `P` is one byte `p`: with
///   bit 7 set the next `p & 0x7F` input bytes, else ``Script/words``
///   `[p & 15]` repeated `(p >> 4 & 7) + 1` times.
///   - 0 raw bytes: the next byte + 1 bytes, as they are.
///   - 1 one frame: a byte `h` (opcode `h & 15`; bit 4 FIN clear; bit 5 RSV1;
///     bit 6 RSV2; bit 7 a 64-bit length), `P`; bit 5 of `c` masks it wrongly.
///   - 2 a whole data message: bit 5 binary, bit 6 compressed (permessage-
///     deflate, with the negotiated window and context takeover); a byte `f`
///     (`(f & 3) + 1` fragments; bit 2 a ping after the first, bit 3 a pong
///     before the last; bits 4–5 the masking key), `P`.
///   - 3 time: bits 5–6 of `c`: 0 a byte `t` of time (``Script/milliseconds``),
///     1 to the session's next wake-up, 2 to 1 ns before it, 3 one ns.
///   - 4 a control-API injection: bits 5–7 the opcode (``Script/injectOpcodes``), `P`
///     (control payloads cut to 125 bytes, as the API requires).
///   - 5 pause (bit 5 set) or resume.
///   - 6 the side ends: bit 5 entirely (the socket closed), else half-closed.
///   - 7 new rules: a byte (bits 0–2 the count), then two bytes per rule.
///   - 8 a frame too large to hold (passes as it arrives): a byte `v`
///     (bits 0–1 the length, ``Script/hugeLengths``; bits 2–3 the opcode:
///     binary, text without FIN, continuation, ping), `P` as its first bytes.
///   - 9 the last bytes a side sent, again: the next byte & 31, + 1 times.
///   - 10 a close frame: bits 5–7 the code (``Script/closeCodes``), `P` the reason.
struct Script {
    enum Step {
        case receive(Direction, [UInt8])
        /// Nanoseconds.
        case advance(Int64)
        /// To the session's next wake-up, this many nanoseconds off.
        case advanceToWakeUp(Int64)
        case inject(InjectedMessage, Direction)
        case pause(Bool, Direction)
        case end(Direction, full: Bool)
        case update([RulePick])
    }

    /// A rule as an input picks it: `source` names the table entry and the
    /// modifier, so that an update can tell a rule kept from one replaced.
    struct RulePick {
        var rule: FaultRule
        var source: String
    }

    enum Start: Int {
        case generated101 = 0
        case continueThen101
        case scripted
        case notUpgrade
    }

    /// Sec-WebSocket-Extensions of the generated 101, with what it means.
    static let extensions: [(header: String?, deflate: DeflateParameters?)] = {
        func p(_ serverNo: Bool, _ clientNo: Bool, _ serverBits: Int?, _ clientBits: Int?) -> DeflateParameters {
            var parameters = DeflateParameters(variant: .perMessage)
            parameters.serverNoContextTakeover = serverNo
            parameters.clientNoContextTakeover = clientNo
            parameters.serverMaxWindowBits = serverBits
            parameters.clientMaxWindowBits = clientBits
            return parameters
        }
        return [
            (nil, nil),
            ("permessage-deflate", p(false, false, nil, nil)),
            ("permessage-deflate; server_no_context_takeover; client_no_context_takeover", p(true, true, nil, nil)),
            ("permessage-deflate; server_max_window_bits=9; client_max_window_bits=8", p(false, false, 9, 8)),
            ("permessage-deflate; client_max_window_bits=10; server_no_context_takeover", p(true, false, nil, 10)),
            ("x-webkit-deflate-frame", nil),
            ("permessage-deflate; client_no_context_takeover; server_max_window_bits=12", p(false, true, 12, nil)),
            ("permessage-deflate; server_max_window_bits=99, x-unknown", p(false, false, nil, nil)),
        ]
    }()

    static let pieceSizes = [1, 2, 3, 5, 7, 16, 64, 1000]

    static let words: [[UInt8]] =
        [
            "a", "b", "x", "hello", "boom", "secret-", "ab", "Hello", #"{"type":"tick","n":1}"#, "é中😀", "", "bab",
            "ping", "aaaa", "The quick brown fox jumps over a lazy dog",
        ].map { Array($0.utf8) } + [[0xFF, 0xFE, 0xC0]]

    static let injectOpcodes: [WebSocketOpcode] = [
        .text, .binary, .ping, .pong, .close, WebSocketOpcode(rawValue: 3), WebSocketOpcode(rawValue: 0xB), .text,
    ]

    static let closeCodes: [UInt16] = [1000, 1001, 1005, 4000, 1002, 0, 65535, 3000]

    static let hugeLengths: [UInt64] = [
        UInt64(FaultSession.largestHeldFrame) + 1, 1 << 40, UInt64(Int64.max), UInt64.max,
    ]

    static let clockStart = Timestamp(nanoseconds: 1_700_000_000_000_000_000)
    /// Time the script may pass (15 minutes); steps past it do nothing.
    static let timeSpan: Int64 = 15 * 60 * 1_000_000_000

    static func milliseconds(_ t: UInt8) -> Int64 {
        t < 100 ? Int64(t) : t < 200 ? Int64(t - 100) * 50 : Int64(t - 200) * 1000
    }

    var start: Start
    var extensionIndex: Int
    var seed: UInt64
    var idsByPosition: Bool
    var pieceSize: Int
    var initialRules: [RulePick] = []
    var steps: [Step] = []

    // What the checks need to know about the input.
    /// Every rule that was ever in force.
    var traits = RuleTraits()
    /// The bytes before the first step that the session delivers unchanged
    /// (the generated responses).
    var handshakeResponse: [UInt8] = []
    /// Only whole, well-formed frames and messages went in this direction
    /// (after the generated handshake), so the output must be well-formed too.
    var clean: [Bool] = [true, true]
    /// The data messages sent in each direction, uncompressed, in order.
    var sentMessages: [[[UInt8]]] = [[], []]
    var controlInjections = 0
    /// Wire bytes the control-API injections can add, at most.
    var injectedAllowance = 0
    var injectsData = false
    var injectsReserved = false
    var fullClose = false
    var usesWakeUps = false
    var hugeFrames = false

    var deflate: DeflateParameters? {
        start == .generated101 || start == .continueThen101 ? Script.extensions[extensionIndex].deflate : nil
    }

    /// Whether the input starts with a response the checks can skip.
    var framingKnown: Bool { start == .generated101 || start == .continueThen101 }

    init(_ bytes: UnsafeRawBufferPointer) {
        var reader = FuzzReader(bytes)
        let flags = reader.byte() ?? 0
        let setup = reader.byte() ?? 0
        let ruleCount = Int(flags & 7)
        idsByPosition = flags & 8 != 0
        extensionIndex = Int(setup & 7)
        start = Start(rawValue: Int(setup >> 3 & 3))!
        pieceSize = Script.pieceSizes[Int(setup >> 5)]
        seed = UInt64(flags >> 4) | UInt64(reader.byte() ?? 0) << 4
        initialRules = readRules(&reader, count: ruleCount)

        switch start {
        case .generated101, .continueThen101:
            var response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            response += "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            if let header = Script.extensions[extensionIndex].header { response += "Sec-WebSocket-Extensions: \(header)\r\n" }
            response += "\r\n"
            let bytes = Array(response.utf8)
            if start == .continueThen101 {
                let interim = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)
                // The interim answer and half of the 101, then the rest.
                let cut = bytes.count / 2
                steps.append(.receive(.serverToClient, interim + bytes[..<cut]))
                steps.append(.receive(.serverToClient, Array(bytes[cut...])))
                handshakeResponse = interim + bytes
            } else {
                steps.append(.receive(.serverToClient, bytes))
                handshakeResponse = bytes
            }
        case .scripted, .notUpgrade:
            clean = [false, false]
        }

        var deflaters: [Deflater?] = [nil, nil]
        var lastReceive: [[UInt8]] = [[], []]
        var lastReceiveRepeatable = [true, true]
        var lastMessages: [[[UInt8]]] = [[], []]
        while let c = reader.byte() {
            var kind = c & 0x0F
            if kind > 10 { kind -= 11 }
            let direction: Direction = c & 0x10 == 0 ? .clientToServer : .serverToClient
            let lane = direction == .clientToServer ? 0 : 1
            func receive(_ bytes: [UInt8], clean isClean: Bool, repeatable: Bool = true, message: [UInt8]? = nil) {
                steps.append(.receive(direction, bytes))
                if !isClean { clean[lane] = false }
                if isClean, let message { sentMessages[lane].append(message) }
                lastReceive[lane] = bytes
                lastReceiveRepeatable[lane] = isClean && repeatable
                lastMessages[lane] = message.map { [$0] } ?? []
            }
            switch kind {
            case 0:
                let count = Int(reader.byte() ?? 0) + 1
                receive(reader.take(count), clean: false)
            case 1:
                let h = reader.byte() ?? 0
                let opcode = WebSocketOpcode(rawValue: h & 0x0F)
                let fin = h & 0x10 == 0
                let payload = Script.payload(&reader)
                var masked = direction.senderMasks
                if c & 0x20 != 0 { masked.toggle() }
                let bytes = Script.frame(
                    opcode,
                    payload,
                    fin: fin,
                    rsv1: h & 0x20 != 0,
                    rsv2: h & 0x40 != 0,
                    long: h & 0x80 != 0,
                    key: masked ? MaskingKey(0x37, 0xFA, 0x21, h) : nil
                )
                let known: Set<UInt8> = [1, 2, 8, 9, 10]
                let isClean =
                    known.contains(opcode.rawValue) && fin && h & 0x60 == 0 && c & 0x20 == 0
                    && (!opcode.isControl || payload.count <= 125)
                receive(bytes, clean: isClean, message: opcode.isControl ? nil : payload)
            case 2:
                let binary = c & 0x20 != 0
                let compressed = c & 0x40 != 0
                let f = reader.byte() ?? 0
                let plain = Script.payload(&reader)
                var wire = plain
                var withContext = false
                if compressed {
                    let parameters = deflate ?? DeflateParameters()
                    let bits = (direction == .clientToServer ? parameters.clientMaxWindowBits : parameters.serverMaxWindowBits) ?? 15
                    withContext = !parameters.noContextTakeover(for: direction)
                    let deflater = withContext ? (deflaters[lane] ?? Deflater(windowBits: bits)) : Deflater(windowBits: bits)
                    if withContext { deflaters[lane] = deflater }
                    wire = deflater.compressMessage(plain)
                    // zlib writes nothing for a second sync flush with no new
                    // input, so an empty message after another comes out
                    // empty; a sender writes an empty stored block (0x00,
                    // RFC 7692 §7.2.3.6), or the receiver's inflater stalls.
                    if wire.isEmpty { wire = [0x00] }
                }
                let fragments = Int(f & 3) + 1
                let key = direction.senderMasks ? MaskingKey(0x37, 0xFA, UInt8(f >> 4 & 3), 0x3D) : nil
                var out: [UInt8] = []
                for index in 0..<fragments {
                    let from = wire.count * index / fragments
                    let to = wire.count * (index + 1) / fragments
                    if index == fragments - 1 && index > 0 && f & 8 != 0 {
                        out += Script.frame(.pong, Array("pong".utf8), key: key)
                    }
                    out += Script.frame(
                        index == 0 ? (binary ? .binary : .text) : .continuation,
                        Array(wire[from..<to]),
                        fin: index == fragments - 1,
                        rsv1: index == 0 && compressed,
                        key: key
                    )
                    if index == 0 && fragments > 1 && f & 4 != 0 {
                        out += Script.frame(.ping, Array("mid".utf8), key: key)
                    }
                }
                receive(out, clean: !compressed || deflate != nil, repeatable: !withContext, message: plain)
            case 3:
                switch c >> 5 & 3 {
                case 0: steps.append(.advance(Script.milliseconds(reader.byte() ?? 0) * 1_000_000))
                case 1:
                    steps.append(.advanceToWakeUp(0))
                    usesWakeUps = true
                case 2:
                    steps.append(.advanceToWakeUp(-1))
                    usesWakeUps = true
                default: steps.append(.advance(1))
                }
            case 4:
                let opcode = Script.injectOpcodes[Int(c >> 5)]
                var payload = Script.payload(&reader)
                if opcode.isControl && payload.count > 125 { payload = Array(payload.prefix(125)) }
                steps.append(.inject(InjectedMessage(opcode: opcode, payload: payload), direction))
                controlInjections += 1
                injectedAllowance += payload.count + 14
                if !opcode.isControl { injectsData = true }
                if opcode.isReserved { injectsReserved = true }
            case 5:
                steps.append(.pause(c & 0x20 != 0, direction))
            case 6:
                let full = c & 0x20 != 0
                steps.append(.end(direction, full: full))
                if full { fullClose = true }
            case 7:
                let count = Int((reader.byte() ?? 0) & 7)
                steps.append(.update(readRules(&reader, count: count)))
            case 8:
                let v = reader.byte() ?? 0
                let length = Script.hugeLengths[Int(v & 3)]
                let (opcode, fin): (WebSocketOpcode, Bool) = [(.binary, true), (.text, false), (.continuation, true), (.ping, true)][
                    Int(v >> 2 & 3)
                ]
                var header = FrameHeader(
                    fin: fin,
                    rsv1: false,
                    rsv2: false,
                    rsv3: false,
                    opcode: opcode,
                    maskingKey: direction.senderMasks ? MaskingKey(1, 2, 3, 4) : nil,
                    payloadLength: length,
                    lengthEncoding: .extended64
                )
                header.lengthEncoding = .extended64
                receive(header.bytes + Script.payload(&reader), clean: false)
                hugeFrames = true
            case 9:
                let times = Int((reader.byte() ?? 0) & 31) + 1
                let bytes = lastReceive[lane]
                guard !bytes.isEmpty else { continue }
                let repeatable = lastReceiveRepeatable[lane]
                for _ in 0..<times {
                    steps.append(.receive(direction, bytes))
                }
                if !repeatable {
                    clean[lane] = false
                } else if clean[lane] {
                    for _ in 0..<times { sentMessages[lane] += lastMessages[lane] }
                }
            default:
                let code = Script.closeCodes[Int(c >> 5)]
                let reason = Script.payload(&reader)
                let payload = code == 1005 ? [] : [UInt8(code >> 8), UInt8(code & 0xFF)] + reason
                let key = direction.senderMasks ? MaskingKey(9, 8, 7, 6) : nil
                receive(Script.frame(.close, payload, key: key), clean: payload.count <= 125)
            }
        }
    }

    private mutating func readRules(_ reader: inout FuzzReader, count: Int) -> [RulePick] {
        var rules: [RulePick] = []
        for position in 0..<count {
            let index = reader.byte() ?? 0
            let modifier = reader.byte() ?? 0
            let source = "t\(Int(index) % RuleTable.rules.count)-\(modifier)"
            let id = idsByPosition ? "r\(position)" : source
            if rules.contains(where: { $0.rule.id == id }) { continue }
            let rule = RuleTable.rule(index, modifier: modifier, id: id)
            traits.add(rule)
            rules.append(RulePick(rule: rule, source: source))
        }
        return rules
    }

    static func payload(_ reader: inout FuzzReader) -> [UInt8] {
        let p = reader.byte() ?? 0
        if p & 0x80 != 0 { return reader.take(Int(p & 0x7F)) }
        let word = words[Int(p & 15)]
        return Array([[UInt8]](repeating: word, count: Int(p >> 4 & 7) + 1).joined())
    }

    /// RFC 6455 §5.2 frame bytes.
    static func frame(
        _ opcode: WebSocketOpcode,
        _ payload: [UInt8],
        fin: Bool = true,
        rsv1: Bool = false,
        rsv2: Bool = false,
        long: Bool = false,
        key: MaskingKey? = nil
    ) -> [UInt8] {
        let header = FrameHeader(
            fin: fin,
            rsv1: rsv1,
            rsv2: rsv2,
            rsv3: false,
            opcode: opcode,
            maskingKey: key,
            payloadLength: UInt64(payload.count),
            lengthEncoding: long ? .extended64 : FrameHeader.minimalEncoding(for: UInt64(payload.count))
        )
        var body = payload
        if let key { body.withUnsafeMutableBytes { key.apply(to: $0, offset: 0) } }
        return header.bytes + body
    }
}
