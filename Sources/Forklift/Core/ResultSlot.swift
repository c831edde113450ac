#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// Operations on an `fls_slot`, the record that holds one task's outcome: a result blob
/// (inline up to `FLS_SLOT_INLINE` bytes, else on the heap, in shared memory or in a caller's
/// buffer) or a failure code and message. A slot owns its heap buffer or shared mapping and its
/// message; `ResultSlot.clear` frees them.
enum ResultSlot {
    private static let inlineOffset = MemoryLayout<fls_slot>.offset(of: \fls_slot.inline_data)!

    /// A pending, empty slot.
    static var pending: fls_slot {
        var slot = fls_slot()
        slot.status = FLS_SLOT_PENDING
        return slot
    }

    /// Frees what the slot owns and makes it pending and empty again.
    static func clear(_ slot: UnsafeMutablePointer<fls_slot>) {
        releaseStorage(slot)
        if let message = slot.pointee.message { free(message) }
        slot.pointee = pending
    }

    /// Frees what a scratch slot owns, when it owns anything; the slot is not reset, so it must
    /// not be read again. A task that returned nothing and succeeded costs three loads.
    @inline(__always)
    static func discard(_ slot: UnsafeMutablePointer<fls_slot>) {
        if slot.pointee.heap != nil || slot.pointee.message != nil || slot.pointee.external == FLS_STORAGE_MAPPED {
            clear(slot)
        }
    }

    /// Marks a pending slot so that a result of `FLS_SHARE_MINIMUM` bytes or more goes into
    /// shared memory (a memfd) that worker processes can map.
    static func shareLarge(_ slot: UnsafeMutablePointer<fls_slot>) {
        slot.pointee.external = UInt32(FLS_STORAGE_SHARE_LARGE)
    }

    /// The memfd holding the slot's bytes, if they live in a shared mapping of their own.
    private static func mappedFile(_ slot: UnsafeMutablePointer<fls_slot>) -> Int32? {
        guard slot.pointee.external == FLS_STORAGE_MAPPED else { return nil }
        return (UnsafeRawPointer(slot) + inlineOffset).loadUnaligned(as: Int32.self)
    }

    /// The arena segment holding the slot's bytes (`FLS_STORAGE_ARENA`).
    private static func arenaSegment(_ slot: UnsafeMutablePointer<fls_slot>) -> UInt32 {
        (UnsafeRawPointer(slot) + inlineOffset).loadUnaligned(as: UInt32.self)
    }

    /// Where the slot's bytes live in shared memory, if they do: what a worker process maps.
    /// A memfd of their own is a place at offset 0 with no inode (mapped for one call); an
    /// arena range names its segment, which a worker maps once and keeps.
    static func sharedPlace(_ slot: UnsafeMutablePointer<fls_slot>) -> fls_arena_place? {
        switch UInt32(slot.pointee.external) {
        case UInt32(FLS_STORAGE_MAPPED):
            guard let file = mappedFile(slot) else { return nil }
            return fls_arena_place(fd: file, pad: 0, offset: 0, span: UInt64(slot.pointee.len), inode: 0)
        case UInt32(FLS_STORAGE_ARENA):
            var place = fls_arena_place()
            guard let heap = slot.pointee.heap, fls_arena_place_of(heap, arenaSegment(slot), &place) == 0 else { return nil }
            return place
        default:
            return nil
        }
    }

    /// Takes over `mapping` (`length` bytes of the memfd `file`, both now owned by the slot)
    /// as the result.
    static func adopt(_ slot: UnsafeMutablePointer<fls_slot>, mapping: UnsafeMutableRawPointer, length: Int, file: Int32) {
        releaseStorage(slot)
        slot.pointee.heap = mapping
        slot.pointee.len = length
        slot.pointee.external = UInt32(FLS_STORAGE_MAPPED)
        (UnsafeMutableRawPointer(slot) + inlineOffset).storeBytes(of: file, as: Int32.self)
    }

    /// Frees the result storage the slot owns: a heap block, or a shared mapping and its memfd.
    private static func releaseStorage(_ slot: UnsafeMutablePointer<fls_slot>) {
        switch UInt32(slot.pointee.external) {
        case UInt32(FLS_STORAGE_HEAP):
            if let heap = slot.pointee.heap { free(heap) }
        case UInt32(FLS_STORAGE_MAPPED):
            if let heap = slot.pointee.heap { munmap(heap, slot.pointee.len) }
            if let file = mappedFile(slot) { close(file) }
            slot.pointee.external = UInt32(FLS_STORAGE_HEAP)
        case UInt32(FLS_STORAGE_ARENA):
            if let heap = slot.pointee.heap { fls_arena_free(heap, slot.pointee.len, arenaSegment(slot)) }
            slot.pointee.external = UInt32(FLS_STORAGE_HEAP)
        case UInt32(FLS_STORAGE_SHARE_LARGE):
            // A value below FLS_SHARE_MINIMUM in a slot that shares large ones: malloc'd (the
            // mark stays, for the slot's next value).
            if let heap = slot.pointee.heap { free(heap) }
        default:
            break
        }
        slot.pointee.heap = nil
    }

    /// `reserve` for the task a context record runs: its slot, and its caller's buffer if any.
    static func reserve(for record: UnsafeMutablePointer<fls_ctx_record>, length: Int) throws(Failure)
        -> UnsafeMutableRawPointer {
        try reserve(record.pointee.slot, length: length, external: record.pointee.external,
                    externalCapacity: record.pointee.external_cap)
    }

    /// Reserves `length` bytes for the result and returns where to write them: the caller's
    /// buffer when one was given and is large enough, else inline storage, shared memory (a
    /// large result of a slot marked by `shareLarge`) or a new heap block.
    static func reserve(_ slot: UnsafeMutablePointer<fls_slot>, length: Int, external: UnsafeMutableRawPointer?,
                        externalCapacity: Int) throws(Failure) -> UnsafeMutableRawPointer {
        // A `size_t` of 2^63 or more arrives as a negative Int: no memory holds it.
        guard length >= 0 else { throw Failure(FL_ENOMEM, "no memory for a result of \(UInt(bitPattern: length)) bytes") }
        let share = slot.pointee.external == FLS_STORAGE_SHARE_LARGE
        releaseStorage(slot)
        slot.pointee.external = UInt32(FLS_STORAGE_HEAP)
        slot.pointee.len = 0
        if let external, length <= externalCapacity {
            slot.pointee.heap = external
            slot.pointee.external = UInt32(FLS_STORAGE_EXTERNAL)
            slot.pointee.len = length
            return external
        }
        if length <= Int(FLS_SLOT_INLINE) {
            if share { shareLarge(slot) }
            slot.pointee.len = length
            return UnsafeMutableRawPointer(slot) + inlineOffset
        }
        if share && length >= Int(FLS_SHARE_MINIMUM) {
            var segment: UInt32 = 0
            if let range = fls_arena_alloc(length, &segment) {
                slot.pointee.heap = range
                slot.pointee.len = length
                slot.pointee.external = UInt32(FLS_STORAGE_ARENA)
                (UnsafeMutableRawPointer(slot) + inlineOffset).storeBytes(of: segment, as: UInt32.self)
                return range
            }
            // No segment can hold it (the table is full, or mapping failed): a memfd of its own.
            var file: Int32 = -1
            guard let mapping = fls_shared_alloc(length, &file) else {
                throw Failure(FL_ENOMEM, "no shared memory for an object of \(length) bytes")
            }
            adopt(slot, mapping: mapping, length: length, file: file)
            return mapping
        }
        guard let heap = malloc(length) else { throw Failure(FL_ENOMEM, "no memory for a result of \(length) bytes") }
        if share { shareLarge(slot) }
        slot.pointee.heap = heap
        slot.pointee.len = length
        return heap
    }

    /// Records a failure, dropping any result written so far. A message above
    /// FLS_MESSAGE_MAX bytes keeps its start and its end (`fls_message_fit`), so a failure
    /// passed down a long chain of tasks stays bounded and still names its first cause.
    static func fail(_ slot: UnsafeMutablePointer<fls_slot>, status: Int32, code: Int32, message: String) {
        releaseStorage(slot)
        if let old = slot.pointee.message { free(old) }
        slot.pointee.len = 0
        slot.pointee.status = status
        slot.pointee.code = code
        slot.pointee.message = message.withCString { fls_message_dup($0) }
    }

    /// The result bytes of a completed slot (a borrowed view).
    static func data(_ slot: UnsafeMutablePointer<fls_slot>) -> UnsafeRawPointer? {
        guard slot.pointee.len > 0 else { return nil }
        if let heap = slot.pointee.heap { return UnsafeRawPointer(heap) }
        return UnsafeRawPointer(slot) + inlineOffset
    }

    /// The failure recorded in a completed slot, or nil for success.
    static func failure(_ slot: UnsafeMutablePointer<fls_slot>, item: Int? = nil) -> Failure? {
        let prefix = item.map { "item \($0): " } ?? ""
        switch slot.pointee.status {
        case FL_OK:
            return nil
        case FL_ETASK:
            let message = slot.pointee.message.map { String(cString: $0) } ?? "task failed"
            return Failure(FL_ETASK, "\(prefix)\(message) (code \(slot.pointee.code))")
        case FL_ECANCELED:
            let message = slot.pointee.message.map { String(cString: $0) } ?? "cancelled before it ran"
            return Failure(FL_ECANCELED, "\(prefix)\(message)")
        case FLS_SLOT_PENDING:
            return Failure(FL_ESTATE, "result is not ready")
        default:
            let message = slot.pointee.message.map { String(cString: $0) } ?? "task failed"
            return Failure(slot.pointee.status, "\(prefix)\(message)")
        }
    }

    /// A completed slot's status for the caller; a failure also becomes the thread's last error.
    /// The failure of a completed slot as recorded: its status and the code and message the
    /// task gave (`failure` words them for the caller, adding " (code N)"), or nil for
    /// success. What a failure passed on to other objects carries.
    static func recordedFailure(_ slot: UnsafeMutablePointer<fls_slot>) -> (status: Int32, code: Int32, message: String)? {
        guard let failure = failure(slot) else { return nil }
        let message = slot.pointee.message.map { String(cString: $0) } ?? failure.message
        return (slot.pointee.status, slot.pointee.code, message)
    }

    static func status(_ slot: UnsafeMutablePointer<fls_slot>, item: Int? = nil) -> Int32 {
        guard let failure = failure(slot, item: item) else { return FL_OK }
        return Status.fail(failure)
    }
}
