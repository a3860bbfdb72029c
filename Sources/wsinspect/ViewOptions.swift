import ArgumentParser
import InspectorOutput
import WebSocketWire

#if canImport(Glibc)
import Glibc
#endif

/// How events are shown and which ones; shared by `read` and `capture`.
struct ViewOptions: ParsableArguments {
    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text
        case jsonl
    }

    enum ColorMode: String, ExpressibleByArgument, CaseIterable {
        case auto
        case always
        case never
    }

    @Option(name: .long, help: "Output format: text (one line per frame) or jsonl (one JSON object per event).")
    var format: Format = .text

    @Option(name: .long, help: "Colour the text view: auto (when stdout is a terminal and NO_COLOR is unset), always, never.")
    var color: ColorMode = .auto

    @Flag(name: .long, help: "Show assembled (and inflated) messages instead of frames.")
    var messages = false

    @Flag(name: .long, help: "Pretty-print JSON text payloads.")
    var pretty = false

    @Flag(name: .customShort("x"), help: "Add a full hex dump of each payload.")
    var hexDump = false

    @Option(name: .long, help: "Show only one direction: client-to-server (c2s) or server-to-client (s2c).")
    var direction: String?

    @Option(
        name: .long,
        parsing: .unconditional,
        help: "Show only these opcodes: names (text, binary, close, ping, pong, continuation) or numbers, comma-separated."
    )
    var opcode: String?

    @Option(name: .long, help: "Show only text frames and messages whose payload matches this regular expression.")
    var grep: String?

    @Option(name: .long, help: "Show only these connections (numbers as printed, comma-separated).")
    var connection: String?

    @Flag(name: .long, help: "Hide ping and pong frames.")
    var noControl = false

    func validate() throws {
        _ = try makeFilter()
    }

    func makeFilter() throws -> EventFilter {
        var filter = EventFilter()
        filter.hideControlFrames = noControl
        if let direction {
            switch direction.lowercased() {
            case "client-to-server", "c2s", "client": filter.directions = [.clientToServer]
            case "server-to-client", "s2c", "server": filter.directions = [.serverToClient]
            default: throw ValidationError("--direction must be client-to-server (c2s) or server-to-client (s2c), not '\(direction)'")
            }
        }
        if let opcode {
            var set = Set<WebSocketOpcode>()
            for item in opcode.split(separator: ",").map({ $0.trimmingCharacters() }) {
                let names: [String: UInt8] = ["continuation": 0, "cont": 0, "text": 1, "binary": 2, "close": 8, "ping": 9, "pong": 10]
                if let value = names[item.lowercased()] ?? UInt8(item).flatMap({ $0 < 16 ? $0 : nil })
                    ?? (item.lowercased().hasPrefix("0x") ? UInt8(item.dropFirst(2), radix: 16).flatMap({ $0 < 16 ? $0 : nil }) : nil)
                {
                    set.insert(WebSocketOpcode(rawValue: value))
                } else {
                    throw ValidationError("--opcode: '\(item)' is not an opcode name or a number from 0 to 15")
                }
            }
            filter.opcodes = set
        }
        if let connection {
            var set = Set<Int>()
            for item in connection.split(separator: ",") {
                guard let number = Int(item.trimmingCharacters()), number > 0 else {
                    throw ValidationError("--connection: '\(item)' is not a connection number")
                }
                set.insert(number)
            }
            filter.connections = set
        }
        if let grep {
            do {
                filter.pattern = try Regex(grep)
            } catch {
                throw ValidationError("--grep: '\(grep)' is not a valid regular expression: \(error)")
            }
        }
        return filter
    }

    func textOptions() -> TextFormatter.Options {
        var options = TextFormatter.Options()
        switch color {
        case .always: options.color = true
        case .never: options.color = false
        case .auto:
            let noColor = getenv("NO_COLOR").map { String(cString: $0).isEmpty == false } ?? false
            options.color = isatty(STDOUT_FILENO) == 1 && !noColor
        }
        options.messages = messages
        options.prettyJSON = pretty
        options.hexDump = hexDump
        return options
    }
}

extension StringProtocol {
    func trimmingCharacters() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
