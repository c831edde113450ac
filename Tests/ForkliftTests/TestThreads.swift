@testable import Forklift

/// A thread running a closure, for tests that call the C entry points from several threads.
private final class ClosureBody: ThreadBody {
    let work: () -> Void
    init(_ work: @escaping () -> Void) { self.work = work }
    func run() { work() }
}

/// Starts a thread running `work`; join it with `OSThread.join`.
func startThread(_ work: @escaping () -> Void) -> UInt64 { try! OSThread.start(ClosureBody(work)) }
