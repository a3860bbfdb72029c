import Testing

@testable import InspectorProxy

/// `--nagle auto` flush by flush: which writes may be gathered, and when a
/// held write is pushed out.
struct NagleSwitchTests {
    /// Gathering on: TCP_NODELAY off, and the 1 ms push armed.
    private static let startGathering = NagleSwitch.Step(noDelay: false, armsHoldTimer: true)
    /// Gathering off: TCP_NODELAY on, which also sends what was held.
    private static let stopGathering = NagleSwitch.Step(noDelay: true)
    private static let rearm = NagleSwitch.Step(armsHoldTimer: true)
    private static let leaveAsIs = NagleSwitch.Step.none

    @Test func aFrameInTwoWritesAndAMessageAfterANotificationGoOutAtOnce() {
        var nagle = NagleSwitch(policy: .auto)
        var steps: [NagleSwitch.Step] = []
        for _ in 0..<3 {
            nagle.peerSent()  // the echo of the previous message
            steps.append(nagle.willFlush())  // header, or the unanswered notification
            steps.append(nagle.willFlush())  // payload, or the message
        }
        #expect(steps == Array(repeating: Self.leaveAsIs, count: 6))
        #expect(!nagle.gathers)
    }

    @Test func aPeerTwoFlushesBehindGetsTheRestGathered() {
        var nagle = NagleSwitch(policy: .auto)
        var steps = (0..<4).map { _ in nagle.willFlush() }
        #expect(steps == [Self.leaveAsIs, Self.leaveAsIs, Self.startGathering, Self.leaveAsIs])  // the push is armed once
        #expect(nagle.gathers)

        let pushes = nagle.holdExpired()
        #expect(pushes)  // push what is held, keep gathering
        steps = [nagle.willFlush()]
        nagle.peerSent()  // its answer acknowledged what it had
        steps.append(nagle.willFlush())
        let pushesAfterAnswer = nagle.holdExpired()
        #expect(!pushesAfterAnswer)  // nothing can be held any more
        steps += [nagle.willFlush(), nagle.willFlush()]
        #expect(steps == [Self.rearm, Self.stopGathering, Self.leaveAsIs, Self.startGathering])
    }

    @Test func aLargeFlushGoesOutAtOnce() {
        var nagle = NagleSwitch(policy: .auto)
        var steps = (0..<3).map { _ in nagle.willFlush() }
        nagle.willWrite(NagleSwitch.largeFlush - 1)
        nagle.willWrite(1)
        steps.append(nagle.willFlush())  // a large message's end is not held back
        steps.append(nagle.willFlush())  // small again, and the peer is still behind: the push is still armed
        #expect(
            steps == [Self.leaveAsIs, Self.leaveAsIs, Self.startGathering, Self.stopGathering, NagleSwitch.Step(noDelay: false)]
        )
    }

    @Test(arguments: [ProxyConfiguration.Nagle.on, .off])
    func fixedPoliciesNeverSwitch(policy: ProxyConfiguration.Nagle) {
        var nagle = NagleSwitch(policy: policy)
        #expect(nagle.gathers == (policy == .on))
        var steps = (0..<5).map { _ in nagle.willFlush() }
        nagle.peerSent()
        steps.append(nagle.willFlush())
        #expect(steps == Array(repeating: Self.leaveAsIs, count: 6))
    }
}
