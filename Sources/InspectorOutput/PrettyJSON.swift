import Foundation

/// Re-indents a JSON text payload for `--pretty`; `nil` when it is not JSON.
enum PrettyJSON {
    static func format(_ text: String) -> String? {
        let trimmed = text.drop { $0 == " " || $0 == "\n" }
        guard let first = trimmed.first, first == "{" || first == "[" else { return nil }
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]),
            let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        else { return nil }
        return String(decoding: data, as: UTF8.self)
    }
}
