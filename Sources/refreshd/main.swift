import RefreshDaemon

await RefreshdCommand.runFromCommandLine()
