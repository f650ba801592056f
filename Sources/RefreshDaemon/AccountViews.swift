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

    private enum Entry {
        /// A view, and its engine form once asked for (with the tz data it was converted with, held so
        /// a reload's new tz data can never be taken for it).
        case ready(AccountView, engine: (zones: ZoneInfoDirectory, EngineView)?)
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
            case .ready(let view, _) where view.changeCount == changes && now >= view.readAt: return .current(view)
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
            if case .reading(view.changeCount, _) = $0[account] { $0[account] = .ready(view, engine: nil) }
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
        // Only the entry still holding this very view (not one read since, nor one read for an
        // earlier instant than a view read just for this request) keeps an engine form.
        func holdsView(_ held: AccountView) -> Bool {
            held.changeCount == view.changeCount && held.readAt == view.readAt
        }
        let cached = views.withLockedValue { views -> EngineView? in
            guard case .ready(let held, let engine?) = views[account], holdsView(held), engine.zones === zones else {
                return nil
            }
            return engine.1
        }
        if let cached { return (view, cached) }
        let engine = EngineView(view, resolve: { try? zones.rules(for: $0) })
        views.withLockedValue {
            if case .ready(let held, _) = $0[account], holdsView(held) {
                $0[account] = .ready(held, engine: (zones, engine))
            }
        }
        return (view, engine)
    }
}
