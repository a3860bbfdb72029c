/// One element of a `Sec-WebSocket-Extensions` header (RFC 6455 §9.1): a name
/// and its parameters, each with an optional value.
public struct WebSocketExtension: Hashable, Sendable {
    public struct Parameter: Hashable, Sendable {
        public var name: String
        public var value: String?
    }

    public var name: String
    public var parameters: [Parameter]

    public init(name: String, parameters: [Parameter] = []) {
        self.name = name
        self.parameters = parameters
    }

    public func parameter(_ name: String) -> Parameter? {
        parameters.first { $0.name.caseInsensitiveEquals(name) }
    }

    /// Parses every extension in the given header values, in order. Quoted
    /// parameter values are unquoted (RFC 6455 §9.1 allows quoted-string).
    public static func parse(_ values: [String]) -> [WebSocketExtension] {
        var result: [WebSocketExtension] = []
        for value in values {
            for element in splitOutsideQuotes(value, on: ",") {
                let parts = splitOutsideQuotes(element, on: ";").map { $0.trimmingSpaces() }
                guard let name = parts.first, !name.isEmpty else { continue }
                let parameters = parts.dropFirst().filter { !$0.isEmpty }.map { part -> Parameter in
                    guard let eq = part.firstIndex(of: "=") else { return Parameter(name: part, value: nil) }
                    var value = part[part.index(after: eq)...].trimmingSpaces()
                    if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                        value = String(value.dropFirst().dropLast())
                    }
                    return Parameter(name: part[..<eq].trimmingSpaces(), value: value)
                }
                result.append(WebSocketExtension(name: name, parameters: parameters))
            }
        }
        return result
    }

    private static func splitOutsideQuotes(_ text: String, on separator: Character) -> [String] {
        var parts: [String] = []
        var current = ""
        var quoted = false
        for character in text {
            if character == "\"" { quoted.toggle() }
            if character == separator && !quoted {
                parts.append(current)
                current = ""
            } else {
                current.append(character)
            }
        }
        parts.append(current)
        return parts
    }
}

extension WebSocketExtension: CustomStringConvertible {
    public var description: String {
        let rendered = parameters.map { parameter in
            parameter.value.map { "\(parameter.name)=\($0)" } ?? parameter.name
        }
        return ([name] + rendered).joined(separator: "; ")
    }
}
