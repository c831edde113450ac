/// The objects that objects of a store contain (fl_ref_contain, fl_task_contain): each keeps
/// the ones it names alive until it is freed, as a Ray object keeps the refs serialized in
/// it. A side table, so that an object that contains none (most) pays nothing but a flag bit
/// (`RemoteObject.containsRefs`) for it.
final class ContainedRefs {
    private let lock = Lock()
    /// Guarded by `lock`: for each containing object, what it contains, in the order added.
    private var table: [ObjectIdentifier: [RemoteObject]] = [:]

    /// Adds `inner` to what `container` contains; returns its index there.
    func add(_ inner: RemoteObject, to container: RemoteObject) -> Int {
        lock.withLock {
            table[ObjectIdentifier(container), default: []].append(inner)
            return table[ObjectIdentifier(container)]!.count - 1
        }
    }

    /// How many objects `container` contains.
    func count(of container: RemoteObject) -> Int {
        lock.withLock { table[ObjectIdentifier(container)]?.count ?? 0 }
    }

    /// The object at `index` among those `container` contains, if there is one.
    func element(of container: RemoteObject, at index: Int) -> RemoteObject? {
        lock.withLock { () -> RemoteObject? in
            guard index >= 0, let contents = table[ObjectIdentifier(container)], index < contents.count else { return nil }
            return contents[index]
        }
    }

    /// Takes what `container` contains out of the table (nil if nothing).
    func remove(_ container: RemoteObject) -> [RemoteObject]? {
        lock.withLock { table.removeValue(forKey: ObjectIdentifier(container)) }
    }

    /// `container` is being freed: lets go of what it contains, after the lock. Objects that
    /// go with it and contain others in turn have their contents taken here too, and released
    /// by this loop rather than by their own deinit, so freeing a chain of any length takes
    /// a constant depth of stack.
    func drop(_ container: RemoteObject) {
        guard var pending = remove(container) else { return }
        while var object = pending.popLast() {
            // The last reference: nobody else can reach the object or add to it any more.
            if isKnownUniquelyReferenced(&object), let contents = object.takeContentsBeforeFreeing() {
                pending.append(contentsOf: contents)
            }
        }
    }
}
