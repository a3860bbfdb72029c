/// A protocol violation or notable condition, reported as a value next to the
/// frame or connection it concerns; decoding always goes on after one.
public struct Finding: Hashable, Sendable {
    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// An open set of finding kinds, printed by their stable JSON name.
    public struct Kind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        // Frame-level (RFC 6455 §5).
        public static let unmaskedClientFrame = Kind(rawValue: "unmasked-client-frame")
        public static let maskedServerFrame = Kind(rawValue: "masked-server-frame")
        public static let reservedOpcode = Kind(rawValue: "reserved-opcode")
        public static let controlFrameTooLong = Kind(rawValue: "control-frame-too-long")
        public static let fragmentedControlFrame = Kind(rawValue: "fragmented-control-frame")
        public static let unexpectedRSVBits = Kind(rawValue: "unexpected-rsv-bits")
        public static let nonMinimalLength = Kind(rawValue: "non-minimal-length")
        public static let lengthHighBitSet = Kind(rawValue: "length-high-bit-set")
        public static let continuationWithoutStart = Kind(rawValue: "continuation-without-start")
        public static let dataFrameInsideMessage = Kind(rawValue: "data-frame-inside-message")
        public static let invalidUTF8 = Kind(rawValue: "invalid-utf8")
        public static let frameAfterClose = Kind(rawValue: "frame-after-close")
        public static let truncatedFrame = Kind(rawValue: "truncated-frame")

        // Close frames (RFC 6455 §5.5.1, §7.4).
        public static let closePayloadTooShort = Kind(rawValue: "close-payload-length-1")
        public static let invalidCloseCode = Kind(rawValue: "invalid-close-code")
        public static let invalidCloseReason = Kind(rawValue: "invalid-close-reason")

        // permessage-deflate (RFC 7692).
        public static let inflateError = Kind(rawValue: "inflate-error")
        public static let cannotInflate = Kind(rawValue: "cannot-inflate")

        // Handshake (RFC 6455 §4).
        public static let acceptMismatch = Kind(rawValue: "accept-mismatch")
        public static let handshakeRejected = Kind(rawValue: "handshake-rejected")
        public static let invalidHandshake = Kind(rawValue: "invalid-handshake")
        public static let unrequestedExtension = Kind(rawValue: "unrequested-extension")
        public static let unrequestedProtocol = Kind(rawValue: "unrequested-protocol")

        // Capture.
        public static let gap = Kind(rawValue: "gap")
        public static let resynchronized = Kind(rawValue: "resynchronized")
        public static let snaplenTruncated = Kind(rawValue: "snaplen-truncated")
        public static let dataAfterEnd = Kind(rawValue: "data-after-close")
    }
}
