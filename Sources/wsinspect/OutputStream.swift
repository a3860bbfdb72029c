#if canImport(Glibc)
import Glibc
#endif

/// Buffered writes to standard output in large blocks; flushed per packet for
/// live views and at the end for files.
struct OutputStream {
    private var buffer: [UInt8] = []
    private let threshold = 256 * 1024
    /// Set when the reader went away (EPIPE, e.g. `| head`): stop quietly.
    private(set) var closed = false

    init() {
        buffer.reserveCapacity(threshold + 4096)
    }

    mutating func write(_ bytes: [UInt8]) {
        buffer.append(contentsOf: bytes)
        if buffer.count >= threshold { flush() }
    }

    mutating func write(_ text: String) {
        buffer.append(contentsOf: text.utf8)
        if buffer.count >= threshold { flush() }
    }

    mutating func flush() {
        guard !closed else {
            buffer.removeAll(keepingCapacity: true)
            return
        }
        var offset = 0
        while offset < buffer.count {
            let written = buffer.withUnsafeBytes { Glibc.write(STDOUT_FILENO, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0 {
                if errno == EINTR { continue }
                closed = true
                break
            }
            offset += written
        }
        buffer.removeAll(keepingCapacity: true)
    }
}

func printError(_ message: String) {
    var text = "wsinspect: " + message + "\n"
    text.withUTF8 { _ = Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count) }
}
