import RefreshCtlKit

Refreshctl.mainWithExitCodes()
