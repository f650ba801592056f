// swift-tools-version: 6.1
// Benchmarks for refreshd, kept apart so the main build and CI do not compile the benchmark stack.
// Run: cd Benchmarks && swift package --allow-writing-to-package-directory benchmark
import PackageDescription

let package = Package(
    name: "refreshd-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "refreshd", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
    ],
    targets: [
        .executableTarget(
            name: "CoreBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "RefreshCore", package: "refreshd"),
                .product(name: "TZData", package: "refreshd"),
            ],
            path: "Benchmarks/CoreBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "LedgerBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "RefreshStore", package: "refreshd"),
                .product(name: "RefreshCore", package: "refreshd"),
                .product(name: "RefreshDaemon", package: "refreshd"),
                .product(name: "TZData", package: "refreshd"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/LedgerBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "IntakeBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "RefreshDaemon", package: "refreshd"),
                .product(name: "RefreshStore", package: "refreshd"),
                .product(name: "RefreshCore", package: "refreshd"),
                .product(name: "TZData", package: "refreshd"),
            ],
            path: "Benchmarks/IntakeBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "DispatchBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "RefreshDaemon", package: "refreshd"),
                .product(name: "RefreshStore", package: "refreshd"),
                .product(name: "RefreshCore", package: "refreshd"),
                .product(name: "TZData", package: "refreshd"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/DispatchBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
