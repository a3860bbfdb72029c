import FuzzSupport
import WebSocketWire

/// libFuzzer target: one input is one scripted connection (see ``Script``),
/// fed to a `ConnectionObserver` and to bare `FrameDecoder`s.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrameDecoder(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let script = Script(fuzzBytes(start, count)) else { return 0 }

    let byRecords = observe(script, feeding: .records)
    if fuzzVerbose {
        let frames = Direction.allCases.map { byRecords.frames[$0]?.count ?? 0 }
        let messages = Direction.allCases.map { byRecords.messages[$0]?.count ?? 0 }
        print("start \(script.start), opened \(String(describing: byRecords.opened)), frames \(frames), messages \(messages)")
        for direction in Direction.allCases {
            for frame in byRecords.frames[direction] ?? [] {
                print(
                    "  \(direction.name) frame \(frame.header.opcode) rsv1 \(frame.header.rsv1) \(frame.payload.count)B findings \(frame.findings.map(\.kind))"
                )
            }
            for message in byRecords.messages[direction] ?? [] {
                let text = String(decoding: message.payload, as: UTF8.self).debugDescription
                print(
                    "  \(direction.name) message \(message.opcode) compressed \(message.compressed) wire \(message.wireLength)B length \(message.length)B \(text) inflateError \(String(describing: message.inflateError)) findings \(message.findings.map(\.kind))"
                )
            }
        }
    }
    if script.framingIsSynchronized {
        // Decoding a synchronised stream must not depend on how it was split.
        let whole = observe(script, feeding: .wholePerDirection)
        check(whole == byRecords, "whole feed differs from record feed: \(whole.difference(from: byRecords))")
        if script.dataByteCount <= 2048 {
            let bytewise = observe(script, feeding: .bytewise)
            check(bytewise == byRecords, "bytewise feed differs from record feed: \(bytewise.difference(from: byRecords))")
        }
    } else if script.dataByteCount <= 2048 {
        _ = observe(script, feeding: .bytewise)
    }

    decodeBare(script)
    return 0
}

@_cdecl("FuzzFrameDecoder_main")
public func fuzzFrameDecoderMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runLibFuzzer(argc, argv, fuzzFrameDecoder)
}
