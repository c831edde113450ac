import CForklift

/// Forks daemon processes from one thread that lives as long as the process.
///
/// A daemon asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG), but Linux
/// sends that signal when the *thread* that forked it ends. Forking every daemon from this
/// thread, which never ends before the process does, makes "parent" mean the process.
final class DaemonLauncher: ThreadBody {
    /// The launcher, started on first use.
    static let shared: Result<DaemonLauncher, Failure> = {
        let launcher = DaemonLauncher()
        do throws(Failure) {
            _ = try OSThread.start(launcher)
            return .success(launcher)
        } catch {
            return .failure(error)
        }
    }()

    private let lock = Lock()
    private let changed = Condition()
    private var requests: [Request] = []

    private final class Request {
        let work: () -> Int32
        var outcome: Int32?
        init(_ work: @escaping () -> Int32) { self.work = work }
    }

    /// Runs `work` (a fork) on the launcher thread and returns its result.
    static func perform(_ work: @escaping () -> Int32) throws(Failure) -> Int32 {
        let launcher = try shared.get()
        let request = Request(work)
        return launcher.lock.withLock {
            launcher.requests.append(request)
            launcher.changed.broadcast()
            while request.outcome == nil { _ = launcher.changed.wait(launcher.lock, until: .forever) }
            return request.outcome!
        }
    }

    func run() {
        "forklift-daemons".withCString { fls_set_thread_name($0) }
        lock.lock()
        while true {
            while requests.isEmpty { _ = changed.wait(lock, until: .forever) }
            let request = requests.removeFirst()
            lock.unlock()
            let outcome = request.work()
            lock.lock()
            request.outcome = outcome
            changed.broadcast()
        }
    }
}
