import CForklift

/// A point on the monotonic clock after which a wait gives up, or none (wait forever).
struct Deadline {
    /// Nanoseconds on CLOCK_MONOTONIC, or `nil` for no limit.
    let instant: Int64?

    /// No limit.
    static let forever = Deadline(instant: nil)

    /// Converts a C timeout in seconds (negative: forever; 0: poll). NaN is invalid.
    init(timeout seconds: Double) throws(Failure) {
        guard !seconds.isNaN else { throw Failure(FL_EINVAL, "timeout is NaN") }
        if seconds < 0 || seconds > 1e9 {
            instant = nil
        } else {
            instant = fls_monotonic_ns() + Int64(seconds * 1e9)
        }
    }

    private init(instant: Int64?) { self.instant = instant }

    /// A deadline at an instant of the monotonic clock.
    init(instantNanoseconds: Int64) { self.instant = instantNanoseconds }

    /// Nanoseconds left (at least 0), or -1 for no limit: the futex shim's convention.
    var remainingNanoseconds: Int64 {
        guard let instant else { return -1 }
        return max(0, instant - fls_monotonic_ns())
    }

    /// Whether there is no limit.
    var isForever: Bool { instant == nil }

    /// Whether the deadline has passed.
    var hasPassed: Bool {
        guard let instant else { return false }
        return fls_monotonic_ns() >= instant
    }
}

extension Deadline {
    /// A deadline `nanoseconds` from now.
    init(nanosecondsFromNow nanoseconds: Int64) {
        self.init(instantNanoseconds: fls_monotonic_ns() + nanoseconds)
    }

    /// The earlier of two deadlines.
    func earlier(than other: Deadline) -> Deadline {
        guard let mine = instant else { return other }
        guard let theirs = other.instant else { return self }
        return mine <= theirs ? self : other
    }
}
