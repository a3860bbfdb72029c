/// How far the frame being decoded in one direction has come; its
/// ``FrameEvent`` is filled in alongside.
struct FrameProgress {
    /// Payload bytes received so far, kept or not.
    var received: UInt64 = 0
    /// Bytes of the frame went missing from the capture.
    var lost = false
    /// Payload bytes kept for the frame and its message (text or binary).
    var limit = 0
}
