// swift-tools-version:6.1
import PackageDescription

// Modules, each arrow "is used by" (docs/architecture.md draws the same picture):
//   LockstepCore (pure) ← LockstepWire (protobuf) ← LockstepEngine (coordinator, history) ← LockstepService
//   (the API without a transport) ← LockstepHTTP (JSON on Hummingbird) and LockstepGRPC (grpc-swift-2)
//   ← LockstepServer (composition root) ← lockstep (thin CLI).
//   LockstepStore (byte-level log port, knows no protobuf) ← LockstepEngine; LockstepPlan (YAML) ← LockstepService;
//   LockstepAPI (generated stubs) ← LockstepClient ← LockstepAgent (the reference agent) ← lockstep.
//   LockstepStore ← LockstepPostgres (the log on PostgreSQL, postgres-nio) ← LockstepServer and lockstep (--store).
//   CNGHTTP2 (libnghttp2) ← LockstepH2 (the HTTP/2 engine; serves the gRPC port) ← LockstepGRPC, LockstepServer.
// LockstepCore depends on the standard library only.
let package = Package(
    name: "Lockstep",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "lockstep", targets: ["lockstep"]),
        .library(name: "LockstepCore", targets: ["LockstepCore"]),
        .library(name: "LockstepWire", targets: ["LockstepWire"]),
        .library(name: "LockstepStore", targets: ["LockstepStore"]),
        .library(name: "LockstepPostgres", targets: ["LockstepPostgres"]),
        .library(name: "LockstepEngine", targets: ["LockstepEngine"]),
        .library(name: "LockstepPlan", targets: ["LockstepPlan"]),
        .library(name: "LockstepService", targets: ["LockstepService"]),
        .library(name: "LockstepServer", targets: ["LockstepServer"]),
        // The HTTP/2 engine on libnghttp2 (a product for the fuzz targets, ops/fuzz).
        .library(name: "LockstepH2", targets: ["LockstepH2"]),
        // The Swift client of the API (gRPC): used by the CLI and agents.
        .library(name: "LockstepClient", targets: ["LockstepClient"]),
        .library(name: "LockstepAgent", targets: ["LockstepAgent"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0", traits: []),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // FullFoundation only: the default ConfigurationSupport trait would pull swift-configuration.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: ["FullFoundation"]),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.2"),
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
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
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
        // HTTP/2 on libnghttp2 (issue 17): the C library, and the engine that drives it from a SwiftNIO channel.
        .systemLibrary(
            name: "CNGHTTP2",
            pkgConfig: "libnghttp2",
            providers: [.apt(["libnghttp2-dev"])]
        ),
        .target(
            name: "LockstepH2",
            dependencies: [
                "CNGHTTP2",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
            ],
            // The engine runs on one event loop per connection and its state is reached only from there:
            // release builds leave out the run-time exclusivity checks (8 % of a request's CPU, measured in
            // docs/benchmarks-api-history.md); debug builds, which run the tests, keep them.
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
        ),
        // glibc's heap statistics for /metrics (lockstep_heap_in_use_bytes).
        .target(name: "CMallocInfo"),
        .target(
            name: "LockstepStore",
            dependencies: [
                "CSQLite",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The log on PostgreSQL (issue 16): the same port and conformance suite as the SQLite log.
        .target(
            name: "LockstepPostgres",
            dependencies: [
                "LockstepStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        .target(
            name: "LockstepEngine",
            dependencies: [
                "LockstepCore",
                "LockstepPlan",
                "LockstepWire",
                "LockstepStore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "DequeModule", package: "swift-collections"),
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
        // The API (docs/api.md) without a transport: the agent, operator, history, watch and stage
        // services checked against a `Principal`, errors as `APIError`, parked calls (`Wakeups`), the
        // timer service and the server's metrics.
        .target(
            name: "LockstepService",
            dependencies: [
                "CMallocInfo",
                "LockstepCore",
                "LockstepEngine",
                "LockstepPlan",
                "LockstepStore",
                "LockstepWire",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // The JSON transport: routes on Hummingbird, HTTP/1.1 and h2c on one port, and the connection
        // limits and guards (also put in front of gRPC's listener).
        .target(
            name: "LockstepHTTP",
            dependencies: [
                "LockstepService",
                "LockstepEngine",
                "LockstepStore",
                "LockstepWire",
                "LockstepH2",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            // The web console's files, inside the binary (docs/console.md).
            resources: [
                .embedInCode("ConsoleAssets/index.html"),
                .embedInCode("ConsoleAssets/app.js"),
                .embedInCode("ConsoleAssets/ui.js"),
                .embedInCode("ConsoleAssets/shell.js"),
                .embedInCode("ConsoleAssets/views.js"),
                .embedInCode("ConsoleAssets/migration.js"),
                .embedInCode("ConsoleAssets/migration-tabs.js"),
                .embedInCode("ConsoleAssets/app.css"),
            ]
        ),
        // The gRPC transport (grpc-swift-2 over its NIO HTTP/2 transport): the generated service
        // protocols implemented over LockstepService, the error-code interceptor, client identity under mTLS.
        .target(
            name: "LockstepGRPC",
            dependencies: [
                "LockstepAPI",
                "LockstepService",
                "LockstepStore",
                "LockstepWire",
                "LockstepH2",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // Webhooks (docs/webhooks.md): notifications derived from the log, delivered signed, with retries,
        // by a service that reads the log at its own pace (AsyncHTTPClient).
        .target(
            name: "LockstepWebhooks",
            dependencies: [
                "LockstepCore",
                "LockstepEngine",
                "LockstepPlan",
                "LockstepPostgres",
                "LockstepService",
                "LockstepStore",
                "LockstepWire",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // The composition root: `LockstepServer.build` puts the log, the coordinator, both transports and
        // the timers together as services of one ServiceGroup.
        .target(
            name: "LockstepServer",
            dependencies: [
                "LockstepCore",
                "LockstepEngine",
                "LockstepGRPC",
                "LockstepPlan",
                "LockstepWebhooks",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                "LockstepHTTP",
                "LockstepService",
                "LockstepStore",
                "LockstepPostgres",
                "LockstepH2",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        // The reference agent (docs/agent.md) as a library: handlers run with swift-subprocess, shutdown
        // with swift-service-lifecycle.
        .target(
            name: "LockstepAgent",
            dependencies: [
                "LockstepClient",
                "LockstepCore",
                "LockstepWire",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Subprocess", package: "swift-subprocess"),
            ]
        ),
        // The command line: a thin executable over the libraries above.
        .executableTarget(
            name: "lockstep",
            dependencies: [
                "LockstepAgent",
                "LockstepClient",
                "LockstepService",
                "LockstepEngine",
                "LockstepPlan",
                "LockstepServer",
                "LockstepPostgres",
                "LockstepWire",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // `swift build -c release --product lockstep-bench`: figures for docs/benchmarks.md (see ops/bench/run).
        .executableTarget(
            name: "lockstep-bench",
            dependencies: ["LockstepEngine", "LockstepStore", "LockstepWire", "LockstepCore", "LockstepPlan", "CSQLite"],
            path: "ops/bench/Sources/lockstep-bench"
        ),
        // Wake-up latency with a compiled gRPC client (LockstepClient) for ops/bench/api.
        .executableTarget(
            name: "lockstep-wake",
            dependencies: ["LockstepClient", "LockstepWire"],
            path: "ops/bench/Sources/lockstep-wake"
        ),
        // Lease cycles of Lockstep and etcd with one client on libnghttp2 (blocking, a thread per client) for
        // ops/bench/compare: the servers' rates with as little of a client as can be (docs/benchmarks.md).
        .executableTarget(
            name: "lockstep-leases-h2",
            dependencies: ["CNGHTTP2", "LockstepWire", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            path: "ops/bench/Sources/lockstep-leases-h2"
        ),
        // The floor of our HTTP/2 stack for ops/bench/api: the same libraries, answering the same bytes, no Lockstep work.
        .executableTarget(
            name: "lockstep-bare",
            dependencies: [
                "LockstepAPI", "LockstepH2", "LockstepHTTP", "LockstepServer", "LockstepWire",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            path: "ops/bench/Sources/lockstep-bare"
        ),
        .testTarget(name: "LockstepCoreTests", dependencies: ["LockstepCore"]),
        .testTarget(
            name: "LockstepH2Tests",
            dependencies: [
                "LockstepH2", "CNGHTTP2", "LockstepTestSupport",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["h2_probe.py", "h2_probe_connection.py", "grpc_probe.py"]
        ),
        .testTarget(name: "LockstepPlanTests", dependencies: ["LockstepPlan", "LockstepEngine"]),
        .testTarget(
            name: "LockstepStoreTests",
            dependencies: ["LockstepStore", "LockstepEngine", "CSQLite", "LockstepTestSupport", "LockstepPostgres",
                           .product(name: "PostgresNIO", package: "postgres-nio")],
            exclude: ["commit-cutter.py"]
        ),
        // Shared by the test targets: temporary directories, child processes bounded in time, the built binary.
        .target(name: "LockstepTestSupport", dependencies: ["LockstepPostgres", .product(name: "PostgresNIO", package: "postgres-nio")],
                path: "Tests/LockstepTestSupport"),
        .testTarget(name: "LockstepWebhooksTests", dependencies: ["LockstepWebhooks", "LockstepCore", "LockstepEngine", "LockstepPlan", "LockstepStore", "LockstepWire"]),
        .testTarget(name: "LockstepServerTests", dependencies: ["LockstepServer", "LockstepService", "LockstepHTTP", "LockstepGRPC", "LockstepClient", "LockstepAgent", "LockstepCore", "LockstepEngine", "LockstepPlan", "LockstepWire", "LockstepTestSupport",
                                                             "LockstepAPI", "LockstepH2",
                                                             .product(name: "GRPCCore", package: "grpc-swift-2"),
                                                             .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                                                             .product(name: "NIOCore", package: "swift-nio"),
                                                             .product(name: "NIOPosix", package: "swift-nio"),
                                                             .product(name: "NIOEmbedded", package: "swift-nio"),
                                                             .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                                                             .product(name: "Logging", package: "swift-log"),
                                                             .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                                                             .product(name: "Yams", package: "Yams")],
                    exclude: ["Agents"]),
        .testTarget(
            name: "LockstepEngineTests",
            dependencies: ["LockstepEngine", "LockstepPlan", "LockstepWire", "CSQLite", "LockstepTestSupport",
                           .product(name: "Crypto", package: "swift-crypto")],
            exclude: ["Golden", "Shim"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
