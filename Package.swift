// swift-tools-version:6.1
import PackageDescription

// Dependency direction: LockstepCore ← LockstepWire ← LockstepEngine ← lockstep (CLI), and
// LockstepStore (byte-level, knows no protobuf) ← LockstepEngine. LockstepCore depends on the
// standard library only. See docs/architecture.md.
let package = Package(
    name: "Lockstep",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "lockstep", targets: ["lockstep"]),
        .library(name: "LockstepCore", targets: ["LockstepCore"]),
        .library(name: "LockstepWire", targets: ["LockstepWire"]),
        .library(name: "LockstepStore", targets: ["LockstepStore"]),
        .library(name: "LockstepEngine", targets: ["LockstepEngine"]),
        .library(name: "LockstepPlan", targets: ["LockstepPlan"]),
        .library(name: "LockstepServer", targets: ["LockstepServer"]),
        // The Swift client of the API (gRPC): used by the CLI and agents.
        .library(name: "LockstepClient", targets: ["LockstepClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0", traits: []),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // FullFoundation only: the default ConfigurationSupport trait would pull swift-configuration.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: ["FullFoundation"]),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
        // NIOHTTPTypes: the HTTP parts Hummingbird's pipelines carry (already in the graph through Hummingbird).
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .target(name: "LockstepCore"),
        .target(
            name: "LockstepWire",
            dependencies: [
                "LockstepCore",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        // Plan files: YAML → PlanSnapshot, and the linter (with file and line for every finding).
        .target(
            name: "LockstepPlan",
            dependencies: ["LockstepCore", .product(name: "Yams", package: "Yams")]
        ),
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        .target(
            name: "LockstepStore",
            dependencies: [
                "CSQLite",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "LockstepEngine",
            dependencies: [
                "LockstepCore",
                "LockstepWire",
                "LockstepStore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        // The gRPC stubs generated from Protos/lockstep/v1/agent.proto (client and server), by ops/generate-protos.
        .target(
            name: "LockstepAPI",
            dependencies: [
                "LockstepWire",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            ]
        ),
        .target(
            name: "LockstepClient",
            dependencies: [
                "LockstepAPI",
                "LockstepCore",
                "LockstepWire",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            ]
        ),
        // The API (docs/api.md): one service layer, served as gRPC (grpc-swift-2, NIO HTTP/2 transport) and
        // as JSON over HTTP/1.1 and h2c (Hummingbird).
        .target(
            name: "LockstepServer",
            dependencies: [
                "LockstepAPI",
                "LockstepCore",
                "LockstepEngine",
                "LockstepPlan",
                "LockstepStore",
                "LockstepWire",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdHTTP2", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "lockstep",
            dependencies: [
                "LockstepClient",
                "LockstepEngine",
                "LockstepPlan",
                "LockstepServer",
                "LockstepWire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Subprocess", package: "swift-subprocess"),
            ]
        ),
        // `swift build -c release --product lockstep-bench`: figures for docs/benchmarks.md (see ops/bench/run).
        .executableTarget(
            name: "lockstep-bench",
            dependencies: ["LockstepEngine", "LockstepStore", "LockstepWire", "LockstepCore", "CSQLite"],
            path: "ops/bench/Sources/lockstep-bench"
        ),
        // The floor of our HTTP/2 stack for ops/bench/api: the same libraries, answering the same bytes, no Lockstep work.
        .executableTarget(
            name: "lockstep-bare",
            dependencies: [
                "LockstepAPI", "LockstepServer", "LockstepWire",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            path: "ops/bench/Sources/lockstep-bare"
        ),
        .testTarget(name: "LockstepCoreTests", dependencies: ["LockstepCore"]),
        .testTarget(name: "LockstepPlanTests", dependencies: ["LockstepPlan", "LockstepEngine"]),
        .testTarget(
            name: "LockstepStoreTests",
            dependencies: ["LockstepStore", "LockstepEngine", "CSQLite", "LockstepTestSupport"]
        ),
        // Shared by the test targets: temporary directories, child processes bounded in time, the built binary.
        .target(name: "LockstepTestSupport", path: "Tests/LockstepTestSupport"),
        .testTarget(name: "LockstepServerTests", dependencies: ["LockstepServer", "LockstepClient", "LockstepCore", "LockstepEngine", "LockstepPlan", "LockstepWire", "LockstepTestSupport",
                                                             .product(name: "Logging", package: "swift-log"),
                                                             .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
                    exclude: ["Agents"]),
        .testTarget(
            name: "LockstepEngineTests",
            dependencies: ["LockstepEngine", "LockstepWire", "CSQLite", "LockstepTestSupport"],
            exclude: ["Golden", "Shim"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
