// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "wsinspect",
    products: [
        .executable(name: "wsinspect", targets: ["wsinspect"]),
        .library(name: "WebSocketWire", targets: ["WebSocketWire"]),
        .library(name: "PacketCapture", targets: ["PacketCapture"]),
        .library(name: "InspectorOutput", targets: ["InspectorOutput"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
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
        .target(
            name: "WebSocketWire",
            dependencies: [
                "CZlib",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "PacketCapture",
            dependencies: [
                "CPcap",
                "WebSocketWire",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .target(
            name: "InspectorOutput",
            dependencies: [
                "WebSocketWire",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "wsinspect",
            dependencies: [
                "WebSocketWire",
                "PacketCapture",
                "InspectorOutput",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "WebSocketWireTests", dependencies: ["WebSocketWire"]),
        .testTarget(name: "PacketCaptureTests", dependencies: ["PacketCapture"]),
        .testTarget(name: "InspectorOutputTests", dependencies: ["InspectorOutput"]),
    ]
)
