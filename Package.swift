// swift-tools-version:5.10
import PackageDescription

/// Forklift: parallel execution with a stable C ABI.
///
/// `make` drives the release build: it links the dynamic library with `-static-stdlib` and a
/// version script that exports only `fl_*` symbols (see `Makefile`). The package itself stays
/// free of unsafe flags so that it can be used as a dependency.
let package = Package(
    name: "forklift",
    products: [
        .library(name: "forklift", type: .dynamic, targets: ["Forklift"]),
        .library(name: "forklift-static", type: .static, targets: ["Forklift"]),
    ],
    targets: [
        // Public C types (structs, status codes, callback typedefs) and internal C shims
        // (atomics on raw memory, futex, thread-locals, node allocator, deque, libffi calls).
        .target(name: "CForklift", linkerSettings: [.linkedLibrary("ffi")]),
        .target(name: "Forklift", dependencies: ["CForklift"]),
        .testTarget(name: "ForkliftTests", dependencies: ["Forklift", "CForklift"]),
    ]
)
