/// The process-wide handle tables, one per handle type.
enum Registry {
    /// Live pools.
    static let pools = HandleTable<Pool>(kind: .pool)
    /// Live results held by callers or pending callbacks.
    static let results = HandleTable<ResultBox>(kind: .result)
    /// Live imap iterators.
    static let iterators = HandleTable<ImapIterator>(kind: .iterator)
    /// Live task groups.
    static let groups = HandleTable<TaskGroup>(kind: .group)
    /// Live signatures for typed calls.
    static let signatures = HandleTable<Signature>(kind: .signature)
    /// Started processes not yet destroyed.
    static let processes = HandleTable<ChildProcess>(kind: .process)
    /// Shared queues mapped in this process.
    static let queues = HandleTable<SharedQueue>(kind: .queue)
    /// Shared-memory segments mapped in this process.
    static let segments = HandleTable<SharedSegment>(kind: .shm)
    /// Process-shared locks (plain and recursive) mapped in this process.
    static let locks = HandleTable<SharedSync>(kind: .lock)
    /// Process-shared events mapped in this process.
    static let events = HandleTable<SharedSync>(kind: .event)
    /// Process-shared semaphores mapped in this process.
    static let semaphores = HandleTable<SharedSync>(kind: .semaphore)
    /// Pipe ends open in this process.
    static let pipes = HandleTable<PipeEnd>(kind: .pipe)
    /// Remote runtimes not shut down.
    static let runtimes = HandleTable<RemoteRuntime>(kind: .runtime)
    /// References to remote objects held by the caller.
    static let refs = HandleTable<RemoteObject>(kind: .ref)
    /// Actors not killed.
    static let actors = HandleTable<RemoteActor>(kind: .actor)
}
