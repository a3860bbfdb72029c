import Synchronization

/// The rules in force, shared by every connection and the control API.
/// Connections copy the list when its version changes, so a rule added or
/// removed at run time applies from the next message on.
public final class RuleBook: Sendable {
    private struct State {
        var rules: [FaultRule] = []
        var version = 0
        var lastSerial = 0
    }

    private let state = Mutex(State())

    public init(_ rules: [FaultRule] = []) throws {
        _ = try add(rules)
    }

    /// The rules and a number that changes whenever they do.
    public var snapshot: (version: Int, rules: [FaultRule]) {
        state.withLock { ($0.version, $0.rules) }
    }

    public var version: Int {
        state.withLock { $0.version }
    }

    /// Adds rules at the end, giving each without an id "rule-N" after its
    /// position (the next free number if that is taken); returns them as
    /// stored. Ids must be unique.
    @discardableResult
    public func add(_ rules: [FaultRule]) throws -> [FaultRule] {
        try state.withLock { state in
            var taken = Set(state.rules.map(\.id)).union(rules.map(\.id).filter { !$0.isEmpty })
            var added: [FaultRule] = []
            for var rule in rules {
                if rule.id.isEmpty {
                    // Numbered by position, so the nth rule of a file is rule-n.
                    var number = state.rules.count + added.count + 1
                    while taken.contains("rule-\(number)") { number += 1 }
                    rule.id = "rule-\(number)"
                } else if added.contains(where: { $0.id == rule.id }) || state.rules.contains(where: { $0.id == rule.id }) {
                    throw FaultRuleError("two rules have the id '\(rule.id)'")
                }
                taken.insert(rule.id)
                state.lastSerial += 1
                rule.serial = state.lastSerial
                added.append(rule)
            }
            state.rules += added
            state.version += 1
            return added
        }
    }

    /// Removes the rule with this id; false when there is none.
    public func remove(id: String) -> Bool {
        state.withLock { state in
            guard let index = state.rules.firstIndex(where: { $0.id == id }) else { return false }
            state.rules.remove(at: index)
            state.version += 1
            return true
        }
    }

    /// Whether a `refuse` rule turns this new connection away (Toxiproxy's
    /// "down"), decided before the upstream is contacted.
    public func refuses(connection id: Int, target: String, random: inout SplitMix64) -> FaultRule? {
        snapshot.rules.first { rule in
            guard case .refuse = rule.action else { return false }
            return rule.match.admits(connection: id, target: target) && random.chance(rule.probability)
        }
    }
}
