import WebSocketWire

/// Rewrites a client's request head for the upstream (sans-IO): the Host
/// line names the upstream, the path gets the upstream's base, and an
/// X-Forwarded-For line may be added. Every other byte — header spelling,
/// spacing, order, line ends — goes out exactly as it came in.
struct RequestHeadRewriter {
    var upstream: UpstreamURL
    var forwardedFor: String?
    /// Turn an absolute-URI target into its path (forward-proxy requests).
    var originForm = false
    /// Leave the client's Host line alone (forward-proxy requests).
    var keepsHost = false

    /// `head` is the raw head, up to and including its blank line.
    func rewrite(_ head: [UInt8]) -> [UInt8] {
        var lines: [ArraySlice<UInt8>] = []
        var start = 0
        for index in head.indices where head[index] == 0x0A {
            lines.append(head[start...index])
            start = index + 1
        }
        guard lines.count >= 2 else { return head }
        let blank = lines.removeLast()
        let newline: [UInt8] = blank.first == 0x0D ? [0x0D, 0x0A] : [0x0A]
        var out: [UInt8] = []
        out.reserveCapacity(head.count + 64)
        out += rewriteRequestLine(lines[0])
        var wroteHost = false
        for line in lines.dropFirst() {
            if !keepsHost, let colon = line.firstIndex(of: UInt8(ascii: ":")),
                String(decoding: line[line.startIndex..<colon], as: UTF8.self).trimmingCharacters().lowercased() == "host"
            {
                if !wroteHost { out += Array("Host: \(upstream.hostHeader)".utf8) + newline }
                wroteHost = true
                continue
            }
            out += line
        }
        if !wroteHost && !keepsHost { out += Array("Host: \(upstream.hostHeader)".utf8) + newline }
        if let forwardedFor { out += Array("X-Forwarded-For: \(forwardedFor)".utf8) + newline }
        out += blank
        return out
    }

    /// Puts the upstream's base path in front of the request target, or
    /// reduces an absolute URI to its path.
    private func rewriteRequestLine(_ line: ArraySlice<UInt8>) -> [UInt8] {
        if originForm, let firstSpace = line.firstIndex(of: UInt8(ascii: " ")) {
            let rest = line[line.index(after: firstSpace)...]
            guard let targetEnd = rest.firstIndex(of: UInt8(ascii: " ")) else { return Array(line) }
            let target = String(decoding: rest[rest.startIndex..<targetEnd], as: UTF8.self)
            var path = "/"
            if let schemeEnd = target.range(of: "://") {
                let afterScheme = target[schemeEnd.upperBound...]
                if let slash = afterScheme.firstIndex(of: "/") { path = String(afterScheme[slash...]) }
            }
            return Array(line[...firstSpace]) + Array(path.utf8) + Array(rest[targetEnd...])
        }
        guard !upstream.basePath.isEmpty,
            let firstSpace = line.firstIndex(of: UInt8(ascii: " ")),
            line.index(after: firstSpace) < line.endIndex,
            line[line.index(after: firstSpace)] == UInt8(ascii: "/")
        else { return Array(line) }
        var out = Array(line[...firstSpace])
        out += Array(upstream.basePath.utf8)
        out += line[line.index(after: firstSpace)...]
        return out
    }
}

extension StringProtocol {
    fileprivate func trimmingCharacters() -> String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
