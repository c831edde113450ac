import CForklift

/// A flag that is set once and can be awaited with a deadline (a futex word).
/// Used for result readiness: setting it costs one atomic exchange, plus a wake-up only when
/// somebody is waiting.
struct OneShotEvent {
    private static let set: UInt32 = 1
    private static let waited: UInt32 = 2

    /// The futex word; owned by whoever embeds the event.
    let word: UnsafeMutablePointer<UInt32>

    init(word: UnsafeMutablePointer<UInt32>) {
        self.word = word
        word.initialize(to: 0)
    }

    /// The event over a word that an `init(word:)` made an event of before.
    init(initialized word: UnsafeMutablePointer<UInt32>) {
        self.word = word
    }

    var isSet: Bool { fls_atomic_load_u32(word) & Self.set != 0 }

    /// Sets the event and wakes every waiter.
    func signal() {
        if fls_atomic_exchange_u32(word, Self.set) & Self.waited != 0 {
            fls_futex_wake(word, Int32.max)
        }
    }

    /// Polls before sleeping: a short task often completes within this, which saves a futex
    /// sleep and wake-up on both sides.
    private static let spins = 2000

    /// Waits until set or the deadline passes; returns whether it is set.
    func wait(until deadline: Deadline) -> Bool {
        var spin = SpinWait()
        while spin.count < Self.spins {
            if isSet { return true }
            spin.pause()
        }
        while true {
            var current = fls_atomic_load_u32(word)
            if current & Self.set != 0 { return true }
            if current == 0 {
                if !fls_atomic_cas_u32(word, &current, Self.waited) { continue }
            }
            let remaining = deadline.remainingNanoseconds
            if remaining == 0 { return isSet }
            _ = fls_futex_wait(word, Self.waited, remaining)
        }
    }
}
