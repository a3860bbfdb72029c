/// The compression a handshake agreed on: permessage-deflate (RFC 7692 §7) or
/// the older per-frame x-webkit-deflate-frame that early browsers used.
public struct DeflateParameters: Hashable, Sendable {
    public enum Variant: String, Hashable, Sendable {
        /// RSV1 on a message's first frame marks the whole message compressed.
        case perMessage = "permessage-deflate"
        /// RSV1 on a frame marks that frame compressed on its own.
        case perFrame = "x-webkit-deflate-frame"
    }

    public var variant: Variant
    /// The server resets its compressor after every message (RFC 7692 §7.1.1.1).
    public var serverNoContextTakeover = false
    /// The client resets its compressor after every message (RFC 7692 §7.1.1.2).
    public var clientNoContextTakeover = false
    /// LZ77 window the server compresses with, 8–15 (RFC 7692 §7.1.2.1).
    public var serverMaxWindowBits: Int?
    /// LZ77 window the client compresses with, 8–15 (RFC 7692 §7.1.2.2).
    public var clientMaxWindowBits: Int?

    public init(variant: Variant = .perMessage) {
        self.variant = variant
    }

    /// The parameters of the first deflate extension the server accepted, with
    /// any problem in them; `nil` when the server accepted none.
    public static func negotiated(
        from accepted: [WebSocketExtension]
    ) -> (parameters: DeflateParameters, problems: [String])? {
        for element in accepted {
            let name = element.name.lowercased()
            guard let variant = Variant(rawValue: name) ?? (name == "deflate-frame" ? .perFrame : nil) else { continue }
            var parameters = DeflateParameters(variant: variant)
            var problems: [String] = []
            for parameter in element.parameters {
                switch parameter.name.lowercased() {
                case "server_no_context_takeover", "no_context_takeover":
                    parameters.serverNoContextTakeover = true
                case "client_no_context_takeover":
                    parameters.clientNoContextTakeover = true
                case "server_max_window_bits", "max_window_bits":
                    parameters.serverMaxWindowBits = windowBits(parameter, problems: &problems)
                case "client_max_window_bits":
                    // A response must give a value (RFC 7692 §7.1.2.2); a bare one means 15.
                    parameters.clientMaxWindowBits = windowBits(parameter, problems: &problems)
                default:
                    problems.append("unknown \(name) parameter \(parameter.name)")
                }
            }
            return (parameters, problems)
        }
        return nil
    }

    private static func windowBits(_ parameter: WebSocketExtension.Parameter, problems: inout [String]) -> Int {
        guard let text = parameter.value else { return 15 }
        guard let bits = Int(text), (8...15).contains(bits) else {
            problems.append("\(parameter.name)=\(text) is not in 8...15 (RFC 7692 §7.1.2)")
            return 15
        }
        return bits
    }

    /// Whether messages from this direction's sender reset their context.
    public func noContextTakeover(for direction: Direction) -> Bool {
        direction == .clientToServer ? clientNoContextTakeover : serverNoContextTakeover
    }

    /// Window the sender in `direction` compresses with; zlib's raw inflate
    /// accepts 9–15, and a window of 8 is inflated with 9 (zlib 1.2.9 onwards
    /// refuses 8, and a larger window still decodes a smaller one's output).
    public func inflateWindowBits(for direction: Direction) -> Int {
        let bits = (direction == .clientToServer ? clientMaxWindowBits : serverMaxWindowBits) ?? 15
        return max(9, bits)
    }
}
