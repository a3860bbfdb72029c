import ArgumentParser
import PacketCapture

/// The exit codes the README documents, following sysexits(3) where one fits.
enum ExitCodes {
    static let truncatedInput = ExitCode(2)
    /// The input is readable but not what it should be: not a capture, not PEM.
    static let invalidInput = ExitCode(65)
    static let noInput = ExitCode(66)
    static let unavailable = ExitCode(69)
    static let ioError = ExitCode(74)
    /// The proxy's listening address is taken.
    static let addressInUse = ExitCode(75)
    static let permissionDenied = ExitCode(77)

    static func code(for error: CaptureError) -> ExitCode {
        switch error.kind {
        case .fileNotFound, .unreadable: return noInput
        case .notACapture: return invalidInput
        case .truncated: return truncatedInput
        case .badFilter: return ExitCode.validationFailure
        case .noSuchInterface: return unavailable
        case .permissionDenied: return permissionDenied
        case .writeFailed: return ioError
        default: return ExitCode.failure
        }
    }
}
