// swift-tools-version:6.1
import PackageDescription

// libFuzzer targets for Lockstep (docs/reliability.md, Fuzzing). Built and run by `ops/fuzz/run`:
//   swift build --package-path ops/fuzz --scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address
// Each target's `main` hands its input function to libFuzzer (`LLVMFuzzerRunDriver`, FuzzDriver). They depend on the pure
// layers (core, wire, plan files) and the HTTP/2 engine (LockstepH2), so the sanitized build stays a few minutes.
let package = Package(
    name: "LockstepFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "Lockstep", path: "../..")],
    targets: [
        .target(name: "FuzzDriver"),
        // Plan files: YAML text → lint findings and a plan, whatever the bytes.
        .executableTarget(name: "fuzz-plan", dependencies: ["FuzzDriver", .product(name: "LockstepPlan", package: "Lockstep"),
                                                             .product(name: "LockstepCore", package: "Lockstep")]),
        // Stored bytes: event records and snapshots (canonical state).
        .executableTarget(name: "fuzz-record", dependencies: ["FuzzDriver", .product(name: "LockstepWire", package: "Lockstep"),
                                                               .product(name: "LockstepCore", package: "Lockstep")]),
        // Every API request message, as protobuf and as JSON, with the edge's checks on what decodes.
        .executableTarget(name: "fuzz-requests", dependencies: ["FuzzDriver", .product(name: "LockstepWire", package: "Lockstep"),
                                                                 .product(name: "LockstepCore", package: "Lockstep")]),
        // What an HTTP/2 client sends, through the engine (libnghttp2 and the state machine) and the gRPC reading.
        .executableTarget(name: "fuzz-h2", dependencies: ["FuzzDriver", .product(name: "LockstepH2", package: "Lockstep")]),
        // Sequences of commands against decide/evolve, with invariants checked after every event.
        .executableTarget(name: "fuzz-decide", dependencies: ["FuzzDriver", .product(name: "LockstepCore", package: "Lockstep")]),
    ],
    swiftLanguageModes: [.v6]
)
