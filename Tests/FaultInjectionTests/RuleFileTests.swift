import FaultInjection
import Foundation
import Testing

@Suite struct RuleFileTests {
    @Test func yamlAndJSONReadTheSame() throws {
        let yaml = """
            seed: 42
            rules:
              - id: slow
                action: delay
                ms: 200
                jitter_ms: 50
                direction: to-client
                match: {opcode: [text, binary], every: 2, path: "^/chat"}
              - action: inject
                opcode: ping
                every_ms: 1000
            """
        let json = """
            {"seed": 42, "rules": [
              {"id": "slow", "action": "delay", "ms": 200, "jitter_ms": 50, "direction": "to-client",
               "match": {"opcode": ["text", "binary"], "every": 2, "path": "^/chat"}},
              {"action": "inject", "opcode": "ping", "every_ms": 1000}]}
            """
        let fromYAML = try RuleFile.parse(Data(yaml.utf8), yaml: true)
        let fromJSON = try RuleFile.parse(Data(json.utf8), yaml: false)
        #expect(fromYAML.seed == 42 && fromJSON.seed == 42)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        #expect(try encoder.encode(fromYAML.rules) == encoder.encode(fromJSON.rules))
        #expect(fromJSON.rules[0].match.opcodes == [1, 2])
    }

    @Test(arguments: [
        (#"[{"action": "explode"}]"#, "unknown action 'explode'"),
        (#"[{"action": "drop", "ms": 3}]"#, "unknown key 'ms'"),
        (#"[{"action": "drop", "match": {"text": "("}}]"#, "not a valid regular expression"),
        (#"[{"action": "drop", "direction": "sideways"}]"#, "direction must be"),
        (#"[{"action": "delay"}]"#, "'delay' needs 'ms'"),
        (#"[{"action": "drop", "probability": 2}]"#, "probability must be between 0 and 1"),
        (#"[{"action": "corrupt", "kind": "bad"}]"#, "unknown corrupt kind"),
        (#"[{"action": "inject", "opcode": "ping", "text": "\#(String(repeating: "x", count: 126))"}]"#, "at most 125 bytes"),
        (#"{"rule": []}"#, "unknown top-level key 'rule'"),
        (#"[{"action": "fragment", "size": 0}]"#, "'size' must be at least 1"),
        (#"[{"action": "delay", "ms": 99999999999999}]"#, "'ms' must be at most"),
    ])
    func badRulesSayWhatIsWrong(text: String, expected: String) {
        do {
            _ = try RuleFile.parse(Data(text.utf8), yaml: false)
            Issue.record("accepted \(text)")
        } catch {
            #expect("\(error)".contains(expected), "\(error)")
        }
    }

    @Test func ruleBookGivesIdsAndRefusesDuplicates() throws {
        let book = try RuleBook(RuleFile.parse(Data(#"[{"action": "drop"}, {"id": "x", "action": "abort"}]"#.utf8), yaml: false).rules)
        #expect(book.snapshot.rules.map(\.id) == ["rule-1", "x"])
        #expect(throws: FaultRuleError.self) { try book.add([FaultRule(id: "x", action: .drop)]) }
        #expect(book.remove(id: "rule-1"))
        #expect(!book.remove(id: "rule-1"))
    }
}
