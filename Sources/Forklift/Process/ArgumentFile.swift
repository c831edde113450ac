#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// A memfd that carried an argument too large for a mailbox slot to a worker process, and
/// its size in bytes.
///
/// A worker's proxy keeps the file of its last such argument (`WorkerProcess`) and writes the
/// next one into it: the pages the file already has cost far less to fill than fresh ones
/// (in this kind of VM, a few times less), and the worker process keeps the file mapped
/// between requests (`forklift_worker.h`, FLS_KEPT_ARGUMENT_BYTES), so it does not fault the
/// pages into a new mapping either. Only a file of at most `keptLimit` bytes is kept, so an
/// idle pool holds at most that much per worker process.
struct ArgumentFile {
    let descriptor: Int32
    let size: Int

    /// The largest file a worker's proxy keeps for the next argument.
    static let keptLimit = Int(FLS_KEPT_ARGUMENT_BYTES)

    /// Makes this the kept file: listed, so that a child forked from this process does not
    /// hold it open (`fls_kept_file_add`).
    func markKept() {
        fls_kept_file_add(descriptor)
    }

    /// Closes the file, unlisting it first if it was kept.
    func close() {
        fls_kept_file_remove(descriptor)
        _ = Glibc.close(descriptor)
    }
}
