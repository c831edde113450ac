import CForklift
import XCTest
@testable import Forklift

final class DequeTests: XCTestCase {
    private func node(_ i: Int) -> UnsafeMutablePointer<fls_node> {
        let n = TaskNodes.make(kind: UInt32(FLS_NODE_APPLY))!
        n.pointee.index = UInt64(i)
        return n
    }

    func testOwnerIsLIFOThievesAreFIFO() {
        let d = fls_deque_create(8)!
        defer { fls_deque_destroy(d) }
        XCTAssertEqual(fls_deque_is_empty(d), 1)
        for i in 0..<8 { XCTAssertEqual(fls_deque_push(d, node(i)), 0) }
        let extra = node(99)
        XCTAssertEqual(fls_deque_push(d, extra), -1, "full")
        TaskNodes.free(extra)
        var contended: Int32 = 0
        let stolen = fls_deque_steal(d, &contended)!
        XCTAssertEqual(stolen.pointee.index, 0)
        TaskNodes.free(stolen)
        let taken = fls_deque_take(d)!
        XCTAssertEqual(taken.pointee.index, 7)
        TaskNodes.free(taken)
        var rest: [UInt64] = []
        while let n = fls_deque_take(d) { rest.append(n.pointee.index); TaskNodes.free(n) }
        XCTAssertEqual(rest, [6, 5, 4, 3, 2, 1])
        XCTAssertNil(fls_deque_steal(d, &contended))
        XCTAssertEqual(fls_deque_is_empty(d), 1)
    }

    /// The owner pushes and takes while two thieves steal: every node is taken exactly once.
    func testConcurrentTakeAndStealExactlyOnce() {
        final class Shared: @unchecked Sendable {
            let deque = fls_deque_create(256)!
            let total = 200_000
            let seen: UnsafeMutablePointer<UInt64>
            let done = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
            init() {
                seen = .allocate(capacity: total)
                seen.initialize(repeating: 0, count: total)
                done.initialize(to: 0)
            }
            deinit { seen.deallocate(); done.deallocate(); fls_deque_destroy(deque) }
            func record(_ n: UnsafeMutablePointer<fls_node>) {
                _ = fls_atomic_add_u64(seen + Int(n.pointee.index), 1)
                TaskNodes.free(n)
            }
        }
        final class Thief: ThreadBody {
            let s: Shared
            init(_ s: Shared) { self.s = s }
            func run() {
                var contended: Int32 = 0
                while fls_atomic_load_u32(s.done) == 0 || fls_deque_is_empty(s.deque) == 0 {
                    if let n = fls_deque_steal(s.deque, &contended) { s.record(n) }
                }
            }
        }
        let s = Shared()
        let thieves = (0..<2).map { _ in try! OSThread.start(Thief(s)) }
        var next = 0
        while next < s.total {
            let n = TaskNodes.make(kind: UInt32(FLS_NODE_APPLY))!
            n.pointee.index = UInt64(next)
            if fls_deque_push(s.deque, n) == 0 { next += 1 } else { TaskNodes.free(n) }
            if next % 3 == 0, let taken = fls_deque_take(s.deque) { s.record(taken) }
        }
        while let taken = fls_deque_take(s.deque) { s.record(taken) }
        fls_atomic_store_u32(s.done, 1)
        thieves.forEach(OSThread.join)
        var exactlyOnce = true
        for i in 0..<s.total where s.seen[i] != 1 { exactlyOnce = false }
        XCTAssertTrue(exactlyOnce)
    }
}
