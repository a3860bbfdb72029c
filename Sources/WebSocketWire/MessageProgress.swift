/// What decoding one direction's open message needs besides its event: the
/// event itself (``MessageEvent``) is assembled in place and moved whole into
/// the queue, so everything kept here is what the event does not carry.
struct MessageProgress {
    /// Bytes of the message went missing from the capture.
    var lost = false
    var utf8 = UTF8Validator()
    var validatesText = true
    /// Findings raised while the current frame was decoded, to attach to it
    /// and to the message.
    var newFindings: [Finding] = []

    /// Checks the next bytes of a text message (RFC 6455 §8.1).
    mutating func validate(_ bytes: UnsafeRawBufferPointer, opcode: WebSocketOpcode) {
        if opcode == .text && validatesText && utf8.isValid {
            utf8.feed(bytes)
            if !utf8.isValid {
                newFindings.append(Finding(.invalidUTF8, "text message is not valid UTF-8 at byte \(utf8.errorOffset!) (RFC 6455 §8.1)"))
            }
        }
    }
}
