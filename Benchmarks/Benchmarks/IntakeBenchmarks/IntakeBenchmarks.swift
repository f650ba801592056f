import Benchmark
import Foundation
import Glibc
import Logging
import RefreshCore
import RefreshDaemon
import RefreshStore
import TZData

// 10,000 job files dropped at once into incoming/, taken into a fresh ledger by one scan; and, for
// comparison, a plain loop that only reads and unlinks the same files.
let zones = try! ZoneInfoDirectory(path: ZoneInfoDirectory.defaultPath(environment: ProcessInfo.processInfo.environment))
let fileCount = 10_000

func makeSpool() -> (root: String, incoming: String) {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("refreshd-intake-\(UUID().uuidString)").path
    let incoming = root + "/spool/incoming"
    try! FileManager.default.createDirectory(atPath: incoming, withIntermediateDirectories: true)
    for index in 0..<fileCount {
        let segment = String(format: "0f8c5e8e-1111-4f4a-9a53-%012d", index)
        let text = JobFile.render(JobRequest(segmentID: segment, timeZone: "America/Chicago"))
        try! text.write(toFile: incoming + "/job-\(index).json", atomically: false, encoding: .utf8)
    }
    return (root, incoming)
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .throughput, .mallocCountTotal, .peakMemoryResident], maxDuration: .seconds(60), maxIterations: 5)
    let logger = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }

    Benchmark("spool intake: 10,000 files into the ledger (one scan)") { benchmark in
        benchmark.stopMeasurement()
        let (root, _) = makeSpool()
        let ledger = try! SQLiteLedger(path: root + "/ledger.sqlite", now: Date())
        let intake = SpoolIntake(
            spoolDirectory: root + "/spool", ledger: ledger, accounts: ["default"], zones: zones, maxQueuedJobs: 1_000_000,
            now: { Date() }, logger: logger)
        try! intake.prepareDirectories()
        benchmark.startMeasurement()
        let state = await intake.scan()
        benchmark.stopMeasurement()
        precondition(state.taken == fileCount, "took \(state.taken)")
        try? FileManager.default.removeItem(atPath: root)
    }

    Benchmark("baseline: read + unlink the same 10,000 files") { benchmark in
        benchmark.stopMeasurement()
        let (root, incoming) = makeSpool()
        benchmark.startMeasurement()
        for name in try! FileManager.default.contentsOfDirectory(atPath: incoming) {
            let path = incoming + "/" + name
            blackHole(FileManager.default.contents(atPath: path))
            unlink(path)
        }
        benchmark.stopMeasurement()
        try? FileManager.default.removeItem(atPath: root)
    }
}
