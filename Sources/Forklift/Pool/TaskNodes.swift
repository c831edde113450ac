#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// Allocation of task nodes (see `fls_node_alloc`). A node is one fixed-size C record; an argument blob of up to
/// `FLS_NODE_INLINE` bytes is copied into it, a larger one into one extra heap block.
enum TaskNodes {
    /// A zeroed node of `kind` from the thread-caching allocator, or nil when memory is exhausted.
    @inline(__always)
    static func make(kind: UInt32) -> UnsafeMutablePointer<fls_node>? {
        guard let node = fls_node_alloc() else { return nil }
        node.pointee.kind = kind
        return node
    }

    /// A node of `kind` that calls `fn(user, copy of arg)`.
    @inline(__always)
    static func task(kind: UInt32, _ fn: fl_task_fn, user: UnsafeMutableRawPointer?, arg: UnsafeRawPointer?,
                     length: Int) throws(Failure) -> UnsafeMutablePointer<fls_node> {
        guard let node = make(kind: kind) else { throw Failure(FL_ENOMEM, "no memory for a task") }
        do {
            try copyArgument(node, arg, length)
        } catch {
            free(node)
            throw error
        }
        node.pointee.fn = fn
        node.pointee.user = user
        return node
    }

    /// Copies an argument blob into the node (inline when it fits).
    @inline(__always)
    static func copyArgument(_ node: UnsafeMutablePointer<fls_node>, _ arg: UnsafeRawPointer?, _ length: Int) throws(Failure) {
        node.pointee.arg_len = length
        guard length > 0, let arg else { return }
        if length <= Int(FLS_NODE_INLINE) {
            let inline = fls_node_inline_arg(node)!
            inline.copyMemory(from: arg, byteCount: length)
            node.pointee.arg = UnsafeRawPointer(inline)
        } else {
            guard let heap = malloc(length) else { throw Failure(FL_ENOMEM, "no memory to copy an argument of \(length) bytes") }
            heap.copyMemory(from: arg, byteCount: length)
            node.pointee.arg = UnsafeRawPointer(heap)
            node.pointee.arg_is_heap = 1
        }
    }

    /// Takes ownership of a heap block as the node's argument.
    static func adoptArgument(_ node: UnsafeMutablePointer<fls_node>, _ heap: UnsafeMutableRawPointer, count: Int) {
        node.pointee.arg = UnsafeRawPointer(heap)
        node.pointee.arg_len = count
        node.pointee.arg_is_heap = 1
    }

    /// Frees the node's argument copy early (the node lives on as a callback carrier).
    static func releaseArgument(_ node: UnsafeMutablePointer<fls_node>) {
        if node.pointee.arg_is_heap != 0 { Glibc.free(UnsafeMutableRawPointer(mutating: node.pointee.arg)) }
        node.pointee.arg_is_heap = 0
        node.pointee.arg = nil
    }

    /// Calls `body` with a node on the stack for `Pool.findWork(for:into:)` to copy a task into.
    @inline(__always)
    static func withScratch<Result>(_ body: (UnsafeMutablePointer<fls_node>) -> Result) -> Result {
        var scratch = fls_node()
        return withUnsafeMutablePointer(to: &scratch) { body($0) }
    }

    /// Frees a node and what it owns (not its `owner`, which the worker has released).
    @inline(__always)
    static func free(_ node: UnsafeMutablePointer<fls_node>) {
        if node.pointee.arg_is_heap != 0 { Glibc.free(UnsafeMutableRawPointer(mutating: node.pointee.arg)) }
        fls_node_free(node)
    }
}
