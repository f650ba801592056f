import Foundation
import RefreshDaemon

// Before anything uses Swift concurrency: request handlers run on the event loop that read the
// request (GlobalExecutor).
let environment = ProcessInfo.processInfo.environment
if let problem = GlobalExecutor.problem(environment: environment) {
    FileHandle.standardError.write(Data("refreshd: \(problem)\n".utf8))
    exit(78)
}
GlobalExecutor.install(environment: environment)
await RefreshdCommand.runFromCommandLine()
