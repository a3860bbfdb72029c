import CMimalloc

/// The memory allocator the executable links: mimalloc, in place of glibc's
/// malloc for the whole process.
///
/// Decoding allocates and frees a few small objects per WebSocket frame
/// (packet buffers, unmasked payloads, events) and a second thread formats
/// them; relaying allocates a buffer per read. With glibc's malloc that was
/// about a sixth of `wsinspect read`'s decoding thread; mimalloc's per-thread
/// free lists cut the whole run by a fifth (benchmarks/read-benchmark.sh).
/// Only the executable links it: the library modules leave the choice to
/// whoever embeds them.
enum Allocator {
    /// mimalloc's version ("2.0.9"), shown by `--version`; referring to the
    /// library also keeps the linker from dropping it as unused.
    static var description: String {
        let version = Int(mi_version())
        return "mimalloc \(version / 100).\(version / 10 % 10).\(version % 10)"
    }
}
