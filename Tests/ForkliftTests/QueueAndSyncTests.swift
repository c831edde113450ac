import CForklift
import XCTest
@testable import Forklift

final class TaskQueueTests: XCTestCase {
    func testFIFOAndOverflow() {
        let queue = TaskQueue(capacity: 4)
        defer { queue.destroy() }
        let nodes = (0..<20).map { i -> UnsafeMutablePointer<fls_node> in
            let node = TaskNodes.make(kind: UInt32(FLS_NODE_APPLY))!
            node.pointee.index = UInt64(i)
            return node
        }
        XCTAssertTrue(queue.isEmpty)
        for node in nodes { queue.push(node) }
        XCTAssertFalse(queue.isEmpty)
        var seen: [UInt64] = []
        while let node = queue.pop() {
            seen.append(node.pointee.index)
            TaskNodes.free(node)
        }
        XCTAssertEqual(seen.sorted(), (0..<20).map(UInt64.init))
        XCTAssertEqual(Array(seen.prefix(4)), [0, 1, 2, 3], "the ring part is FIFO")
        XCTAssertTrue(queue.isEmpty)
    }

    /// Several producers and consumers: every node comes out exactly once.
    func testConcurrentProducersAndConsumers() {
        final class Harness: @unchecked Sendable {
            let queue = TaskQueue(capacity: 64)
            let perProducer = 20_000
            let producers = 3
            let consumed = UnsafeMutablePointer<UInt64>.allocate(capacity: 60_000)
            let taken = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
            init() {
                consumed.initialize(repeating: 0, count: 60_000)
                taken.initialize(to: 0)
            }
            deinit {
                consumed.deallocate()
                taken.deallocate()
                queue.destroy()
            }
        }
        let h = Harness()
        let total = h.perProducer * h.producers
        var threads: [UInt64] = []
        final class Producer: ThreadBody {
            let h: Harness; let id: Int
            init(_ h: Harness, _ id: Int) { self.h = h; self.id = id }
            func run() {
                for i in 0..<h.perProducer {
                    let node = TaskNodes.make(kind: UInt32(FLS_NODE_APPLY))!
                    node.pointee.index = UInt64(id * h.perProducer + i)
                    h.queue.push(node)
                }
            }
        }
        final class Consumer: ThreadBody {
            let h: Harness; let total: Int
            init(_ h: Harness, _ total: Int) { self.h = h; self.total = total }
            func run() {
                while fls_atomic_load_u64(h.taken) < UInt64(total) {
                    if let node = h.queue.pop() {
                        _ = fls_atomic_add_u64(h.consumed + Int(node.pointee.index), 1)
                        _ = fls_atomic_add_u64(h.taken, 1)
                        TaskNodes.free(node)
                    }
                }
            }
        }
        for id in 0..<h.producers { threads.append(try! OSThread.start(Producer(h, id))) }
        for _ in 0..<2 { threads.append(try! OSThread.start(Consumer(h, total))) }
        for t in threads { OSThread.join(t) }
        var exactlyOnce = true
        for i in 0..<total where h.consumed[i] != 1 { exactlyOnce = false }
        XCTAssertTrue(exactlyOnce)
        XCTAssertTrue(h.queue.isEmpty)
    }
}

final class SyncTests: XCTestCase {
    func testOneShotEventTimesOutThenFires() {
        let word = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)
        defer { word.deallocate() }
        let event = OneShotEvent(word: word)
        XCTAssertFalse(event.wait(until: Deadline(nanosecondsFromNow: 5_000_000)))
        event.signal()
        XCTAssertTrue(event.isSet)
        XCTAssertTrue(event.wait(until: .forever))
    }

    func testDeadlines() throws {
        XCTAssertNil(try Deadline(timeout: -1).instant)
        XCTAssertTrue(try Deadline(timeout: 0).hasPassed)
        XCTAssertFalse(try Deadline(timeout: 10).hasPassed)
        XCTAssertThrowsError(try Deadline(timeout: .nan))
        let soon = Deadline(nanosecondsFromNow: 1000)
        XCTAssertEqual(soon.earlier(than: .forever).instant, soon.instant)
    }

    func testResultSlotStorage() throws {
        var slot = ResultSlot.pending
        let small = try ResultSlot.reserve(&slot, length: 8, external: nil, externalCapacity: 0)
        small.storeBytes(of: UInt64(42), as: UInt64.self)
        XCTAssertNil(slot.heap, "8 bytes are stored inline")
        XCTAssertEqual(ResultSlot.data(&slot)!.load(as: UInt64.self), 42)
        let big = try ResultSlot.reserve(&slot, length: 100, external: nil, externalCapacity: 0)
        XCTAssertNotNil(slot.heap)
        memset(big, 7, 100)
        var buffer = [UInt8](repeating: 0, count: 16)
        try buffer.withUnsafeMutableBytes { raw in
            let p = try ResultSlot.reserve(&slot, length: 16, external: raw.baseAddress, externalCapacity: 16)
            XCTAssertEqual(p, raw.baseAddress)
            XCTAssertEqual(slot.external, 1)
        }
        ResultSlot.fail(&slot, status: FL_ETASK, code: 5, message: "boom")
        XCTAssertEqual(ResultSlot.failure(&slot)?.code, FL_ETASK)
        XCTAssertEqual(ResultSlot.failure(&slot)?.message, "boom (code 5)")
        ResultSlot.clear(&slot)
        XCTAssertEqual(slot.status, FLS_SLOT_PENDING)

        // A slot marked to share large results: small ones stay inline or on the heap, large
        // ones go to a range of the shared-memory arena, which clear gives back.
        ResultSlot.shareLarge(&slot)
        _ = try ResultSlot.reserve(&slot, length: 100, external: nil, externalCapacity: 0)
        XCTAssertNil(ResultSlot.sharedPlace(&slot))
        let inUse = fls_arena_in_use()
        let shared = try ResultSlot.reserve(&slot, length: Int(FLS_SHARE_MINIMUM), external: nil, externalCapacity: 0)
        let place = try XCTUnwrap(ResultSlot.sharedPlace(&slot))
        XCTAssertGreaterThan(place.inode, 0)
        XCTAssertGreaterThanOrEqual(fcntl(place.fd, F_GETFD), 0, "the segment's memfd is open")
        XCTAssertEqual(fls_arena_in_use(), inUse + Int(FLS_SHARE_MINIMUM))
        memset(shared, 9, Int(FLS_SHARE_MINIMUM))
        XCTAssertEqual(ResultSlot.data(&slot)!.load(fromByteOffset: 1000, as: UInt8.self), 9)
        ResultSlot.clear(&slot)
        XCTAssertEqual(fls_arena_in_use(), inUse, "the range goes back with the slot")
    }
}
