import CPcap
import WebSocketWire

#if canImport(Glibc)
import Glibc
#endif

/// A libpcap handle: a capture file (pcap or pcapng, `-` for stdin) or a live
/// interface. libpcap does what it is good at here — reading both file
/// formats, capturing, compiling BPF — and nothing past the link layer.
public final class PacketSource {
    public struct Packet {
        public var bytes: UnsafeRawBufferPointer
        public var originalLength: Int
        public var time: Timestamp
    }

    public enum ReadResult {
        case packet(Packet)
        /// A live capture's read timeout passed with no packet.
        case timeout
        case end
    }

    private let handle: OpaquePointer
    public let linkType: LinkType
    public let isLive: Bool
    private var dumper: OpaquePointer?
    /// The stdio buffer of a file's stream, freed after the stream is closed.
    private let streamBuffer: UnsafeMutableRawPointer?

    private init(handle: OpaquePointer, isLive: Bool, streamBuffer: UnsafeMutableRawPointer? = nil) {
        self.handle = handle
        self.isLive = isLive
        self.streamBuffer = streamBuffer
        self.linkType = LinkType(rawValue: pcap_datalink(handle))
    }

    deinit {
        if let dumper {
            pcap_dump_flush(dumper)
            pcap_dump_close(dumper)
        }
        pcap_close(handle)
        streamBuffer?.deallocate()
    }

    /// Opens a capture file; `-` reads standard input.
    public static func openFile(_ path: String) throws(CaptureError) -> PacketSource {
        if path != "-" {
            var info = stat()
            if stat(path, &info) != 0 {
                throw CaptureError(.fileNotFound, "\(path): no such file")
            }
            if info.st_mode & S_IFMT == S_IFDIR {
                throw CaptureError(.unreadable, "\(path): is a directory, not a capture file")
            }
            if access(path, R_OK) != 0 {
                throw CaptureError(.unreadable, "\(path): permission denied")
            }
        }
        let name = path == "-" ? "standard input" : path
        // Our own stream with a 1 MiB buffer: libpcap reads files with fread,
        // and stdio's default buffer of a page made one read(2) per few packets.
        // Standard input through a duplicate descriptor, so that closing the
        // stream leaves descriptor 0 alone.
        guard let file = path == "-" ? fdopen(dup(STDIN_FILENO), "rb") : fopen(path, "rb") else {
            throw CaptureError(.unreadable, "\(name): \(String(cString: strerror(errno)))")
        }
        // glibc ignores the size unless the buffer is given.
        let bufferSize = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: 16)
        setvbuf(file, buffer.assumingMemoryBound(to: CChar.self), _IOFBF, bufferSize)
        // Only the reading thread touches the stream: no stdio lock per
        // fread (libpcap makes two per packet).
        __fsetlocking(file, Int32(FSETLOCKING_BYCALLER))
        var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        // On success the handle owns the stream (pcap_close closes it); on
        // failure it is still ours.
        guard let handle = pcap_fopen_offline_with_tstamp_precision(file, UInt32(PCAP_TSTAMP_PRECISION_NANO), &errorBuffer) else {
            fclose(file)
            buffer.deallocate()
            let message = cString(errorBuffer)
            if message.contains("unknown file format") || message.contains("truncated") || message.contains("bad dump file")
                || message.contains("file is empty")
            {
                throw CaptureError(.notACapture, "\(name): not a pcap or pcapng capture file (\(message))")
            }
            throw CaptureError(.unreadable, "\(name): \(message)")
        }
        return PacketSource(handle: handle, isLive: false, streamBuffer: buffer)
    }

    /// Opens a live interface in immediate mode, so frames show as they arrive.
    public static func openLive(
        interface: String,
        snapshotLength: Int32 = 262_144,
        promiscuous: Bool = false
    ) throws(CaptureError) -> PacketSource {
        var errorBuffer = [CChar](repeating: 0, count: Int(PCAP_ERRBUF_SIZE))
        guard let handle = pcap_create(interface, &errorBuffer) else {
            throw CaptureError(.captureFailed, "\(interface): \(cString(errorBuffer))")
        }
        pcap_set_snaplen(handle, snapshotLength)
        pcap_set_promisc(handle, promiscuous ? 1 : 0)
        pcap_set_immediate_mode(handle, 1)
        pcap_set_timeout(handle, 100)
        let status = pcap_activate(handle)
        if status < 0 {
            let detail = String(cString: pcap_geterr(handle))
            pcap_close(handle)
            switch status {
            case PCAP_ERROR_NO_SUCH_DEVICE:
                throw CaptureError(.noSuchInterface, "\(interface): no such interface (see `ip link` for the list)")
            case PCAP_ERROR_PERM_DENIED:
                throw CaptureError(.permissionDenied, "\(interface): permission denied; live capture needs root or CAP_NET_RAW (\(detail))")
            default:
                throw CaptureError(.captureFailed, "\(interface): \(detail)")
            }
        }
        return PacketSource(handle: handle, isLive: true)
    }

    /// Compiles a BPF filter expression (pcap-filter(7)) and applies it.
    public func setFilter(_ expression: String) throws(CaptureError) {
        var program = bpf_program()
        guard pcap_compile(handle, &program, expression, 1, PCAP_NETMASK_UNKNOWN) == 0 else {
            throw CaptureError(.badFilter, "filter '\(expression)': \(String(cString: pcap_geterr(handle)))")
        }
        defer { pcap_freecode(&program) }
        guard pcap_setfilter(handle, &program) == 0 else {
            throw CaptureError(.badFilter, "filter '\(expression)': \(String(cString: pcap_geterr(handle)))")
        }
    }

    /// Also saves every packet read to `path` as a pcap file.
    public func write(to path: String) throws(CaptureError) {
        guard let dumper = pcap_dump_open(handle, path) else {
            throw CaptureError(.writeFailed, "\(path): \(String(cString: pcap_geterr(handle)))")
        }
        self.dumper = dumper
    }

    /// The next packet; its bytes are valid until the next call.
    public func next() throws(CaptureError) -> ReadResult {
        // Locals, not stored properties: a class's stored properties cost an
        // exclusivity check per access, per packet.
        var headerPointer: UnsafeMutablePointer<pcap_pkthdr>?
        var data: UnsafePointer<u_char>?
        let status = pcap_next_ex(handle, &headerPointer, &data)
        switch status {
        case 1:
            let header = headerPointer!.pointee
            if let dumper {
                // pcap_dump takes the dumper as its opaque user argument.
                pcap_dump(UnsafeMutableRawPointer(dumper).assumingMemoryBound(to: u_char.self), headerPointer, data)
                if isLive { pcap_dump_flush(dumper) }
            }
            // Files are opened with nanosecond precision, live handles with micro.
            let fraction = Int64(header.ts.tv_usec)
            let nanos = isLive ? fraction * 1_000 : fraction
            // pcapng stores 64-bit timestamps: keep absurd ones (before 1970
            // or beyond 2096) from overflowing nanoseconds.
            let seconds = min(max(Int64(header.ts.tv_sec), 0), 4_000_000_000)
            return .packet(
                Packet(
                    bytes: UnsafeRawBufferPointer(start: data, count: Int(header.caplen)),
                    originalLength: Int(header.len),
                    time: Timestamp(nanoseconds: seconds * 1_000_000_000 + nanos)
                )
            )
        case 0:
            return .timeout
        case PCAP_ERROR_BREAK:
            return .end
        case -2:
            return .end
        default:
            let message = String(cString: pcap_geterr(handle))
            if message.contains("truncated") {
                throw CaptureError(.truncated, "the capture file is truncated: \(message)")
            }
            throw CaptureError(isLive ? .captureFailed : .notACapture, message)
        }
    }

    /// The raw handle, for ``breakLoop(_:)`` from a signal handler, which
    /// cannot reach this object.
    public var handleForSignals: OpaquePointer { handle }

    /// `pcap_breakloop` on a raw handle: safe from a signal handler.
    public static func breakLoop(_ handle: OpaquePointer) {
        pcap_breakloop(handle)
    }
}

/// The text before the first NUL of a libpcap error buffer.
private func cString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
