/// A close status code (RFC 6455 §7.4) with the names IANA registered for it.
///
/// `unknown` keeps every code that has no registered name, so application
/// (3000–3999) and private (4000–4999) codes print as they were sent.
public enum WebSocketCloseCode: Hashable, Sendable {
    case normalClosure
    case goingAway
    case protocolError
    case unsupportedData
    case reserved1004
    case noStatusReceived
    case abnormalClosure
    case invalidPayloadData
    case policyViolation
    case messageTooBig
    case mandatoryExtension
    case internalError
    case serviceRestart
    case tryAgainLater
    case badGateway
    case tlsHandshake
    case unknown(UInt16)

    public init(code: UInt16) {
        switch code {
        case 1000: self = .normalClosure
        case 1001: self = .goingAway
        case 1002: self = .protocolError
        case 1003: self = .unsupportedData
        case 1004: self = .reserved1004
        case 1005: self = .noStatusReceived
        case 1006: self = .abnormalClosure
        case 1007: self = .invalidPayloadData
        case 1008: self = .policyViolation
        case 1009: self = .messageTooBig
        case 1010: self = .mandatoryExtension
        case 1011: self = .internalError
        case 1012: self = .serviceRestart
        case 1013: self = .tryAgainLater
        case 1014: self = .badGateway
        case 1015: self = .tlsHandshake
        default: self = .unknown(code)
        }
    }

    public var code: UInt16 {
        switch self {
        case .normalClosure: return 1000
        case .goingAway: return 1001
        case .protocolError: return 1002
        case .unsupportedData: return 1003
        case .reserved1004: return 1004
        case .noStatusReceived: return 1005
        case .abnormalClosure: return 1006
        case .invalidPayloadData: return 1007
        case .policyViolation: return 1008
        case .messageTooBig: return 1009
        case .mandatoryExtension: return 1010
        case .internalError: return 1011
        case .serviceRestart: return 1012
        case .tryAgainLater: return 1013
        case .badGateway: return 1014
        case .tlsHandshake: return 1015
        case .unknown(let code): return code
        }
    }

    /// The registered name, or the range a code falls in when it has none.
    public var name: String {
        switch self {
        case .normalClosure: return "Normal Closure"
        case .goingAway: return "Going Away"
        case .protocolError: return "Protocol Error"
        case .unsupportedData: return "Unsupported Data"
        case .reserved1004: return "Reserved"
        case .noStatusReceived: return "No Status Received"
        case .abnormalClosure: return "Abnormal Closure"
        case .invalidPayloadData: return "Invalid Payload Data"
        case .policyViolation: return "Policy Violation"
        case .messageTooBig: return "Message Too Big"
        case .mandatoryExtension: return "Mandatory Extension"
        case .internalError: return "Internal Error"
        case .serviceRestart: return "Service Restart"
        case .tryAgainLater: return "Try Again Later"
        case .badGateway: return "Bad Gateway"
        case .tlsHandshake: return "TLS Handshake"
        case .unknown(let code):
            switch code {
            case 0..<1000: return "Unused"
            case 1016..<3000: return "Reserved for the protocol"
            case 3000..<4000: return "Application"
            case 4000..<5000: return "Private"
            default: return "Undefined"
            }
        }
    }

    /// Whether an endpoint may put this code in a Close frame (RFC 6455 §7.4.1,
    /// §7.4.2): 1005, 1006 and 1015 exist only for APIs to report, 1004 and the
    /// unassigned protocol range are reserved, and codes under 1000 or from 5000
    /// on are not defined at all.
    public var isAllowedOnWire: Bool {
        switch self {
        case .reserved1004, .noStatusReceived, .abnormalClosure, .tlsHandshake: return false
        case .unknown(let code): return (3000..<5000).contains(code)
        default: return true
        }
    }
}

extension WebSocketCloseCode: CustomStringConvertible {
    public var description: String { "\(code) \(name)" }
}
