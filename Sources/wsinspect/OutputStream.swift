#if canImport(Glibc)
import Glibc
#endif

/// Buffered writes to standard output in large blocks; flushed per packet for
/// live views and at the end for files.
struct OutputStream {
    static let blockSize = 256 * 1024
    private var buffer: [UInt8] = []
    private let threshold = OutputStream.blockSize
    /// Set when the reader went away (EPIPE, e.g. `| head`): stop quietly.
    private(set) var closed = false

    /// Where the bytes go: standard output unless told otherwise (`--log`).
    private let descriptor: Int32

    init(descriptor: Int32 = STDOUT_FILENO) {
        self.descriptor = descriptor
        buffer.reserveCapacity(threshold + 4096)
    }

    /// Writes a block straight through, after what is buffered.
    mutating func write(_ block: UnsafeRawBufferPointer) {
        flush()
        writeAll(block)
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
        buffer.withUnsafeBytes { writeAll($0) }
        buffer.removeAll(keepingCapacity: true)
    }

    private mutating func writeAll(_ bytes: UnsafeRawBufferPointer) {
        guard !closed, let base = bytes.baseAddress else { return }
        var offset = 0
        while offset < bytes.count {
            let written = Glibc.write(descriptor, base + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                closed = true
                return
            }
            offset += written
        }
    }
}

func printError(_ message: String) {
    var text = "wsinspect: " + message + "\n"
    text.withUTF8 { _ = Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count) }
}
