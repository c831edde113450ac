import CForklift

/// Where a thread submitting a call to an actor hands it straight to a worker lingering on
/// that actor, so that neither takes the actor's lock from the other while calls stream in
/// (`RemoteActor.workerCallEnded`). Three cache lines:
///
/// - The hand-off word: nil, `lingering` (a worker spins on it, holding the actor's one
///   running slot), or a call handed over (a retained `RemoteTask`, which takes the slot).
/// - The number of calls queued and not yet taken, published under the actor's lock, read by
///   a worker as it starts to linger. It changes only when calls pile up, so a stream of
///   calls handed over one by one never writes it; a stream that piles up writes it at
///   every call, and no worker reads it meanwhile (a gathering one looks at the flags).
/// - The flags, written rarely and read often: killed, which a worker running a batch of
///   calls reads before each, and hurry, which a gathering worker watches.
///
/// Why no call waits while a worker lingers: the worker stores `lingering`, then (after a
/// full fence) reads the queued count; a submitter that found no worker lingering stores the
/// count, then (after a full fence) looks again. Either the submitter sees the worker
/// lingering and hands the call over, or the worker sees the call queued and takes it
/// through the lock. (Lingering ends through the lock in any case, so this only saves time.)
struct ActorHandOff {
    private let words: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private static var lingering: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: 1)! }

    init() {
        words = UnsafeMutableRawPointer.allocate(byteCount: 192, alignment: 64)
            .bindMemory(to: UnsafeMutableRawPointer?.self, capacity: 24)
        words.initialize(repeating: nil, count: 24)
    }

    func deallocate() { UnsafeMutableRawPointer(words).deallocate() }

    private var queuedCount: UnsafeMutablePointer<UInt64> {
        UnsafeMutableRawPointer(words + 8).assumingMemoryBound(to: UInt64.self)
    }

    private var killedFlag: UnsafeMutablePointer<UInt32> {
        UnsafeMutableRawPointer(words + 16).assumingMemoryBound(to: UInt32.self)
    }

    /// Set by a thread that waits for a call still queued (`hurry`), for a worker gathering calls.
    private var hurryFlag: UnsafeMutablePointer<UInt32> {
        UnsafeMutableRawPointer(words + 17).assumingMemoryBound(to: UInt32.self)
    }

    /// Whether the actor was killed.
    var isKilled: Bool { fls_atomic_load_u32(killedFlag) != 0 }

    /// The word `kill` sets, for a reader that watches it (an isolated actor's process
    /// restarts stop when it is set).
    var killedWord: UnsafePointer<UInt32> { UnsafePointer(killedFlag) }

    /// A thread waits for a call that is still queued: a worker gathering calls takes them now,
    /// and goes on without gathering until it empties the queue.
    func hurry() {
        if fls_atomic_load_u32(hurryFlag) == 0 { fls_atomic_store_u32(hurryFlag, 1) }
    }

    /// The queue has just been emptied (under the actor's lock): no call is waited for any more.
    func clearHurry() {
        if fls_atomic_load_u32(hurryFlag) != 0 { fls_atomic_store_u32(hurryFlag, 0) }
    }

    // MARK: The submitting side (holding the actor's lock)

    /// Publishes how many calls wait in the actor's queue (no write if that is unchanged).
    func setQueued(_ count: Int) {
        if fls_atomic_load_relaxed_u64(queuedCount) != UInt64(count) { fls_atomic_store_u64(queuedCount, UInt64(count)) }
    }

    /// Whether a worker lingers now (a hint: `handOver` decides).
    var hasLingerer: Bool { fls_atomic_load_ptr(words) == Self.lingering }

    /// `hasLingerer`, after a full fence: what a submitter that has just published the queued
    /// count (`setQueued`) asks, so that it or the worker sees the other.
    var hasLingererAfterPublishing: Bool {
        fls_fence_seq_cst()
        return hasLingerer
    }

    /// Hands `call` (retained by the caller) to the lingering worker, with the running slot;
    /// false if no worker lingers any more (the call and its reference stay the caller's).
    func handOver(_ call: UnsafeMutableRawPointer) -> Bool {
        var expected: UnsafeMutableRawPointer? = Self.lingering
        return fls_atomic_cas_ptr(words, &expected, call)
    }

    /// The actor is killed: a worker running a batch cancels the rest of it, a lingering
    /// worker is sent away (it gives its slot back).
    func kill() {
        fls_atomic_store_u32(killedFlag, 1)
        var expected: UnsafeMutableRawPointer? = Self.lingering
        _ = fls_atomic_cas_ptr(words, &expected, nil)
    }

    // MARK: The lingering worker

    /// Starts lingering, if the word is free: false while a call handed to another worker
    /// waits there for it (that worker lingered and the call's slot went to a thread that ran
    /// the call itself: see `RemoteActor.workerCallEnded`). Only a worker that started
    /// lingering may `wait` and `stopLingering`.
    func startLingering() -> Bool {
        var expected: UnsafeMutableRawPointer? = nil
        return fls_atomic_cas_ptr(words, &expected, Self.lingering)
    }

    /// Whether calls wait in the queue, asked by a worker that has just started lingering (it
    /// then takes them through the lock instead of waiting).
    var callsQueuedAfterLingering: Bool {
        fls_fence_seq_cst()
        return fls_atomic_load_relaxed_u64(queuedCount) != 0
    }

    /// Spins until a call is handed over, the worker is dismissed, `spins` pauses have passed
    /// or `giveUp` says so (checked every 16 pauses).
    ///
    /// The word is looked at every 64 pauses (a microsecond or two), not at every one: a
    /// worker watching it without pause takes its line back the moment a submitter has
    /// written it, so that every call of a stream crosses between the CPUs on its own (a
    /// hand-over each). Looking less often, the worker finds the next calls queued behind the
    /// one handed over and takes them together (`RemoteActor.takeBatch`), and the submitter
    /// queues most calls on lines no other CPU touches meanwhile. Measured on W6p: +7% median
    /// (9 interleaved runs); runs in which most calls went in batches reached 1.5-1.6 M calls/s,
    /// runs with a hand-over per call about 1 M. A thread waiting for a handed call's output
    /// claims it and runs it itself, so a caller that waits for each call is not slowed.
    func wait(spins: Int, giveUp: () -> Bool) {
        var spin = SpinWait()
        while spin.count < spins {
            if spin.count & 63 == 0 && fls_atomic_load_ptr(words) != Self.lingering { return }
            if spin.count & 15 == 15 && giveUp() { return }
            spin.pause()
        }
    }

    /// Spins, holding the running slot without lingering, while calls pile up in the queue:
    /// for `spins` pauses, or until a thread waits for a call (`hurry`), the actor is killed
    /// or `giveUp` says so, looked at every 16 pauses (the flags' line stays in this worker's
    /// cache until one changes). The queued count is not looked at: the submitting thread
    /// writes it at every call, and a worker reading it would take its line each time, so
    /// that the next call's write waited for a cache line round trip.
    func gather(spins: Int, giveUp: () -> Bool) {
        var spin = SpinWait()
        while spin.count < spins {
            if spin.count & 15 == 0 && (fls_atomic_load_u32(hurryFlag) != 0 || isKilled || giveUp()) { return }
            spin.pause()
        }
    }

    /// Stops lingering: returns the call handed over (retained, with the slot), or nil (the
    /// worker still holds the slot and gives it back through the lock).
    func stopLingering() -> UnsafeMutableRawPointer? {
        let taken = fls_atomic_exchange_ptr(words, nil)
        return taken == Self.lingering ? nil : taken
    }
}
