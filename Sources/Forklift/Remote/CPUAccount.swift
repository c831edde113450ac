import CForklift

/// The CPUs of a runtime (its worker count) and the tasks that asked for some
/// (`fl_remote_options.num_cpus`): a task holding k of them starts only while k are free;
/// the others wait here, in submission order, without holding a worker. Tasks that ask for
/// none never come here.
final class CPUAccount {
    /// CPUs in all: the runtime's workers.
    let capacity: Int
    private let lock = Lock()
    private var free: Int
    /// The waiters in submission order from `head`; a started one's entry is nil (the account
    /// must not keep a task, and with it its objects, alive after it ran).
    private var waiting: [RemoteTask?] = []
    private var head = 0

    init(capacity: Int) {
        self.capacity = capacity
        free = capacity
    }

    /// Takes the task's CPUs if they are free (returns true: schedule it now), else queues it
    /// behind the earlier waiters (returns false: `release` will schedule it).
    func acquire(_ task: RemoteTask) -> Bool {
        lock.withLock {
            if head == waiting.count && free >= task.options.cpus {
                free -= task.options.cpus
                task.holdsCPUs = true
                return true
            }
            waiting.append(task)
            return false
        }
    }

    /// Gives back the task's CPUs and schedules the waiters that now fit, oldest first.
    func release(_ task: RemoteTask) {
        guard task.holdsCPUs else { return }
        task.holdsCPUs = false
        let startable = lock.withLock { () -> [RemoteTask] in
            free += task.options.cpus
            return takeStartable()
        }
        for next in startable { task.runtime.enqueueHoldingCPUs(next) }
    }

    /// A task waiting in fl_get lends its CPUs: the waiters that fit start meanwhile.
    func lend(_ task: RemoteTask) {
        let startable = lock.withLock { () -> [RemoteTask] in
            free += task.options.cpus
            return takeStartable()
        }
        for next in startable { task.runtime.enqueueHoldingCPUs(next) }
    }

    /// The lender's wait is over: it takes its CPUs back at once (for a while more may be in
    /// use than there are, as when Ray's blocked tasks resume).
    func takeBack(_ task: RemoteTask) {
        lock.withLock { free -= task.options.cpus }
    }

    /// The tasks that never got their CPUs (at shutdown).
    func drain() -> [RemoteTask] {
        lock.withLock {
            let left = waiting[head...].compactMap { $0 }
            waiting = []
            head = 0
            return left
        }
    }

    /// Pops waiters from the head while they fit, marking their CPUs taken. Lock held.
    private func takeStartable() -> [RemoteTask] {
        var startable: [RemoteTask] = []
        while head < waiting.count, let next = waiting[head], free >= next.options.cpus {
            waiting[head] = nil
            head += 1
            free -= next.options.cpus
            next.holdsCPUs = true
            startable.append(next)
        }
        if head == waiting.count {
            waiting.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 64 && head * 2 > waiting.count {
            waiting.removeFirst(head)
            head = 0
        }
        return startable
    }
}
