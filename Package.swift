// swift-tools-version:6.2
import PackageDescription

/// Our own code builds with warnings as errors (house style); dependencies do not.
let strict: [SwiftSetting] = [.treatAllWarnings(as: .error)]

let package = Package(
    name: "wsinspect",
    products: [
        .executable(name: "wsinspect", targets: ["wsinspect"]),
        .library(name: "WebSocketWire", targets: ["WebSocketWire"]),
        .library(name: "PacketCapture", targets: ["PacketCapture"]),
        .library(name: "InspectorOutput", targets: ["InspectorOutput"]),
        .library(name: "FaultInjection", targets: ["FaultInjection"]),
        .library(name: "InspectorProxy", targets: ["InspectorProxy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .systemLibrary(
            name: "CPcap",
            pkgConfig: "libpcap",
            providers: [.apt(["libpcap-dev"])]
        ),
        // Linked into the executable only: it replaces malloc process-wide,
        // which halves the allocator's share of decoding and relaying (see
        // Sources/wsinspect/Allocator.swift).
        .systemLibrary(
            name: "CMimalloc",
            providers: [.apt(["libmimalloc-dev"])]
        ),
        .target(
            name: "WebSocketWire",
            dependencies: [
                "CZlib",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "PacketCapture",
            dependencies: [
                "CPcap",
                "WebSocketWire",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "InspectorOutput",
            dependencies: [
                "WebSocketWire",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "FaultInjection",
            dependencies: [
                "WebSocketWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "InspectorProxy",
            dependencies: [
                "WebSocketWire",
                "FaultInjection",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ],
            // NIO channel handlers are event-loop-bound classes; Swift 5 mode
            // keeps their loop-confined use free of Sendable ceremony.
            swiftSettings: strict + [.swiftLanguageMode(.v5)]
        ),
        .executableTarget(
            name: "wsinspect",
            dependencies: [
                "WebSocketWire",
                "PacketCapture",
                "InspectorOutput",
                "InspectorProxy",
                "FaultInjection",
                "CMimalloc",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "WebSocketWireTests", dependencies: ["WebSocketWire"], swiftSettings: strict),
        .testTarget(name: "PacketCaptureTests", dependencies: ["PacketCapture"], swiftSettings: strict),
        .testTarget(name: "InspectorOutputTests", dependencies: ["InspectorOutput"], swiftSettings: strict),
        .testTarget(name: "FaultInjectionTests", dependencies: ["FaultInjection"], swiftSettings: strict),
        .testTarget(name: "InspectorProxyTests", dependencies: ["InspectorProxy", "FaultInjection"], swiftSettings: strict),
    ]
)
