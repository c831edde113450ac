#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// The fork server of this process (the forkserver start method): a spawned, single-threaded
/// copy of the program that forks workers on request (see `forklift_spawn.h`). Started on
/// first use from the daemon launcher thread, so it ends with this process; started again if
/// it has died.
final class ForkServer {
    static let shared = ForkServer()

    private let lock = Lock()
    private var socket: Int32 = -1
    private var pid: pid_t = 0

    /// Has the server fork a worker for `worker`. Returns the status socket on which the end
    /// of the worker arrives.
    func fork(_ worker: UnsafeMutablePointer<fls_worker>, daemon: Bool) throws(Failure) -> Int32 {
        try lock.withLock { () throws(Failure) -> Int32 in
            for attempt in 0..<2 {
                if socket < 0 { try start() }
                var error: Int32 = 0
                let status = fls_forkserver_fork(socket, worker, daemon ? 1 : 0, &error)
                if status >= 0 { return status }
                guard error == EPIPE && attempt == 0 else {
                    throw Failure(FL_ESYSTEM, "the fork server could not start a process (errno \(error))")
                }
                // The server died: reap it and start another.
                close(socket)
                socket = -1
                waitpid(pid, nil, 0)
            }
            throw Failure(FL_ESYSTEM, "the fork server keeps dying")
        }
    }

    /// Spawns the server. Call with `lock` held.
    private func start() throws(Failure) {
        var serverPid: pid_t = 0
        var error: Int32 = 0
        let fd = try DaemonLauncher.perform { fls_forkserver_start(&serverPid, &error) }
        guard fd >= 0 else { throw Failure(FL_ESYSTEM, "could not spawn the fork server (errno \(error))") }
        socket = fd
        pid = serverPid
    }
}
