/// A point in time in nanoseconds since the Unix epoch, as libpcap or the
/// proxy's clock reported it. The wire module never reads a clock itself.
public struct Timestamp: Hashable, Comparable, Sendable {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) {
        self.nanoseconds = nanoseconds
    }

    public init(seconds: Int64, microseconds: Int64) {
        self.nanoseconds = seconds * 1_000_000_000 + microseconds * 1_000
    }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    /// The interval in nanoseconds, saturating: times from damaged captures
    /// can be far apart, and an interval must never trap.
    public static func - (lhs: Timestamp, rhs: Timestamp) -> Int64 {
        let (difference, overflow) = lhs.nanoseconds.subtractingReportingOverflow(rhs.nanoseconds)
        if overflow { return lhs.nanoseconds < rhs.nanoseconds ? .min : .max }
        return difference
    }

    public static let zero = Timestamp(nanoseconds: 0)
}
