import Foundation
import Yams

/// A rules file (`--rules`): JSON or YAML, either a list of rules or an
/// object with `rules` and an optional `seed`.
public struct RuleFile: Sendable {
    public var seed: UInt64?
    public var rules: [FaultRule]

    public init(seed: UInt64? = nil, rules: [FaultRule]) {
        self.seed = seed
        self.rules = rules
    }

    /// Why a rules file could not be used: it could not be read, or what it
    /// says is not a valid set of rules.
    public struct LoadError: Error, CustomStringConvertible {
        public enum Kind: Sendable { case unreadable, invalid }
        public var kind: Kind
        public var description: String
    }

    private struct Document: Decodable {
        var seed: UInt64?
        var rules: [FaultRule]

        init(from decoder: Decoder) throws {
            if var list = try? decoder.unkeyedContainer() {
                seed = nil
                rules = []
                while !list.isAtEnd { rules.append(try list.decode(FaultRule.self)) }
                return
            }
            let c = try decoder.container(keyedBy: RuleKey.self)
            let unknown = c.allKeys.map(\.stringValue).filter { $0 != "seed" && $0 != "rules" }
            if !unknown.isEmpty {
                throw FaultRuleError(
                    "unknown top-level key \(unknown.sorted().map { "'\($0)'" }.joined(separator: ", ")); a rules file has 'rules' and an optional 'seed'"
                )
            }
            seed = try c.decodeIfPresent(UInt64.self, forKey: RuleKey("seed"))
            rules = try c.decodeIfPresent([FaultRule].self, forKey: RuleKey("rules")) ?? []
        }
    }

    public static func load(path: String) throws -> RuleFile {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            let reason = (error as NSError).localizedFailureReason ?? "cannot read it"
            throw LoadError(kind: .unreadable, description: "\(path): \(reason)")
        }
        let lower = path.lowercased()
        let yaml = lower.hasSuffix(".yaml") || lower.hasSuffix(".yml")
        do {
            return try parse(data, yaml: yaml)
        } catch let error as LoadError {
            throw LoadError(kind: error.kind, description: "\(path): \(error.description)")
        }
    }

    /// Parses JSON, or YAML when `yaml` says so (YAML is tried as well when
    /// JSON fails on a file whose name does not say).
    public static func parse(_ data: Data, yaml: Bool) throws -> RuleFile {
        do {
            let document: Document
            if yaml {
                document = try YAMLDecoder().decode(Document.self, from: data)
            } else {
                do {
                    document = try JSONDecoder().decode(Document.self, from: data)
                } catch let error as DecodingError {
                    guard let yamlDocument = try? YAMLDecoder().decode(Document.self, from: data) else { throw error }
                    document = yamlDocument
                }
            }
            return RuleFile(seed: document.seed, rules: document.rules)
        } catch let error as FaultRuleError {
            throw LoadError(kind: .invalid, description: error.description)
        } catch let error as DecodingError {
            throw LoadError(kind: .invalid, description: describe(error))
        } catch {
            throw LoadError(kind: .invalid, description: "\(error)")
        }
    }

    /// A decoding error in a user's words: where in the file, and what.
    public static func describe(_ error: DecodingError) -> String {
        func place(_ path: [CodingKey]) -> String {
            let text = path.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return text.isEmpty ? "" : "at \(text.hasPrefix(".") ? String(text.dropFirst()) : text): "
        }
        switch error {
        case .typeMismatch(let type, let context):
            return
                "\(place(context.codingPath))expected \(type == String.self ? "a string" : type == Int.self ? "a whole number" : "\(type)")"
        case .valueNotFound(_, let context), .keyNotFound(_, let context):
            return "\(place(context.codingPath))\(context.debugDescription)"
        case .dataCorrupted(let context):
            let underlying = context.underlyingError.map { ": \($0)" } ?? ""
            return "\(place(context.codingPath))not valid JSON or YAML\(underlying)"
        @unknown default:
            return "\(error)"
        }
    }
}
