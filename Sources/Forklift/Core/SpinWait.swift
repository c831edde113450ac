#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// The pauses of a spin-wait (for a result, for work, for an actor's next call): a CPU pause each,
/// and every 256th a yield of the CPU (`sched_yield`) to a thread that is ready to run on it.
///
/// With more ready threads than CPUs (a submitting thread and the workers of a pool on two
/// CPUs), a thread spinning for something could otherwise hold the very CPU that the thread
/// it waits for needs, until the scheduler's time slice ends. The yield costs a system call
/// every few microseconds of spinning, and returns at once when no other thread wants the CPU.
struct SpinWait {
    /// Pauses so far.
    private(set) var count = 0

    @inline(__always)
    mutating func pause() {
        fls_cpu_relax()
        count += 1
        if count & 255 == 0 { sched_yield() }
    }
}
