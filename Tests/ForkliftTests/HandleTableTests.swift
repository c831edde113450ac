import CForklift
import XCTest
@testable import Forklift

final class HandleTableTests: XCTestCase {
    final class Thing {
        let value: Int
        static var alive = 0
        init(_ value: Int) { self.value = value; Thing.alive += 1 }
        deinit { Thing.alive -= 1 }
    }

    func testRegisterBorrowRetire() throws {
        let table = HandleTable<Thing>(kind: .pool)
        let handle = try table.register(Thing(7))
        XCTAssertEqual(table.borrow(handle)?.value, 7)
        table.giveBack(handle)
        XCTAssertTrue(table.retire(handle))
        XCTAssertNil(table.borrow(handle))
        XCTAssertFalse(table.retire(handle))
    }

    func testKindAndGarbageAreRejected() throws {
        let pools = HandleTable<Thing>(kind: .pool)
        let results = HandleTable<Thing>(kind: .result)
        let handle = try pools.register(Thing(1))
        XCTAssertNil(results.borrow(handle))
        XCTAssertNil(pools.borrow(0))
        XCTAssertNil(pools.borrow(0x4600_0001_0000_0000 | 999_999))
        XCTAssertNil(pools.borrow(UInt64.max))
        pools.retire(handle)
    }

    func testSlotReuseBumpsGeneration() throws {
        let table = HandleTable<Thing>(kind: .iterator)
        let first = try table.register(Thing(1))
        table.retire(first)
        let second = try table.register(Thing(2))
        XCTAssertEqual(first & 0xFFFF_FFFF, second & 0xFFFF_FFFF, "the slot is reused")
        XCTAssertNotEqual(first, second)
        XCTAssertNil(table.borrow(first))
        XCTAssertEqual(table.borrow(second)?.value, 2)
        table.giveBack(second)
        table.retire(second)
    }

    func testRetireWhileBorrowedFreesAfterGiveBack() throws {
        let table = HandleTable<Thing>(kind: .pool)
        let before = Thing.alive
        let handle = try table.register(Thing(3))
        XCTAssertNotNil(table.borrow(handle))
        XCTAssertTrue(table.retire(handle))
        XCTAssertEqual(Thing.alive, before + 1, "still borrowed")
        table.giveBack(handle)
        XCTAssertEqual(Thing.alive, before)
    }

    func testManyHandlesAcrossChunks() throws {
        let table = HandleTable<Thing>(kind: .result)
        let handles = try (0..<5000).map { try table.register(Thing($0)) }
        XCTAssertEqual(Set(handles).count, 5000)
        for (i, h) in handles.enumerated() {
            XCTAssertEqual(table.borrow(h)?.value, i)
            table.giveBack(h)
        }
        for h in handles { XCTAssertTrue(table.retire(h)) }
    }
}
