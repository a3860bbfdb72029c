import Testing
import WebSocketWire

@Suite struct UTF8ValidatorTests {
    static let valid: [[UInt8]] = [
        Array("plain ascii that is longer than eight bytes".utf8),
        Array("κόσμε".utf8),
        [0xF0, 0x9F, 0x98, 0x80],  // U+1F600
        [0xEF, 0xBF, 0xBF],  // U+FFFF
        [0xF4, 0x8F, 0xBF, 0xBF],  // U+10FFFF
    ]

    static let invalid: [[UInt8]] = [
        [0xC0, 0xAF],  // overlong '/'
        [0xED, 0xA0, 0x80],  // UTF-16 surrogate
        [0xF4, 0x90, 0x80, 0x80],  // above U+10FFFF
        [0xF5],  // never valid
        [0x80],  // lone continuation
        Array("κόσμε".utf8) + [0xED, 0xA0, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64],  // Autobahn 6.3.1
    ]

    @Test(arguments: valid)
    func acceptsValidTextInAnySplit(bytes: [UInt8]) {
        for chunks in Feeding.chunkings(bytes) {
            var validator = UTF8Validator()
            for chunk in chunks { validator.feed(chunk) }
            #expect(validator.isCompleteAndValid)
        }
    }

    @Test(arguments: invalid)
    func rejectsInvalidTextInAnySplit(bytes: [UInt8]) {
        for chunks in Feeding.chunkings(bytes) {
            var validator = UTF8Validator()
            for chunk in chunks { validator.feed(chunk) }
            #expect(!validator.isValid)
        }
    }

    @Test func incompleteSequenceIsValidButNotComplete() {
        var validator = UTF8Validator()
        validator.feed([0xF0, 0x9F])
        #expect(validator.isValid)
        #expect(!validator.isCompleteAndValid)
    }
}
