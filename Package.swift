// swift-tools-version: 6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "tsbackup",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tsbackup", targets: ["tsbackup"]),
        // The archive commands alone (wal-push, wal-fetch), for archive_command/restore_command:
        // PostgreSQL starts one per 16 MB segment, so it links only TSBackupWAL (see README).
        .executable(name: "tsbackup-wal", targets: ["tsbackup-wal"]),
        .executable(name: "tsbackup-demo", targets: ["tsbackup-demo"]),
        .executable(name: "tsbackup-bench", targets: ["tsbackup-bench"]),
        .library(name: "TSBackup", targets: ["TSBackup"]),
        .library(name: "TSBackupService", targets: ["TSBackupService"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        // The service (`tsbackup serve`): HTTP, lifecycle, state, config, metrics, dashboard.
        .package(url: "https://github.com/hummingbird-project/hummingbird", .upToNextMinor(from: "2.28.0")),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
    ],
    targets: [
        // libzstd through its C API: WAL segments are compressed in-process (no child per segment).
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        // The WAL archive's core, small on purpose: the object format, file names, the cluster's
        // identity, the archive marker and the local archive store, with wal-push/wal-fetch for
        // local repositories as synchronous code. FoundationEssentials only (no Foundation, ICU,
        // NIO): `tsbackup-wal` links nothing else, so a process per segment starts cheaply.
        .target(
            name: "TSBackupWAL",
            dependencies: [
                "CZstd",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // The library: everything tsbackup knows and does.
        .target(
            name: "TSBackup",
            dependencies: [
                "CZstd",
                "TSBackupWAL",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: swiftSettings
        ),
        // Throwaway PostgreSQL + TimescaleDB clusters and deterministic sample data, shared by the
        // demo, the integration tests and the benchmarks.
        .target(
            name: "TSBackupSandbox",
            dependencies: [
                "TSBackup",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Subprocess", package: "swift-subprocess"),
            ],
            swiftSettings: swiftSettings
        ),
        // `tsbackup serve`: the HTTP service on top of the library (the library itself knows no HTTP).
        .target(
            name: "TSBackupService",
            dependencies: [
                "TSBackup",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // The command-line entry: argument parsing only.
        .executableTarget(
            name: "tsbackup",
            dependencies: [
                "TSBackup",
                "TSBackupService",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        // `tsbackup-wal wal-push|wal-fetch`: the archive commands without the rest of tsbackup. It
        // hands S3 and encrypted repositories to the `tsbackup` binary beside it.
        .executableTarget(
            name: "tsbackup-wal",
            dependencies: ["TSBackupWAL"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "tsbackup-demo",
            dependencies: [
                "TSBackupSandbox",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Subprocess", package: "swift-subprocess"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "tsbackup-bench",
            dependencies: [
                "TSBackupSandbox",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TSBackupTests",
            dependencies: ["TSBackup"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "ServiceTests",
            dependencies: [
                "TSBackup",
                "TSBackupService",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "TSBackup",
                "TSBackupSandbox",
                "tsbackup",
                "tsbackup-wal",
                "tsbackup-demo",
                "TSBackupService",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOFoundationEssentialsCompat", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
    ],
    // Swift 6 mode for every target: complete data-race checking, findings are errors. Tools
    // version 6.2 defaults to it; said explicitly so it never depends on that default.
    swiftLanguageModes: [.v6]
)
