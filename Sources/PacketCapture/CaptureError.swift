/// Why a capture source could not be opened or read to its end. Extensible:
/// new kinds can be added without breaking callers that switch on `kind`.
public struct CaptureError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Kind: RawRepresentable, Hashable, Sendable {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        public static let fileNotFound = Kind(rawValue: "file-not-found")
        public static let unreadable = Kind(rawValue: "unreadable")
        public static let notACapture = Kind(rawValue: "not-a-capture")
        public static let truncated = Kind(rawValue: "truncated")
        public static let badFilter = Kind(rawValue: "bad-filter")
        public static let noSuchInterface = Kind(rawValue: "no-such-interface")
        public static let permissionDenied = Kind(rawValue: "permission-denied")
        public static let captureFailed = Kind(rawValue: "capture-failed")
        public static let writeFailed = Kind(rawValue: "write-failed")
    }

    public var kind: Kind
    public var description: String

    public init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}
