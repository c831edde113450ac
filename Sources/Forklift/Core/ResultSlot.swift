#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// Operations on an `fls_slot`, the record that holds one task's outcome: a result blob
/// (inline up to `FLS_SLOT_INLINE` bytes, else on the heap or in a caller's buffer) or a failure
/// code and message. A slot owns its heap buffer and message; `ResultSlot.clear` frees them.
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
        if slot.pointee.external == 0, let heap = slot.pointee.heap { free(heap) }
        if let message = slot.pointee.message { free(message) }
        slot.pointee = pending
    }

    /// Reserves `length` bytes for the result and returns where to write them: the caller's
    /// buffer when one was given and is large enough, else inline storage or a new heap block.
    static func reserve(_ slot: UnsafeMutablePointer<fls_slot>, length: Int, external: UnsafeMutableRawPointer?,
                        externalCapacity: Int) throws(Failure) -> UnsafeMutableRawPointer {
        if slot.pointee.external == 0, let heap = slot.pointee.heap { free(heap) }
        slot.pointee.heap = nil
        slot.pointee.external = 0
        slot.pointee.len = 0
        if let external, length <= externalCapacity {
            slot.pointee.heap = external
            slot.pointee.external = 1
            slot.pointee.len = length
            return external
        }
        if length <= Int(FLS_SLOT_INLINE) {
            slot.pointee.len = length
            return UnsafeMutableRawPointer(slot) + inlineOffset
        }
        guard let heap = malloc(length) else { throw Failure(FL_ENOMEM, "no memory for a result of \(length) bytes") }
        slot.pointee.heap = heap
        slot.pointee.len = length
        return heap
    }

    /// Records a failure, dropping any result written so far.
    static func fail(_ slot: UnsafeMutablePointer<fls_slot>, status: Int32, code: Int32, message: String) {
        if slot.pointee.external == 0, let heap = slot.pointee.heap { free(heap) }
        if let old = slot.pointee.message { free(old) }
        slot.pointee.heap = nil
        slot.pointee.len = 0
        slot.pointee.status = status
        slot.pointee.code = code
        slot.pointee.message = message.withCString { strdup($0) }
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
    static func status(_ slot: UnsafeMutablePointer<fls_slot>, item: Int? = nil) -> Int32 {
        guard let failure = failure(slot, item: item) else { return FL_OK }
        return Status.fail(failure)
    }
}
