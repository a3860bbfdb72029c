/// A regular expression from a rule, kept with its source text so the rule
/// can be listed back exactly as it was given.
public struct FaultPattern: @unchecked Sendable {
    // Regex<AnyRegexOutput> is immutable after compilation; matching never
    // changes it, so sharing it across threads is safe.
    public let source: String
    let regex: Regex<AnyRegexOutput>

    public init(_ source: String) throws {
        self.source = source
        regex = try Regex(source)
    }

    public func matches(_ text: String) -> Bool {
        (try? regex.firstMatch(in: text)) != nil
    }

    /// Every match replaced by `template`, in which `$0`–`$9` name the match
    /// and its groups.
    public func replacingMatches(in text: String, with template: String) -> String {
        text.replacing(regex) { match in
            var out = ""
            var characters = template.makeIterator()
            while let character = characters.next() {
                guard character == "$" else {
                    out.append(character)
                    continue
                }
                guard let digit = characters.next() else {
                    out.append("$")
                    break
                }
                if let index = digit.wholeNumberValue, index < match.output.count {
                    if let substring = match.output[index].substring { out += substring }
                } else {
                    out.append("$")
                    out.append(digit)
                }
            }
            return out
        }
    }
}
