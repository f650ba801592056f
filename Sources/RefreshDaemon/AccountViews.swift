import Foundation
import NIOConcurrencyHelpers
import RefreshStore
import TZData

/// The control API's read side: one `AccountView` per account, read from the ledger on the read
/// threads once per ledger write and then shared by every request, so a budget question is a
/// dictionary lookup and the rule evaluation, never a SQLite call on the two threads that serve
/// requests.
///
/// Exact, not approximate: a view is used only while the ledger's `changeCount` is the one it was
/// read under and `now` is not before its read (the rules' windows only shrink with time). A
/// write makes every view stale; the next question reads that account again, once, however many
/// requests ask at the same moment (they wait for the same read).
final class AccountViews: Sendable {
    private let ledger: any Ledger
    private let work: APIWork
    private let views = NIOLockedValueBox<[String: Entry]>([:])
    /// Each account's view in the engine's form, with the tz data it was converted with.
    private let engines = NIOLockedValueBox<[String: (zones: ObjectIdentifier, engine: EngineView, of: AccountView)]>(
        [:])

    private enum Entry {
        case ready(AccountView)
        case reading(changeCount: UInt64, Task<AccountView, any Error>)
    }

    private enum Lookup {
        case current(AccountView)
        case reading(Task<AccountView, any Error>)
    }

    init(ledger: any Ledger, work: APIWork) {
        self.ledger = ledger
        self.work = work
    }

    /// The account's view, current at `now`.
    func view(_ account: String, now: Date) async throws -> AccountView {
        let changes = ledger.changeCount
        let lookup = views.withLockedValue { views -> Lookup in
            switch views[account] {
            case .ready(let view) where view.changeCount == changes && now >= view.readAt: return .current(view)
            case .reading(changes, let task): return .reading(task)
            default:
                let task = Task { [ledger, work] in
                    try await work.read { try await ledger.accountView(account: account, now: now) }
                }
                views[account] = .reading(changeCount: changes, task)
                return .reading(task)
            }
        }
        let task: Task<AccountView, any Error>
        switch lookup {
        case .current(let view): return view
        case .reading(let reading): task = reading
        }
        let view: AccountView
        do {
            view = try await task.value
        } catch {
            views.withLockedValue {
                if case .reading(changes, _) = $0[account] { $0[account] = nil }
            }
            throw error
        }
        views.withLockedValue {
            if case .reading(view.changeCount, _) = $0[account] { $0[account] = .ready(view) }
        }
        // A view read for a later instant than this request's cannot answer it (rare: a request
        // that took its "now" just before another started the read); read for this instant.
        guard now >= view.readAt else {
            return try await work.read { [ledger] in try await ledger.accountView(account: account, now: now) }
        }
        return view
    }

    /// The account's view and its engine form (zones resolved with `zones`, once per view and tz
    /// data, not per question), current at `now`.
    func engineView(_ account: String, now: Date, zones: ZoneInfoDirectory) async throws -> (AccountView, EngineView) {
        let view = try await self.view(account, now: now)
        let id = ObjectIdentifier(zones)
        if let cached = engines.withLockedValue({ $0[account] }), cached.zones == id,
            cached.of.changeCount == view.changeCount, cached.of.readAt == view.readAt
        {
            return (view, cached.engine)
        }
        let engine = EngineView(view, resolve: { try? zones.rules(for: $0) })
        engines.withLockedValue { $0[account] = (id, engine, view) }
        return (view, engine)
    }
}
