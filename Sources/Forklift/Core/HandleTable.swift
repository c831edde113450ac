import CForklift

/// The kinds of handle, encoded in a handle's top byte so a handle of one type passed where
/// another is expected is rejected.
enum HandleKind: UInt64 {
    case pool = 0x46  // 'F'
    case result = 0x52  // 'R'
    case iterator = 0x49  // 'I'
    case group = 0x47  // 'G'
    case signature = 0x59  // 'Y'
    case process = 0x50  // 'P'
    case queue = 0x51  // 'Q'
    case shm = 0x4D  // 'M'
    case lock = 0x4C  // 'L'
    case event = 0x45  // 'E'
    case semaphore = 0x53  // 'S'
    case pipe = 0x43  // 'C'
    case runtime = 0x54  // 'T'
    case ref = 0x4F  // 'O'
    case actor = 0x41  // 'A'
}

/// Maps opaque C handles to live objects and validates every handle on use.
///
/// A handle is `kind << 56 | generation << 32 | index`. Each slot keeps one atomic word,
/// `generation << 40 | live << 39 | tearingDown << 38 | borrowers`, and a retained reference
/// to its object.
/// `borrow` succeeds only while the generation matches and the slot is live, and keeps the
/// object alive until `giveBack`; `retire` clears the live bit, and whoever brings the
/// borrowers to zero afterwards frees the slot and bumps its generation. So a destroyed,
/// released, foreign or garbage handle yields `FL_EHANDLE`, never a dangling dereference,
/// and lookups take no lock. Slots live in chunks that are never freed or moved.
final class HandleTable<Object: AnyObject> {
    private static var chunkShift: Int { 10 }
    private static var chunkSize: Int { 1 << chunkShift }
    private static var maxChunks: Int { 4096 }
    private static var liveBit: UInt64 { 1 << 39 }
    /// Set while a destroy call runs its teardown, so a second one does not run it too.
    private static var tearingDownBit: UInt64 { 1 << 38 }
    private static var borrowerMask: UInt64 { (1 << 38) - 1 }
    private static var generationMask: UInt64 { 0xFF_FFFF }

    private let kind: HandleKind
    /// Chunk `c` holds words at `[c]`, objects at `[c + maxChunks]`, free-list links at
    /// `[c + 2 * maxChunks]` and hints at `[c + 3 * maxChunks]`; published atomically.
    private let chunks: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    /// Serializes growth only.
    private let growLock = Lock()
    private var chunkCount = 0
    /// The free-slot stack: `tag << 32 | (index + 1)`, 0 in the low half when empty. The tag
    /// changes on every update, so a stale compare-and-swap fails (no ABA).
    private let freeHead: UnsafeMutablePointer<UInt64>

    init(kind: HandleKind) {
        self.kind = kind
        chunks = .allocate(capacity: 4 * Self.maxChunks)
        chunks.initialize(repeating: nil, count: 4 * Self.maxChunks)
        freeHead = .allocate(capacity: 8)
        freeHead.initialize(repeating: 0, count: 8)
    }

    /// Releases the objects still registered and the slot chunks. (The process-wide tables in
    /// `Registry` live as long as the process; tables made in tests end here.)
    deinit {
        for chunk in 0..<chunkCount {
            let objects = chunks[chunk + Self.maxChunks]!.assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
            for i in 0..<Self.chunkSize {
                if let object = objects[i] { Unmanaged<Object>.fromOpaque(object).release() }
            }
            objects.deallocate()
            chunks[chunk]!.assumingMemoryBound(to: UInt64.self).deallocate()
            chunks[chunk + 2 * Self.maxChunks]!.assumingMemoryBound(to: UInt32.self).deallocate()
            chunks[chunk + 3 * Self.maxChunks]!.assumingMemoryBound(to: UnsafeMutableRawPointer?.self).deallocate()
        }
        chunks.deallocate()
        freeHead.deallocate()
    }

    /// Stores `object` (retained) and returns its new handle. `hint`: the memory a call on
    /// the handle reads first (see `prefetchNeighbours`), if any.
    func register(_ object: Object, hint: UnsafeRawPointer? = nil) throws(Failure) -> UInt64 {
        var free = popFree()
        while free == nil {
            try grow()
            free = popFree()
        }
        let index = free!
        let (word, objectSlot) = slot(index)!
        objectSlot.pointee = Unmanaged.passRetained(object).toOpaque()
        fls_atomic_store_ptr(hintSlot(index), hint.map { UnsafeMutableRawPointer(mutating: $0) })
        let generation = fls_atomic_load_u64(word) >> 40
        fls_atomic_store_u64(word, generation << 40 | Self.liveBit)
        return kind.rawValue << 56 | (generation & Self.generationMask) << 32 | UInt64(index)
    }

    /// The object of a live handle, kept alive until the matching `giveBack`.
    @inline(__always)
    func borrow(_ handle: UInt64) -> Object? {
        borrowUnmanaged(handle)?.takeUnretainedValue()
    }

    /// `borrow` without a retain: the slot's borrow count keeps the object alive.
    @inline(__always)
    func borrowUnmanaged(_ handle: UInt64) -> Unmanaged<Object>? {
        guard handle >> 56 == kind.rawValue, let (word, objectSlot) = slot(Int(handle & 0xFFFF_FFFF)) else {
            return nil
        }
        let generation = (handle >> 32) & Self.generationMask
        var current = fls_atomic_load_u64(word)
        while true {
            guard (current >> 40) & Self.generationMask == generation, current & Self.liveBit != 0 else {
                return nil
            }
            if fls_atomic_cas_u64(word, &current, current + 1) { break }
        }
        return Unmanaged<Object>.fromOpaque(objectSlot.pointee!)
    }

    /// Ends a successful `borrow`.
    @inline(__always)
    func giveBack(_ handle: UInt64) {
        let index = Int(handle & 0xFFFF_FFFF)
        let (word, _) = slot(index)!
        let previous = fls_atomic_sub_u64(word, 1)
        if previous & Self.borrowerMask == 1 && previous & Self.liveBit == 0 {
            reclaim(index)
        }
    }

    /// Invalidates a handle; the object is released once no borrower holds it.
    /// Returns false if the handle was not live.
    @discardableResult
    func retire(_ handle: UInt64) -> Bool {
        guard handle >> 56 == kind.rawValue, let (word, _) = slot(Int(handle & 0xFFFF_FFFF)) else {
            return false
        }
        let generation = (handle >> 32) & Self.generationMask
        var current = fls_atomic_load_u64(word)
        while true {
            guard (current >> 40) & Self.generationMask == generation, current & Self.liveBit != 0 else {
                return false
            }
            if fls_atomic_cas_u64(word, &current, current & ~Self.liveBit) { break }
        }
        if current & Self.borrowerMask == 0 { reclaim(Int(handle & 0xFFFF_FFFF)) }
        return true
    }

    /// Frees a slot whose last borrower left after retirement.
    private func reclaim(_ index: Int) {
        let (word, objectSlot) = slot(index)!
        let object = objectSlot.pointee!
        objectSlot.pointee = nil
        fls_atomic_store_ptr(hintSlot(index), nil)
        let generation = (fls_atomic_load_u64(word) >> 40) + 1
        fls_atomic_store_u64(word, (generation == 0 ? 1 : generation) << 40)
        pushFree(index, through: index)
        Unmanaged<Object>.fromOpaque(object).release()
    }

    // MARK: Hints

    private func hintSlot(_ index: Int) -> UnsafeMutablePointer<UnsafeMutableRawPointer?> {
        let hints = fls_atomic_load_ptr(chunks + (index >> Self.chunkShift) + 3 * Self.maxChunks)!
        return hints.assumingMemoryBound(to: UnsafeMutableRawPointer?.self) + (index & (Self.chunkSize - 1))
    }

    /// Starts fetching, for reading, the hints of the handles two slots before and after
    /// `handle`'s (those of the same chunk): handles made one after another take neighbouring
    /// slots (ascending from a new chunk, descending from freed ones), and a program often
    /// uses them in that order, as it gets the results of calls it made in a row. So the
    /// object it will read next is on its way while it handles this one. A stale hint (its
    /// object freed) costs only a useless prefetch: the hint is never dereferenced.
    @inline(__always)
    func prefetchNeighbours(of handle: UInt64) {
        let index = Int(handle & 0xFFFF_FFFF)
        let chunk = index >> Self.chunkShift
        guard chunk < Self.maxChunks, let raw = fls_atomic_load_ptr(chunks + chunk + 3 * Self.maxChunks) else { return }
        let hints = raw.assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        let offset = index & (Self.chunkSize - 1)
        if offset + 2 < Self.chunkSize, let next = fls_atomic_load_ptr(hints + offset + 2) { fls_prefetch_for_read(next) }
        if offset >= 2, let previous = fls_atomic_load_ptr(hints + offset - 2) { fls_prefetch_for_read(previous) }
    }

    // MARK: Free slots

    private func link(_ index: Int) -> UnsafeMutablePointer<UInt32> {
        let links = fls_atomic_load_ptr(chunks + (index >> Self.chunkShift) + 2 * Self.maxChunks)!
        return links.assumingMemoryBound(to: UInt32.self) + (index & (Self.chunkSize - 1))
    }

    private func popFree() -> Int? {
        var head = fls_atomic_load_u64(freeHead)
        while true {
            let top = Int(head & 0xFFFF_FFFF)
            if top == 0 { return nil }
            let next = UInt64(fls_atomic_load_u32(link(top - 1)))
            if fls_atomic_cas_u64(freeHead, &head, ((head >> 32) &+ 1) << 32 | next) { return top - 1 }
        }
    }

    /// Pushes the chain `first ... last` (already linked from first to last) onto the stack.
    private func pushFree(_ first: Int, through last: Int) {
        var head = fls_atomic_load_u64(freeHead)
        while true {
            fls_atomic_store_u32(link(last), UInt32(head & 0xFFFF_FFFF))
            if fls_atomic_cas_u64(freeHead, &head, ((head >> 32) &+ 1) << 32 | UInt64(first + 1)) { return }
        }
    }

    /// Adds a chunk of free slots.
    private func grow() throws(Failure) {
        try growLock.withLock { () throws(Failure) in
            if fls_atomic_load_u64(freeHead) & 0xFFFF_FFFF != 0 { return }  // another thread grew it
            guard chunkCount < Self.maxChunks else {
                throw Failure(FL_ENOMEM, "too many live handles of one type")
            }
            let words = UnsafeMutablePointer<UInt64>.allocate(capacity: Self.chunkSize)
            words.initialize(repeating: 1 << 40, count: Self.chunkSize)  // generation 1, free
            let objects = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: Self.chunkSize)
            objects.initialize(repeating: nil, count: Self.chunkSize)
            let links = UnsafeMutablePointer<UInt32>.allocate(capacity: Self.chunkSize)
            let hints = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: Self.chunkSize)
            hints.initialize(repeating: nil, count: Self.chunkSize)
            let first = chunkCount << Self.chunkShift
            for i in 0..<Self.chunkSize { (links + i).initialize(to: UInt32(first + i + 2)) }  // i -> i + 1
            fls_atomic_store_ptr(chunks + chunkCount + 3 * Self.maxChunks, UnsafeMutableRawPointer(hints))
            fls_atomic_store_ptr(chunks + chunkCount + 2 * Self.maxChunks, UnsafeMutableRawPointer(links))
            fls_atomic_store_ptr(chunks + chunkCount + Self.maxChunks, UnsafeMutableRawPointer(objects))
            fls_atomic_store_ptr(chunks + chunkCount, UnsafeMutableRawPointer(words))
            chunkCount += 1
            pushFree(first, through: first + Self.chunkSize - 1)
        }
    }

    @inline(__always)
    private func slot(_ index: Int) -> (UnsafeMutablePointer<UInt64>, UnsafeMutablePointer<UnsafeMutableRawPointer?>)? {
        let chunk = index >> Self.chunkShift
        guard chunk < Self.maxChunks, let words = fls_atomic_load_ptr(chunks + chunk) else { return nil }
        let objects = fls_atomic_load_ptr(chunks + chunk + Self.maxChunks)!
        let offset = index & (Self.chunkSize - 1)
        return (words.assumingMemoryBound(to: UInt64.self) + offset,
                objects.assumingMemoryBound(to: UnsafeMutableRawPointer?.self) + offset)
    }

}

extension HandleTable {
    /// Runs `body` with the object of a live handle, or fails with `FL_EHANDLE`.
    @inline(__always)
    func with<T>(_ handle: OpaquePointer?, _ name: StaticString, _ body: (Object) throws(Failure) -> T) throws(Failure) -> T {
        let raw = rawHandle(handle)
        guard let object = borrowUnmanaged(raw) else { throw Self.notLive(name) }
        defer { giveBack(raw) }
        // No retain: the borrow keeps the object alive, and the refcount stays off the hot path.
        return try object._withUnsafeGuaranteedRef { object in Result { () throws(Failure) in try body(object) } }.get()
    }

    /// The body of a destroy call: runs `teardown` with the object of a live handle, then
    /// invalidates the handle (the object goes once no other call borrows it). Only one
    /// destroy of a handle runs its teardown: one that comes while another is in it fails with
    /// FL_EHANDLE at once, as it would a moment later. A teardown that throws leaves the handle
    /// live, to be destroyed again.
    func destroy(_ handle: OpaquePointer?, _ name: StaticString,
                 _ teardown: (Object) throws(Failure) -> Void = { _ in }) throws(Failure) {
        let raw = rawHandle(handle)
        guard let object = borrowUnmanaged(raw) else { throw Self.notLive(name) }
        defer { giveBack(raw) }
        let (word, _) = slot(Int(raw & 0xFFFF_FFFF))!
        guard fls_atomic_or_u64(word, Self.tearingDownBit) & Self.tearingDownBit == 0 else {
            throw Failure(FL_EHANDLE, "\(name) is being destroyed by another call")
        }
        do throws(Failure) {
            try object._withUnsafeGuaranteedRef { object in Result { () throws(Failure) in try teardown(object) } }.get()
        } catch {
            _ = fls_atomic_and_u64(word, ~Self.tearingDownBit)
            throw error
        }
        // The borrow and the bit keep the slot ours: nobody else can retire it.
        retire(raw)
    }

    /// The error for a handle that names no live object of this table.
    private static func notLive(_ name: StaticString) -> Failure {
        Failure(FL_EHANDLE, "\(name) handle is NULL, destroyed, released or not \(withArticle(name.description))")
    }
}

/// A handle in its C form (an opaque pointer that is never dereferenced).
@inline(__always)
func cHandle(_ raw: UInt64) -> OpaquePointer? {
    OpaquePointer(bitPattern: UInt(raw))
}

/// The table value behind a C handle.
@inline(__always)
func rawHandle(_ handle: OpaquePointer?) -> UInt64 {
    UInt64(UInt(bitPattern: Int(bitPattern: handle)))
}
