import CForklift

/// One worker thread of a pool: runs the initializer, then takes nodes from the pool's queue,
/// spinning briefly and then parking when there are none, until the pool winds down.
final class PoolWorker: ThreadBody {
    unowned let pool: Pool
    let index: Int
    var threadID: UInt64 = 0

    /// Polls of an empty queue before parking.
    private static let spins = 200

    init(pool: Pool, index: Int) {
        self.pool = pool
        self.index = index
    }

    func run() {
        "\(pool.name)-\(index)".withCString { fls_set_thread_name($0) }
        fls_tls_set_worker(Unmanaged.passUnretained(self).toOpaque())
        defer {
            fls_tls_set_worker(nil)
            pool.workerExited()
        }
        guard pool.runInitializer() else { return }
        let queue = pool.queue
        while true {
            if let node = queue.pop() {
                pool.execute(node)
                continue
            }
            var spun = 0
            while spun < Self.spins && queue.isEmpty {
                fls_cpu_relax()
                spun += 1
            }
            if spun < Self.spins { continue }
            if pool.isWindingDown { return }
            let key = pool.idle.prepareWait()
            if !queue.isEmpty || pool.isWindingDown {
                pool.idle.cancelWait()
                continue
            }
            pool.idle.wait(key, until: .forever)
        }
    }

    /// The worker running on the calling thread, if any.
    static var current: PoolWorker? {
        guard let raw = fls_tls_worker() else { return nil }
        return Unmanaged<PoolWorker>.fromOpaque(raw).takeUnretainedValue()
    }
}
