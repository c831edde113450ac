import CForklift

/// The worker deaths of tasks that a borrower handed back to be queued, by result slot.
///
/// A thread that waits for its own task runs it in an idle worker process (`run(direct:)`),
/// but only the process's own thread may fork a fresh one: when that worker dies in the
/// task and retries are left, the task is queued instead and runs again on a pool thread's
/// process. That run starts from the deaths kept here, so `retries` counts every run and the
/// failure names them all.
///
/// Rare (a borrowed worker died with retries left); a submission reads one atomic word and
/// takes the lock only while some death is kept.
enum HandedBackDeaths {
    private static let lock = Lock()
    /// Guarded by `lock`.
    nonisolated(unsafe) private static var bySlot: [UnsafeMutableRawPointer: [String]] = [:]
    /// How many slots `bySlot` holds (read without the lock).
    private static let kept: UnsafeMutablePointer<UInt32> = {
        let word = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        word.initialize(to: 0)
        return word
    }()

    /// Keeps `deaths` (descriptions of the workers that died running it) for the task whose
    /// outcome goes to `slot`, which is queued next.
    static func keep(_ deaths: [String], for slot: UnsafeMutablePointer<fls_slot>) {
        lock.withLock {
            if bySlot.updateValue(deaths, forKey: UnsafeMutableRawPointer(slot)) == nil { _ = fls_atomic_add_u32(kept, 1) }
        }
    }

    /// The deaths kept for `slot` (taken out), or none.
    static func take(for slot: UnsafeMutablePointer<fls_slot>) -> [String] {
        guard fls_atomic_load_u32(kept) != 0 else { return [] }
        return lock.withLock {
            guard let deaths = bySlot.removeValue(forKey: UnsafeMutableRawPointer(slot)) else { return [] }
            _ = fls_atomic_sub_u32(kept, 1)
            return deaths
        }
    }
}
