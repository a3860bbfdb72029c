/// The start line and header fields of an HTTP/1.x message (RFC 9112 §2–§5),
/// as far as a WebSocket handshake needs them.
public struct HTTPHead: Hashable, Sendable {
    public enum StartLine: Hashable, Sendable {
        case request(method: String, target: String, version: String)
        case response(version: String, status: Int, reason: String)
    }

    public struct Field: Hashable, Sendable {
        public var name: String
        public var value: String
    }

    public var startLine: StartLine
    public var fields: [Field]
    /// Lines ended by a bare LF instead of CRLF (RFC 9112 §2.2 tolerates it in
    /// recipients, but it is worth showing).
    public var usesBareLF: Bool

    /// The value of every field called `name`, case-insensitively, in order.
    public func values(_ name: String) -> [String] {
        fields.filter { $0.name.caseInsensitiveEquals(name) }.map(\.value)
    }

    public func first(_ name: String) -> String? {
        fields.first { $0.name.caseInsensitiveEquals(name) }?.value
    }

    /// Comma-separated list elements across every `name` field (RFC 9110 §5.6.1).
    public func listElements(_ name: String) -> [String] {
        values(name).flatMap { $0.split(separator: ",") }
            .map { $0.trimmingSpaces() }
            .filter { !$0.isEmpty }
    }

    public var contentLength: Int? {
        first("Content-Length").flatMap { Int($0.trimmingSpaces()) }
    }

    public enum ParseResult: Hashable, Sendable {
        case incomplete
        case invalid(String)
        case complete(HTTPHead, length: Int)
    }

    /// Heads larger than this are not plausible handshakes.
    public static let maximumLength = 64 * 1024

    static let methods = ["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"]

    /// Whether `bytes` could be the start of an HTTP request or response; cheap
    /// enough to run on every new TCP stream.
    public static func looksLikeStart(_ bytes: UnsafeRawBufferPointer) -> Bool {
        if bytes.isEmpty { return false }
        let prefix = String(decoding: bytes.prefix(8), as: UTF8.self)
        if "HTTP/1.".hasPrefix(prefix) || prefix.hasPrefix("HTTP/1.") { return true }
        return methods.contains { method in
            let candidate = method + " "
            return prefix.count >= candidate.count ? prefix.hasPrefix(candidate) : candidate.hasPrefix(prefix)
        }
    }

    /// Parses a head from the start of `bytes`; `length` counts the blank line.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> ParseResult {
        guard let end = headEnd(bytes) else {
            return bytes.count > maximumLength ? .invalid("no end of HTTP head within \(maximumLength) bytes") : .incomplete
        }
        // Split on LF bytes: in a Swift String "\r\n" is one Character, so
        // splitting text would miss CRLF line ends.
        var lines: [Substring] = []
        var usesBareLF = false
        var lineStart = 0
        for index in 0..<end.headerEnd where bytes[index] == 0x0A {
            var lineEnd = index
            if lineEnd > lineStart && bytes[lineEnd - 1] == 0x0D {
                lineEnd -= 1
            } else {
                usesBareLF = true
            }
            lines.append(Substring(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[lineStart..<lineEnd]), as: UTF8.self)))
            lineStart = index + 1
        }
        while lines.last?.isEmpty == true { lines.removeLast() }
        guard let first = lines.first else { return .invalid("empty HTTP head") }
        let parts = first.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        let startLine: StartLine
        if parts.count >= 2, parts[0].hasPrefix("HTTP/") {
            guard let status = Int(parts[1]) else { return .invalid("bad status line: \(first)") }
            startLine = .response(version: parts[0], status: status, reason: parts.count > 2 ? parts[2] : "")
        } else if parts.count == 3, parts[2].hasPrefix("HTTP/") {
            startLine = .request(method: parts[0], target: parts[1], version: parts[2])
        } else {
            return .invalid("bad start line: \(first)")
        }
        var fields: [Field] = []
        for line in lines.dropFirst() {
            if let firstChar = line.first, firstChar == " " || firstChar == "\t", !fields.isEmpty {
                // Obsolete line folding (RFC 9112 §5.2): join to the previous value.
                fields[fields.count - 1].value += " " + line.trimmingSpaces()
                continue
            }
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields.append(Field(name: String(line[..<colon]).trimmingSpaces(), value: line[line.index(after: colon)...].trimmingSpaces()))
        }
        return .complete(HTTPHead(startLine: startLine, fields: fields, usesBareLF: usesBareLF), length: end.total)
    }

    /// Finds the empty line that ends a head: CRLFCRLF, or LFLF from lenient senders.
    private static func headEnd(_ bytes: UnsafeRawBufferPointer) -> (headerEnd: Int, total: Int)? {
        var index = 0
        let count = bytes.count
        while index < count {
            if bytes[index] == 0x0A {
                if index + 1 < count && bytes[index + 1] == 0x0A { return (index + 1, index + 2) }
                if index + 2 < count && bytes[index + 1] == 0x0D && bytes[index + 2] == 0x0A { return (index + 1, index + 3) }
            }
            index += 1
        }
        return nil
    }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        var slice = Substring(self)
        while let c = slice.first, c == " " || c == "\t" || c == "\r" { slice.removeFirst() }
        while let c = slice.last, c == " " || c == "\t" || c == "\r" { slice.removeLast() }
        return String(slice)
    }

    func caseInsensitiveEquals(_ other: String) -> Bool {
        self.utf8.count == other.utf8.count && self.lowercased() == other.lowercased()
    }
}
