import CForklift

/// Who an object tells when it resolves: a task taking it as an argument (dataflow), or a
/// callback of fl_ref_on_ready.
enum ObjectDependent {
    case task(RemoteTask)
    case callback(fl_ready_fn, UnsafeMutableRawPointer?)

    /// Tells the dependent that its object resolved with `status` (FL_OK, or the failure's).
    func objectResolved(status: @autoclosure () -> Int32) {
        switch self {
        case .task(let task): task.dependencyResolved()
        case .callback(let fn, let user): fn(user, status())
        }
    }
}
