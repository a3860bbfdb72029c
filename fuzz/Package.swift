// swift-tools-version:6.2
import PackageDescription

/// libFuzzer targets for the wire decoder, the capture path and the fault
/// engine. A package of its own so that `-sanitize=fuzzer` never touches the
/// main build; see README.md.
let package = Package(
    name: "wsinspect-fuzz",
    dependencies: [
        // Named, so that the product references below do not depend on the
        // folder the repository was cloned into.
        .package(name: "wsinspect", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .target(
            name: "FuzzSupport",
            dependencies: [
                .product(name: "WebSocketWire", package: "wsinspect"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: [.treatAllWarnings(as: .error)]
        ),
        .executableTarget(
            name: "FuzzFrameDecoder",
            dependencies: [
                "FuzzSupport",
                .product(name: "WebSocketWire", package: "wsinspect"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: [.treatAllWarnings(as: .error)]
        ),
        .executableTarget(
            name: "FuzzFaultSession",
            dependencies: [
                "FuzzSupport",
                .product(name: "FaultInjection", package: "wsinspect"),
                .product(name: "WebSocketWire", package: "wsinspect"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: [.treatAllWarnings(as: .error)]
        ),
        .executableTarget(
            name: "FuzzCapturePath",
            dependencies: [
                "FuzzSupport",
                .product(name: "WebSocketWire", package: "wsinspect"),
                .product(name: "PacketCapture", package: "wsinspect"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: [.treatAllWarnings(as: .error)]
        ),
    ]
)
