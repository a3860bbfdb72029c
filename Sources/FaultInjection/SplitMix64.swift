/// A small, fast generator with a 64-bit seed (Steele, Lea and Flood's
/// SplitMix64), so that `--seed` replays the same faults on the same
/// traffic. Not for secrets: masking keys come from the system generator.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// True with the given probability; draws nothing for 0 and 1, so that
    /// certain rules do not shift the sequence the uncertain ones see.
    public mutating func chance(_ probability: Double) -> Bool {
        if probability >= 1 { return true }
        if probability <= 0 { return false }
        return Double(next() >> 11) * 0x1p-53 < probability
    }
}
