/// Sixty-four bytes of nothing, declared between the stored properties of a long-lived class
/// that several threads use at every task, so that what one thread writes often never shares
/// a cache line with what another reads: a write there would take the line from the reader,
/// and the reader's next look would take it back.
///
/// As a class's first stored property, it keeps the object's header (its reference count,
/// which submitting threads change at every task) off the lines of the fields.
struct CacheLinePadding {
    private let words: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0)
}
