import Foundation
import RefreshDaemon

// Before anything uses Swift concurrency: request handlers run on the event loop that read the
// request (GlobalExecutor).
GlobalExecutor.install(environment: ProcessInfo.processInfo.environment)
await RefreshdCommand.runFromCommandLine()
