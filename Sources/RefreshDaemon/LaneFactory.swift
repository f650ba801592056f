import Foundation
import Logging
import RefreshCore
import RefreshStore
import RefreshWire
import TZData

/// How the composition root makes SendGrid clients and account lanes. The start and every reload
/// build through the one value `DaemonApplication.build` makes, so a lane is made one way: what a
/// configuration says about an account (its client, limits, pre-flight, max_attempts) is read here
/// and nowhere else.
public struct LaneFactory: Sendable {
    let ledger: any Ledger
    let now: @Sendable () -> Date
    let logger: Logger
    let observer: (any DispatchObserver)?
    let makeClient: @Sendable (DaemonConfiguration) -> SendGridClient

    public init(
        ledger: any Ledger, now: @escaping @Sendable () -> Date, logger: Logger, observer: (any DispatchObserver)?,
        makeClient: @escaping @Sendable (DaemonConfiguration) -> SendGridClient = LaneFactory.sendGridClient
    ) {
        self.ledger = ledger
        self.now = now
        self.logger = logger
        self.observer = observer
        self.makeClient = makeClient
    }

    /// refreshd's HTTP client for the configuration's SendGrid settings.
    @Sendable public static func sendGridClient(for configuration: DaemonConfiguration) -> SendGridClient {
        SendGridClient(
            baseURL: configuration.sendGridBaseURL.value,
            requestTimeoutSeconds: configuration.requestTimeoutSeconds.value,
            connectTimeoutSeconds: configuration.connectTimeoutSeconds.value, version: RefreshdVersion.current)
    }

    /// The client the lanes of `configuration` share: nil when every account runs dry; `current`
    /// when it was made for the same base URL and timeouts (`madeFor`); a new one otherwise.
    /// Returns whether it is new (the dispatcher then adopts it, to shut it down at the end).
    public func client(
        for configuration: DaemonConfiguration, current: SendGridClient?, madeFor: DaemonConfiguration?
    ) -> (client: SendGridClient?, isNew: Bool) {
        guard configuration.accounts.contains(where: { !configuration.isDryRun($0) }) else { return (current, false) }
        if let current, let madeFor,
            madeFor.sendGridBaseURL.value == configuration.sendGridBaseURL.value,
            madeFor.requestTimeoutSeconds.value == configuration.requestTimeoutSeconds.value,
            madeFor.connectTimeoutSeconds.value == configuration.connectTimeoutSeconds.value
        {
            return (current, false)
        }
        return (makeClient(configuration), true)
    }

    /// What `configuration` says about one account's lane (a dry-run account gets no client).
    public func settings(
        for account: AccountConfiguration, in configuration: DaemonConfiguration, client: SendGridClient?,
        zones: ZoneInfoDirectory
    ) -> AccountLane.Reconfiguration {
        AccountLane.Reconfiguration(
            account: account, client: configuration.isDryRun(account) ? nil : client, zones: zones,
            limits: configuration.limits(for: account.name), preflight: configuration.preflight.value,
            maxAttempts: configuration.maxAttempts.value)
    }

    /// A lane with these settings over the daemon's ledger, clock and observers.
    public func lane(_ settings: AccountLane.Reconfiguration) -> AccountLane {
        AccountLane(
            account: settings.account, ledger: ledger, client: settings.client, zones: settings.zones,
            limits: settings.limits, preflight: settings.preflight, maxAttempts: settings.maxAttempts, now: now,
            logger: logger, observer: observer)
    }

    /// One lane per account of `configuration`, sharing one client.
    public func dispatcher(
        for configuration: DaemonConfiguration, zones: ZoneInfoDirectory, clock: any Clock<Duration>
    ) -> DispatcherService {
        let client = client(for: configuration, current: nil, madeFor: nil).client
        let lanes = configuration.accounts.map {
            lane(settings(for: $0, in: configuration, client: client, zones: zones))
        }
        return DispatcherService(lanes: lanes, client: client, clock: clock)
    }
}
