import CForklift

/// Work that a pool runs through task nodes of kind `FLS_NODE_JOB`: a map split into chunks,
/// a strided map, the chunks of an imap, a remote task that sends itself to a worker process.
/// A node holds the job retained; a worker calls `run(node:)` on its own thread (never in the
/// worker process of a process pool) and then releases it.
class PoolJob {
    /// Runs (or, when the pool has been terminated, cancels) the work a node stands for.
    func run(node: UnsafeMutablePointer<fls_node>, cancelled: Bool) {
        fatalError("PoolJob.run must be overridden")
    }
}
