import FaultInjection
import FuzzSupport
import WebSocketWire

#if canImport(Glibc)
import Glibc
#endif

/// libFuzzer target: one input is one relayed connection in fault mode (see
/// ``Script``), played against a `FaultSession` as `FaultRelay` plays it,
/// once with each read whole and once cut into pieces.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFaultSession(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let script = Script(fuzzBytes(start, count))
    if fuzzVerbose {
        say(
            "start \(script.start), extensions \(Script.extensions[script.extensionIndex].header ?? "none"), seed \(script.seed), pieces of \(script.pieceSize)"
        )
        say(
            "rules \(script.initialRules.map { "\($0.rule.id) \($0.rule.action.name) p=\($0.rule.probability)" }), \(script.steps.count) steps, clean \(script.clean)"
        )
    }
    var whole = SessionRun(script, pieceSize: nil)
    whole.play()
    whole.checkOutcome()
    if fuzzVerbose {
        for direction in Direction.allCases {
            let lane = SessionRun.lane(direction)
            say(
                "\(direction.name): fed \(whole.fed[lane].count), delivered \(whole.delivered[lane].count), ends \(whole.ends[lane]), statistics \(whole.session.statistics(direction))"
            )
        }
        say("terminated \(whole.terminated ?? "no"), finished \(whole.finished), events \(whole.events)")
    }

    // The same script with every read cut into pieces: what each side gets
    // in the end must not depend on how its bytes were split, unless time
    // decides it (holds, throttled timing around lost queues, wake-ups), the
    // connection was torn down (what had gone out by then differs), or an
    // injection waited for the end of a frame too large to hold (it goes out
    // after the rest of that read when fed whole).
    // Pieces of at least 1/256 of everything sent: a response head is parsed
    // from its start on every read (see README.md), so byte-sized pieces of
    // a long head would take the run past libFuzzer's timeout.
    let sent = script.steps.reduce(0) { total, step in
        if case .receive(_, let bytes) = step { return total + bytes.count }
        return total
    }
    let pieceSize = max(script.pieceSize, sent / 256)
    var split = SessionRun(script, pieceSize: pieceSize)
    split.play()
    split.checkOutcome()
    let traits = script.traits
    let comparable =
        whole.terminated == nil && split.terminated == nil && !traits.holds
        && !(traits.throttles && (script.fullClose || script.usesWakeUps))
        && !(script.hugeFrames && (script.controlInjections > 0 || traits.injectsAnything))
    if comparable {
        for direction in Direction.allCases {
            let lane = SessionRun.lane(direction)
            check(
                whole.delivered[lane] == split.delivered[lane],
                "\(direction.name): fed whole, \(whole.delivered[lane].count) bytes delivered; in pieces of \(pieceSize), \(split.delivered[lane].count)"
                    + (whole.delivered[lane].count == split.delivered[lane].count
                        ? ", first difference at \(zip(whole.delivered[lane], split.delivered[lane]).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? -1)"
                        : "")
            )
            check(
                whole.ends[lane] == split.ends[lane],
                "\(direction.name): ends \(whole.ends[lane]) fed whole, \(split.ends[lane]) in pieces"
            )
        }
    }
    return 0
}

@_cdecl("FuzzFaultSession_main")
public func fuzzFaultSessionMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    // Parse the rule table before libFuzzer starts counting allocations per input.
    _ = RuleTable.rules.count
    return runLibFuzzer(argc, argv, fuzzFaultSession)
}

/// Prints a line of `FUZZ_VERBOSE` output at once, so that it comes before
/// the report of a broken invariant.
func say(_ line: String) {
    print(line)
    fflush(nil)
}

/// LeakSanitizer's suppressions: compiling a `Regex` from a string (the rule
/// table's `match.text` and `replace` patterns, once) leaks its parse tree
/// inside the Swift runtime's _RegexParser/_StringProcessing (Swift 6.3), which
/// the check at exit would report as this target's leak.
@_cdecl("__lsan_default_suppressions")
public func lsanDefaultSuppressions() -> UnsafePointer<CChar> {
    let text: StaticString = "leak:_RegexParser\nleak:_StringProcessing\n"
    return UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
}
