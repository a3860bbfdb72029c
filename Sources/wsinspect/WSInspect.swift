import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

@main
struct WSInspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wsinspect",
        abstract: "Inspect WebSocket traffic: decode captures and live interfaces frame by frame.",
        discussion: """
            Exit codes: 0 success; 2 the capture ended early (truncated file), events up to \
            that point were printed; 64 bad usage; 65 input is not a capture file; \
            66 input file missing or unreadable; 69 no such interface (or the proxy cannot \
            listen); 74 output could not be written; 75 the proxy's listen address is in use; \
            77 permission denied.
            """,
        version: "0.1.0 (\(Allocator.description))",
        subcommands: [ReadCommand.self, CaptureCommand.self, ProxyCommand.self]
    )

    /// Like ArgumentParser's own entry point, but every error line starts
    /// with "wsinspect: " as the README promises, and errors we already
    /// reported (thrown as a bare exit code) are not reported twice.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            Glibc.exit(code.rawValue)
        } catch {
            let code = exitCode(for: error)
            let message = fullMessage(for: error)
            if code == .success {
                print(message)
            } else {
                let text = message.hasPrefix("Error: ") ? String(message.dropFirst(7)) : message
                printError(text)
            }
            Glibc.exit(code.rawValue)
        }
    }
}
