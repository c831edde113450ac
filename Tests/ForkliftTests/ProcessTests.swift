#if canImport(Glibc)
import Glibc
#endif
import CForklift
import XCTest
@testable import Forklift

/// The process backend and the inter-process objects, driven through the C entry points from
/// several threads (so the sanitizer runs of this suite cover the parent's side of them).
final class ProcessTests: XCTestCase {

    /// Squares an Int64; a negative argument kills the worker process.
    private static let square: fl_task_fn = { _, arg, _, ctx in
        let x = arg!.loadUnaligned(as: Int64.self)
        if x < 0 { raise(SIGKILL) }
        var y = x * x
        return fl_task_return(ctx, &y, 8)
    }

    func testProcessPoolFromManyThreadsWithACrash() throws {
        var options = fl_pool_options()
        XCTAssertEqual(fl_pool_options_init(&options), FL_OK)
        options.workers = 2
        options.backend = FL_BACKEND_PROCESS
        var pool: fl_pool?
        XCTAssertEqual(fl_pool_create(&options, &pool), FL_OK)
        defer { XCTAssertEqual(fl_pool_destroy(pool), FL_OK) }

        final class Outcome: @unchecked Sendable {
            let lock = Lock()
            var wrong = 0
        }
        let outcome = Outcome()
        let pointer = UInt(bitPattern: UnsafeRawPointer(pool!))
        let threads = (0..<3).map { t in
            startThread {
                let pool = fl_pool(bitPattern: pointer)
                for i in 0..<200 {
                    var x = Int64(t * 1000 + i)
                    var y: Int64 = 0
                    var length = 0
                    let rc = fl_pool_apply(pool, Self.square, nil, &x, 8, &y, 8, &length)
                    if rc != FL_OK || y != x * x { outcome.lock.withLock { outcome.wrong += 1 } }
                }
            }
        }
        threads.forEach(OSThread.join)
        XCTAssertEqual(outcome.wrong, 0)

        var dying: Int64 = -1
        XCTAssertEqual(fl_pool_apply(pool, Self.square, nil, &dying, 8, nil, 0, nil), FL_EWORKER)
        XCTAssertTrue(String(cString: fl_last_error()).contains("SIGKILL"))
        var x: Int64 = 9
        var y: Int64 = 0
        XCTAssertEqual(fl_pool_apply(pool, Self.square, nil, &x, 8, &y, 8, nil), FL_OK)
        XCTAssertEqual(y, 81)
    }

    func testPipeLockEventAndSemaphoreAcrossThreads() {
        var a: fl_pipe?, b: fl_pipe?
        XCTAssertEqual(fl_pipe_create(1, &a, &b), FL_OK)
        var lock: fl_lock?
        XCTAssertEqual(fl_lock_create(0, &lock), FL_OK)
        var event: fl_event?
        XCTAssertEqual(fl_event_create(&event), FL_OK)
        var semaphore: fl_semaphore?
        XCTAssertEqual(fl_semaphore_create(0, 0, &semaphore), FL_OK)
        let handles = (UInt(bitPattern: UnsafeRawPointer(b!)),
                       UInt(bitPattern: UnsafeRawPointer(lock!)),
                       UInt(bitPattern: UnsafeRawPointer(event!)),
                       UInt(bitPattern: UnsafeRawPointer(semaphore!)))
        let counter = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        counter.initialize(to: 0)
        defer { counter.deallocate() }
        let counterAddress = UInt(bitPattern: counter)
        // Two threads add under the lock; one echoes pipe messages; all report on the semaphore.
        var workers = (0..<2).map { _ in
            startThread {
                let lock = fl_lock(bitPattern: handles.1)
                let counter = UnsafeMutablePointer<Int>(bitPattern: counterAddress)!
                _ = fl_event_wait(fl_event(bitPattern: handles.2), FL_FOREVER)
                for _ in 0..<5000 {
                    _ = fl_lock_acquire(lock, FL_FOREVER)
                    counter.pointee += 1
                    _ = fl_lock_release(lock)
                }
                _ = fl_semaphore_release(fl_semaphore(bitPattern: handles.3))
            }
        }
        workers.append(startThread {
            let end = fl_pipe(bitPattern: handles.0)
            var value: Int64 = 0
            var length = 0
            while fl_pipe_recv(end, &value, 8, &length, FL_FOREVER) == FL_OK {
                value += 1
                _ = fl_pipe_send(end, &value, 8, FL_FOREVER)
            }
            _ = fl_semaphore_release(fl_semaphore(bitPattern: handles.3))
        })
        XCTAssertEqual(fl_event_set(event), FL_OK)
        for i in 0..<1000 {
            var value = Int64(i)
            var length = 0
            XCTAssertEqual(fl_pipe_send(a, &value, 8, 5), FL_OK)
            XCTAssertEqual(fl_pipe_recv(a, &value, 8, &length, 5), FL_OK)
            XCTAssertEqual(value, Int64(i + 1))
        }
        XCTAssertEqual(fl_pipe_close(a), FL_OK)
        for _ in 0..<3 { XCTAssertEqual(fl_semaphore_acquire(semaphore, 30), FL_OK) }
        workers.forEach(OSThread.join)
        XCTAssertEqual(fl_lock_acquire(lock, 5), FL_OK)
        XCTAssertEqual(counter.pointee, 10_000)
        XCTAssertEqual(fl_lock_release(lock), FL_OK)
        XCTAssertEqual(fl_pipe_close(b), FL_OK)
        XCTAssertEqual(fl_lock_destroy(lock), FL_OK)
        XCTAssertEqual(fl_event_destroy(event), FL_OK)
        XCTAssertEqual(fl_semaphore_destroy(semaphore), FL_OK)
    }
}
