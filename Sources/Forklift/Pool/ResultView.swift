import CForklift

/// What the result functions of the C API read: a `ResultBox`, or the outcome carried by the
/// node of a callback-only apply (always ready, one item) during its callback.
struct ResultView {
    /// The box, or nil for a node-carried outcome.
    let box: ResultBox?
    let slots: UnsafeMutablePointer<fls_slot>
    let count: Int
    let kind: ResultBox.Kind

    init(_ box: ResultBox) {
        self.box = box
        slots = box.slots
        count = box.count
        kind = box.kind
    }

    /// A node-carried outcome of one apply.
    init(carried slot: UnsafeMutablePointer<fls_slot>) {
        box = nil
        slots = slot
        count = 1
        kind = .apply
    }

    var isReady: Bool { box?.isReady ?? true }

    func wait(until deadline: Deadline) -> Bool { box?.wait(until: deadline) ?? true }

    /// Index of the first failed item once ready, or -1.
    var failedItem: Int {
        if let box { return box.failedItem }
        return slots.pointee.status == FL_OK ? -1 : 0
    }

    /// The overall status of a ready result (the first failed item's, for maps).
    func overallStatus() -> Int32 {
        if let box { return box.overallStatus() }
        return ResultSlot.status(slots)
    }
}
