// swift-tools-version: 6.1
import PackageDescription

/// Warnings are errors in refreshd's own targets; dependencies are left alone.
let strict: [SwiftSetting] = [.unsafeFlags(["-warnings-as-errors"])]

let package = Package(
    name: "refreshd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "refreshd", targets: ["refreshd"]),
        .executable(name: "refreshctl", targets: ["refreshctl"]),
        .library(name: "TZData", targets: ["TZData"]),
        .library(name: "RefreshCore", targets: ["RefreshCore"]),
        .library(name: "RefreshStore", targets: ["RefreshStore"]),
        .library(name: "RefreshWire", targets: ["RefreshWire"]),
        .library(name: "RefreshViews", targets: ["RefreshViews"]),
        .library(name: "RefreshDaemon", targets: ["RefreshDaemon"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // Reads the host's tz database: TZif parsing and POSIX TZ rules are pure over bytes;
        // ZoneInfoDirectory is the one place that touches the zoneinfo files.
        .target(name: "TZData", swiftSettings: strict),
        // The rule engine: calendar windows, rules, budgets and the plan. Foundation and TZData's
        // pure types only; no files, sockets, SQLite or clock reads.
        .target(name: "RefreshCore", dependencies: ["TZData"], swiftSettings: strict),
        // The ledger: GRDB on the system libsqlite3, its migrations and the reservation protocol.
        .target(
            name: "RefreshStore",
            dependencies: ["RefreshCore", "TZData", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict
        ),
        // What the daemon and its clients share, and nothing of the daemon's stack: the
        // configuration (file, environment, socket and spool resolution), the control API's
        // bodies and routes, the spool layout, the version. refreshctl links this, never
        // RefreshDaemon (no GRDB, Hummingbird or Prometheus in the client).
        .target(
            name: "RefreshWire",
            dependencies: ["RefreshCore", "TZData", .product(name: "TOMLKit", package: "TOMLKit")],
            swiftSettings: strict
        ),
        // What people look at: the budget timeline (text for a terminal, SVG) and the status page,
        // drawn from the control API's JSON bodies. Pure values; shared by refreshctl and the daemon.
        .target(name: "RefreshViews", dependencies: ["RefreshCore", "RefreshWire", "TZData"], swiftSettings: strict),
        // PostgreSQL as [ledger] describes it (postgres-nio): the connection and, with issue #13, the
        // shared ledger. Its own target, so only the daemon links the PostgreSQL client and TLS.
        .target(
            name: "RefreshPostgres",
            dependencies: [
                "RefreshWire", "RefreshStore", "RefreshCore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The concurrency runtime's global enqueue hook, set by reference (GlobalExecutor).
        .target(name: "CRefreshdHooks"),
        // The daemon: configuration, logging, adapters as Services, and the one composition root.
        .target(
            name: "RefreshDaemon",
            dependencies: [
                "RefreshCore", "RefreshStore", "TZData", "RefreshViews", "RefreshWire", "RefreshPostgres",
                "CRefreshdHooks",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            resources: [.embedInCode("Resources/openapi.json")],
            swiftSettings: strict
        ),
        // A small SendGrid stand-in on 127.0.0.1 for tests and demos: both segment endpoints, the
        // three documented rules in its own simple code (not RefreshCore), fault injection.
        .target(
            name: "FakeSendGrid",
            dependencies: [
                "TZData",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "refreshd", dependencies: ["RefreshDaemon"], swiftSettings: strict),
        // refreshctl's commands (a library so tests can check help texts and output verbatim).
        .target(
            name: "RefreshCtlKit",
            dependencies: [
                "TZData", "RefreshCore", "RefreshWire", "RefreshViews",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "refreshctl", dependencies: ["RefreshCtlKit"], swiftSettings: strict),
        // The ledgers' reservation benchmark (Benchmarks/ledger-bench.sh runs it in a release build):
        // a plain executable beside the stack it measures, so it needs none of Benchmarks/'s packages.
        .executableTarget(
            name: "refreshd-ledger-bench",
            dependencies: ["RefreshCore", "RefreshStore", "RefreshPostgres", "RefreshWire"],
            path: "Benchmarks/LedgerBench",
            swiftSettings: strict
        ),
        // Shared by the test targets: running CPU-heavy or blocking test work off the 2-thread
        // concurrency pool.
        .target(name: "TestSupport", path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(name: "TZDataTests", dependencies: ["TZData"], swiftSettings: strict),
        .testTarget(
            name: "RefreshCoreTests",
            dependencies: [
                "TestSupport", "RefreshCore", "TZData",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RefreshViewsTests",
            dependencies: ["TestSupport", "RefreshViews", "RefreshCore", "RefreshWire", "TZData"],
            exclude: ["Golden"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RefreshStoreTests",
            dependencies: [
                "TestSupport", "RefreshStore", "RefreshCore", "TZData", "RefreshPostgres", "RefreshWire",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RefreshDaemonTests",
            dependencies: [
                "TestSupport", "RefreshDaemon", "RefreshWire", "refreshd", "RefreshStore", "RefreshCore", "TZData",
                "FakeSendGrid", "RefreshPostgres",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            exclude: ["SpoolCorpus", "SpoolCorpus.tsv", "make_spool_corpus.py", "Fixtures"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RefreshCtlTests",
            dependencies: [
                "TestSupport", "RefreshCtlKit", "RefreshWire", "refreshctl", "refreshd", "TZData", "RefreshCore",
                "RefreshStore",
                "FakeSendGrid",
            ],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
