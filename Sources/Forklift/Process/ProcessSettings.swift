import CForklift

/// How a process-backed pool runs its worker processes (from `fl_pool_options`).
struct ProcessSettings {
    /// Seconds a task may run before its worker is killed; 0: no limit.
    var taskTimeout: Double = 0
    /// Tasks a worker runs before it is replaced; 0: no limit.
    var maxTasksPerChild: Int = 0
    /// Runs of a task after its worker died.
    var retries: Int = 0
    /// Whether a worker queues further tasks behind the running one (see `WorkerProcess`).
    /// Off where a running task may be killed on its own (fl_cancel_force).
    var pipelines = true
    /// How many times a worker process may be started, the first included; 0: no limit.
    var maxStarts = 0
    /// Requests a pool's worker process has in flight: while one runs, the proxy queues the
    /// next ones behind it, so the child goes from one to the next without sleeping.
    static let pipelineDepth: UInt32 = 32
    /// Bytes of argument (and of result) carried in each slot of a pool worker's mailbox;
    /// larger ones travel in a memfd of their own.
    static let slotCapacity = 256 << 10
    /// Bytes of result an `fl_process` may return (and of argument carried inline).
    static let processResultCapacity = 1 << 20

    init(retries: Int = 0, pipelines: Bool = true, maxStarts: Int = 0) {
        self.retries = retries
        self.pipelines = pipelines
        self.maxStarts = maxStarts
    }

    /// The process settings of pool options, or nil for a thread pool.
    init?(options: fl_pool_options) throws(Failure) {
        switch options.backend {
        case FL_BACKEND_THREAD:
            guard options.task_timeout <= 0 && options.max_tasks_per_child == 0 && options.task_retries == 0 else {
                throw Failure(FL_EINVAL, "task_timeout, max_tasks_per_child and task_retries need FL_BACKEND_PROCESS")
            }
            return nil
        case FL_BACKEND_PROCESS:
            guard options.task_timeout.isFinite || options.task_timeout < 0 else {
                throw Failure(FL_EINVAL, "task_timeout must be a number of seconds")
            }
            guard options.task_retries >= 0 else { throw Failure(FL_EINVAL, "task_retries must not be negative") }
            taskTimeout = max(0, options.task_timeout)
            // A size_t of 2^63 or more arrives negative: that many tasks is no limit.
            maxTasksPerChild = max(0, options.max_tasks_per_child)
            retries = Int(options.task_retries)
        default:
            throw Failure(FL_EINVAL, "backend is \(options.backend): use FL_BACKEND_THREAD or FL_BACKEND_PROCESS")
        }
    }
}
