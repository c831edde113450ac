#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// The input of a map: fixed-size items at a stride, or an array of blobs (starmap).
enum MapInput {
    case items(base: UnsafeRawPointer?, size: Int)
    case blobs(UnsafePointer<fl_blob>)

    /// The argument blob of item `index`.
    @inline(__always)
    func argument(_ index: Int) -> (UnsafeRawPointer?, Int) {
        switch self {
        case let .items(base, size): return (base.map { $0 + index * size }, size)
        case let .blobs(blobs): return (blobs[index].data, blobs[index].len)
        }
    }
}

/// A map or starmap: `count` items in chunks of `chunkSize`. The pool gets one node per worker
/// (at most one per chunk); each node's worker claims chunks with one atomic increment each
/// until none is left, so work spreads without a node per item.
final class MapJob: PoolJob {
    let fn: fl_task_fn
    let user: UnsafeMutableRawPointer?
    let input: MapInput
    let count: Int
    let chunkSize: Int
    let box: ResultBox
    /// A private copy of the input (async calls), freed with the job.
    private let ownedInput: UnsafeMutableRawPointer?
    /// Whatever the tasks need alive until the job ends (a typed call's signature).
    private let keepAlive: AnyObject?
    private let nextChunk: UnsafeMutablePointer<UInt64>

    var chunkCount: Int { (count + chunkSize - 1) / chunkSize }

    init(fn: fl_task_fn, user: UnsafeMutableRawPointer?, input: MapInput, count: Int, chunkSize: Int, box: ResultBox,
         ownedInput: UnsafeMutableRawPointer?, keepAlive: AnyObject? = nil) {
        self.keepAlive = keepAlive
        self.fn = fn
        self.user = user
        self.input = input
        self.count = count
        self.chunkSize = chunkSize
        self.box = box
        self.ownedInput = ownedInput
        nextChunk = .allocate(capacity: 1)
        nextChunk.initialize(to: 0)
    }

    deinit {
        nextChunk.deallocate()
        free(ownedInput)
    }

    override func run(node: UnsafeMutablePointer<fls_node>, cancelled: Bool) {
        let chunks = UInt64(chunkCount)
        let pool = box.pool
        while true {
            let chunk = fls_atomic_add_u64(nextChunk, 1)
            if chunk >= chunks { return }
            let range = Int(chunk) * chunkSize..<min(count, Int(chunk + 1) * chunkSize)
            if cancelled || pool.isCancelled {
                for index in range {
                    ResultSlot.fail(box.slots + index, status: FL_ECANCELED, code: FL_ECANCELED,
                                    message: "cancelled before it ran")
                }
            } else if let process = fls_tls_worker_process() {
                runPipelined(range, in: Unmanaged<WorkerProcess>.fromOpaque(process).takeUnretainedValue(), pool: pool)
            } else {
                for index in range { runItem(index, pool: pool) }
            }
            box.completeAndNotify(units: range.count)
        }
    }

    private func runItem(_ index: Int, pool: Pool) {
        let (arg, length) = input.argument(index)
        TaskRunner.run(fn, user: user, arg: arg, length: length, slot: box.slots + index, index: UInt64(index),
                       cancelled: pool.cancelledFlag)
    }

    /// Runs the items of `range` in a worker process with several in flight: while one runs,
    /// the process's pipeline takes the next items of the range (then the pool's next nodes).
    private func runPipelined(_ range: Range<Int>, in process: WorkerProcess, pool: Pool) {
        let poolHook = process.runAnother
        var next = range.lowerBound
        let runNext = { [unowned(unsafe) self] in
            guard next < range.upperBound else {
                poolHook?()
                return
            }
            next += 1
            self.runItem(next - 1, pool: pool)
        }
        process.runAnother = runNext
        defer { process.runAnother = poolHook }
        while next < range.upperBound { runNext() }
    }
}

/// A strided map: a kernel over `count` elements in chunks, writing results in place.
final class StridedJob: PoolJob {
    let kernel: fl_kernel_fn
    let user: UnsafeMutableRawPointer?
    let input: UnsafeRawPointer?
    let inputStride: Int
    let output: UnsafeMutableRawPointer?
    let outputStride: Int
    let count: Int
    let chunkSize: Int
    let box: ResultBox
    private let nextChunk: UnsafeMutablePointer<UInt64>

    var chunkCount: Int { (count + chunkSize - 1) / chunkSize }

    init(kernel: fl_kernel_fn, user: UnsafeMutableRawPointer?, input: UnsafeRawPointer?, inputStride: Int,
         output: UnsafeMutableRawPointer?, outputStride: Int, count: Int, chunkSize: Int, box: ResultBox) {
        self.kernel = kernel
        self.user = user
        self.input = input
        self.inputStride = inputStride
        self.output = output
        self.outputStride = outputStride
        self.count = count
        self.chunkSize = chunkSize
        self.box = box
        nextChunk = .allocate(capacity: 1)
        nextChunk.initialize(to: 0)
    }

    deinit { nextChunk.deallocate() }

    override func run(node: UnsafeMutablePointer<fls_node>, cancelled: Bool) {
        runChunks(cancelled: cancelled)
    }

    /// Claims and runs chunks until none is left. Workers call it through their nodes; the
    /// thread of a synchronous call joins in too.
    func runChunks(cancelled: Bool) {
        let chunks = UInt64(chunkCount)
        let pool = box.pool
        while true {
            let chunk = fls_atomic_add_u64(nextChunk, 1)
            if chunk >= chunks { return }
            let start = Int(chunk) * chunkSize
            let end = min(count, start + chunkSize)
            if cancelled || pool.isCancelled {
                box.recordCancellation()
            } else {
                let code = kernel(user, input.map { $0 + start * inputStride }, inputStride,
                                  output.map { $0 + start * outputStride }, outputStride, end - start)
                if code != 0 { box.recordKernelFailure(chunk: Int(chunk), code: code, range: start..<end) }
            }
            box.completeAndNotify(units: 1)
        }
    }
}
