import CForklift

/// A mutex in one 32-bit word of memory its owner provides (`fls_word_lock`): for locks
/// embedded in small, numerous records (remote objects), where a `Lock` would cost two
/// allocations, and for short critical sections under contention (an actor's queue, a task
/// queue's overflow list), where it spins briefly before it sleeps. Uncontended, locking is
/// one compare-and-swap and unlocking one exchange.
struct WordLock {
    /// The lock word; owned by whoever embeds the lock.
    let word: UnsafeMutablePointer<UInt32>

    init(word: UnsafeMutablePointer<UInt32>) {
        self.word = word
        word.initialize(to: 0)
    }

    /// The lock over a word that an `init(word:)` made a lock of before.
    init(initialized word: UnsafeMutablePointer<UInt32>) {
        self.word = word
    }

    /// Runs `body` with the lock held.
    @inline(__always)
    func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        fls_word_lock(word)
        defer { fls_word_unlock(word) }
        return try body()
    }
}
