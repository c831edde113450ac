/// The tasks a running remote task has submitted from its own thread (its nested tasks, its
/// children; not actor calls) that have not ended yet, so that cancelling the task cancels
/// them too, as ray.cancel does by default (`recursive=True`).
///
/// The parent's thread makes the list at its first nested submission and adds each child
/// before the child starts. A child leaves the list when it ends (before its first output
/// resolves, unless a cancel resolved it earlier), so a list holds only the children still to
/// end and a nested submit/get loop keeps nothing. When the parent's function returns, the
/// list closes: cancelling a task that has finished does nothing, and its children run on.
///
/// Each listed child is retained by the list, and retains the list until it leaves, so either
/// side may end first. A child added once the list was cancelled is cancelled at once: a
/// cancelled task that keeps running cannot start new work that outlives the cancel.
///
/// Only nested submissions pay for this (one thread-local read at every submission tells
/// them apart); the list is guarded by a plain lock, as such submissions are not the hot path.
final class ChildTasks {
    private let lock = Lock()
    /// Guarded by `lock`: the children not ended, each knowing its index here.
    private var children: [RemoteTask] = []
    /// Guarded by `lock`: set by `cancelAll`, and whether that was a forced cancel.
    private var cancelled = false
    private var forced = false
    /// Guarded by `lock`: set when the parent's function has returned.
    private var closed = false

    /// Adds `child`, which has not started, and returns nil; or, if the parent was cancelled
    /// already, returns whether that cancel was forced (the caller then cancels the child).
    /// A child of a closed list (its parent finished) is not added either, and not cancelled.
    func add(_ child: RemoteTask) -> Bool? {
        lock.withLock { () -> Bool? in
            if closed { return nil }
            if cancelled { return forced }
            child.joinedParent(self, at: children.count)
            children.append(child)
            return nil
        }
    }

    /// Takes `child`, which has ended, off the list.
    func remove(_ child: RemoteTask) {
        let gone: RemoteTask? = lock.withLock {
            let index = child.indexInParent
            guard !closed, index < children.count, children[index] === child else { return nil }
            // The last child takes its place.
            children.swapAt(index, children.count - 1)
            children[index].indexInParent = index
            return children.removeLast()
        }
        // The list's reference goes outside the lock (the caller still holds the child).
        withExtendedLifetime(gone) {}
    }

    /// Cancels every child not ended (recursively: each cancels its own children), and every
    /// child added from now on.
    func cancelAll(force: Bool) {
        let listed: [RemoteTask] = lock.withLock {
            cancelled = true
            forced = forced || force
            return closed ? [] : children
        }
        for child in listed { child.cancel(force: force) }
    }

    /// The parent's function returned: the list lets its children go.
    func close() {
        let listed: [RemoteTask] = lock.withLock {
            closed = true
            defer { children = [] }
            return children
        }
        withExtendedLifetime(listed) {}
    }
}
