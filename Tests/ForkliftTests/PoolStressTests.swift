import CForklift
import XCTest
@testable import Forklift

/// Concurrency tests through the exported C entry points; `make test` also runs them under
/// ThreadSanitizer and AddressSanitizer.
final class PoolStressTests: XCTestCase {
    /// Adds its UInt64 argument to the counter passed as `user`.
    static let addTask: fl_task_fn = { user, arg, _, ctx in
        let value = arg!.load(as: UInt64.self)
        _ = fls_atomic_add_u64(user!.assumingMemoryBound(to: UInt64.self), value)
        var doubled = value * 2
        return fl_task_return(ctx, &doubled, 8)
    }

    /// Counts callbacks; runs only on the callback thread, so a plain increment must be safe.
    static let countCallback: fl_result_cb = { user, result in
        let counters = user!.assumingMemoryBound(to: UInt64.self)
        var data: UnsafeRawPointer?
        var length = 0
        if fl_result_get(result, 0, &data, &length) == FL_OK {
            counters[0] += data!.load(as: UInt64.self)
        }
        counters[1] += 1
    }

    func makePool(_ workers: Int32) -> fl_pool? {
        var options = fl_pool_options()
        XCTAssertEqual(fl_pool_options_init(&options), FL_OK)
        options.workers = workers
        var pool: fl_pool?
        XCTAssertEqual(fl_pool_create(&options, &pool), FL_OK)
        return pool
    }

    /// Three threads submit apply_async with callbacks at once; every task runs once and every
    /// callback runs once, serialized.
    func testConcurrentSubmittersWithCallbacks() {
        let pool = makePool(2)
        let counter = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        counter.initialize(to: 0)
        let callbackCounters = UnsafeMutablePointer<UInt64>.allocate(capacity: 2)
        callbackCounters.initialize(repeating: 0, count: 2)
        defer { counter.deallocate(); callbackCounters.deallocate() }

        final class Submitter: ThreadBody {
            let pool: fl_pool?; let counter: UnsafeMutablePointer<UInt64>
            let callbacks: UnsafeMutablePointer<UInt64>; let count: Int
            init(_ pool: fl_pool?, _ counter: UnsafeMutablePointer<UInt64>, _ callbacks: UnsafeMutablePointer<UInt64>, _ count: Int) {
                self.pool = pool; self.counter = counter; self.callbacks = callbacks; self.count = count
            }
            func run() {
                for i in 1...count {
                    var value = UInt64(i)
                    var result: fl_result?
                    let wantHandle = i % 3 == 0
                    let rc = withUnsafeMutablePointer(to: &result) { out in
                        fl_pool_apply_async(pool, PoolStressTests.addTask, counter, &value, 8,
                                            PoolStressTests.countCallback, nil, callbacks, wantHandle ? out : nil)
                    }
                    precondition(rc == FL_OK)
                    if wantHandle {
                        if i % 2 == 0 { _ = fl_result_wait(result, -1) }
                        precondition(fl_result_release(result) == FL_OK)
                    }
                }
            }
        }
        let perThread = 3000
        let threads = (0..<3).map { _ in try! OSThread.start(Submitter(pool, counter, callbackCounters, perThread)) }
        threads.forEach(OSThread.join)
        XCTAssertEqual(fl_pool_close(pool), FL_OK)
        XCTAssertEqual(fl_pool_join(pool, -1), FL_OK)
        let expected = UInt64(3 * perThread * (perThread + 1) / 2)
        XCTAssertEqual(counter.pointee, expected)
        XCTAssertEqual(callbackCounters[1], UInt64(3 * perThread))
        XCTAssertEqual(callbackCounters[0], 2 * expected)
        XCTAssertEqual(fl_pool_destroy(pool), FL_OK)
    }

    /// Maps from several threads at once while applies run.
    func testConcurrentMaps() {
        let pool = makePool(2)
        let counter = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        counter.initialize(to: 0)
        defer { counter.deallocate() }
        final class Mapper: ThreadBody {
            let pool: fl_pool?; let counter: UnsafeMutablePointer<UInt64>; var ok = true
            init(_ pool: fl_pool?, _ counter: UnsafeMutablePointer<UInt64>) { self.pool = pool; self.counter = counter }
            func run() {
                let items = (0..<1000).map { UInt64($0) }
                for round in 0..<20 {
                    var result: fl_result?
                    items.withUnsafeBytes { raw in
                        precondition(fl_pool_map(pool, PoolStressTests.addTask, counter, raw.baseAddress, 8, 1000, round % 5, &result) == FL_OK)
                    }
                    for i in stride(from: 0, to: 1000, by: 97) {
                        var data: UnsafeRawPointer?
                        var length = 0
                        if fl_result_item(result, i, &data, &length) != FL_OK || data!.load(as: UInt64.self) != UInt64(2 * i) { ok = false }
                    }
                    precondition(fl_result_release(result) == FL_OK)
                }
            }
        }
        let mappers = (0..<3).map { _ in Mapper(pool, counter) }
        let threads = mappers.map { try! OSThread.start($0) }
        threads.forEach(OSThread.join)
        XCTAssertTrue(mappers.allSatisfy(\.ok))
        XCTAssertEqual(counter.pointee, UInt64(3 * 20 * (999 * 1000 / 2)))
        XCTAssertEqual(fl_pool_destroy(pool), FL_OK)
    }

    /// Terminate while other threads keep submitting: every accepted task completes exactly
    /// once (done or cancelled), submissions after terminate fail cleanly.
    func testTerminateUnderLoad() {
        for _ in 0..<5 {
            let pool = makePool(2)
            let counters = UnsafeMutablePointer<UInt64>.allocate(capacity: 4)
            counters.initialize(repeating: 0, count: 4)
            final class Submitter: ThreadBody {
                let pool: fl_pool?; let counters: UnsafeMutablePointer<UInt64>
                init(_ pool: fl_pool?, _ counters: UnsafeMutablePointer<UInt64>) { self.pool = pool; self.counters = counters }
                static let done: fl_result_cb = { user, _ in user!.assumingMemoryBound(to: UInt64.self)[0] += 1 }
                static let failed: fl_result_cb = { user, _ in user!.assumingMemoryBound(to: UInt64.self)[1] += 1 }
                func run() {
                    while true {
                        var one: UInt64 = 1
                        let rc = fl_pool_apply_async(pool, PoolStressTests.addTask, counters + 3, &one, 8,
                                                     Submitter.done, Submitter.failed, counters, nil)
                        if rc != FL_OK { precondition(rc == FL_ESTATE); return }
                        _ = fls_atomic_add_u64(counters + 2, 1)
                    }
                }
            }
            let threads = (0..<2).map { _ in try! OSThread.start(Submitter(pool, counters)) }
            usleep(20_000)
            XCTAssertEqual(fl_pool_terminate(pool), FL_OK)
            threads.forEach(OSThread.join)
            XCTAssertEqual(fl_pool_join(pool, -1), FL_OK)
            XCTAssertEqual(counters[0] + counters[1], counters[2], "every accepted task completed once")
            XCTAssertEqual(counters[0], counters[3], "successes are the tasks that ran")
            XCTAssertEqual(fl_pool_destroy(pool), FL_OK)
            counters.deallocate()
        }
    }

    /// Handles used from several threads while being released and pools being destroyed.
    func testHandleRacesNeverCrash() {
        final class Racer: ThreadBody {
            func run() {
                for _ in 0..<30 {
                    var options = fl_pool_options()
                    _ = fl_pool_options_init(&options)
                    options.workers = 1
                    var pool: fl_pool?
                    precondition(fl_pool_create(&options, &pool) == FL_OK)
                    var results: [fl_result?] = Array(repeating: nil, count: 50)
                    let counter = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
                    counter.initialize(to: 0)
                    for i in 0..<50 {
                        var v = UInt64(i)
                        precondition(fl_pool_apply_async(pool, PoolStressTests.addTask, counter, &v, 8, nil, nil, nil, &results[i]) == FL_OK)
                    }
                    precondition(fl_pool_destroy(pool) == FL_OK)
                    for r in results {
                        let rc = fl_result_get(r, -1, nil, nil)
                        precondition(rc == FL_OK || rc == FL_ECANCELED)
                        precondition(fl_result_release(r) == FL_OK)
                        precondition(fl_result_release(r) == FL_EHANDLE)
                    }
                    precondition(fl_pool_workers(pool) == FL_EHANDLE)
                    counter.deallocate()
                }
            }
        }
        let threads = (0..<3).map { _ in try! OSThread.start(Racer()) }
        threads.forEach(OSThread.join)
    }
}

/// Task groups under concurrency: several submitters, waits racing with completions, and
/// destroy right after the last completion (the counters' memory must stay valid).
final class GroupStressTests: XCTestCase {
    static let bump: fl_task_fn = { user, _, _, _ in
        _ = fls_atomic_add_u64(user!.assumingMemoryBound(to: UInt64.self), 1)
        return 0
    }

    func testManyShortLivedGroups() {
        var options = fl_pool_options()
        _ = fl_pool_options_init(&options)
        options.workers = 2
        var pool: fl_pool?
        XCTAssertEqual(fl_pool_create(&options, &pool), FL_OK)
        let counter = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        counter.initialize(to: 0)
        defer { counter.deallocate() }
        for round in 0..<300 {
            var group: fl_group?
            XCTAssertEqual(fl_group_create(pool, &group), FL_OK)
            for _ in 0..<(round % 17) { _ = fl_group_submit(group, GroupStressTests.bump, counter, nil, 0) }
            XCTAssertEqual(fl_group_destroy(group), FL_OK)
        }
        let expected = (0..<300).reduce(0) { $0 + UInt64($1 % 17) }
        XCTAssertEqual(counter.pointee, expected)
        XCTAssertEqual(fl_pool_destroy(pool), FL_OK)
    }

    func testConcurrentSubmittersToOneGroup() {
        var pool: fl_pool?
        XCTAssertEqual(fl_pool_create(nil, &pool), FL_OK)
        var group: fl_group?
        XCTAssertEqual(fl_group_create(pool, &group), FL_OK)
        let counter = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        counter.initialize(to: 0)
        defer { counter.deallocate() }
        final class Submitter: ThreadBody {
            let group: fl_group?; let counter: UnsafeMutablePointer<UInt64>
            init(_ group: fl_group?, _ counter: UnsafeMutablePointer<UInt64>) { self.group = group; self.counter = counter }
            func run() {
                for i in 0..<5000 {
                    precondition(fl_group_submit(group, GroupStressTests.bump, counter, nil, 0) == FL_OK)
                    if i % 1000 == 0 { precondition(fl_group_wait(group, -1) == FL_OK) }
                }
            }
        }
        let threads = (0..<3).map { _ in try! OSThread.start(Submitter(group, counter)) }
        threads.forEach(OSThread.join)
        XCTAssertEqual(fl_group_wait(group, -1), FL_OK)
        XCTAssertEqual(counter.pointee, 15000)
        XCTAssertEqual(fl_group_destroy(group), FL_OK)
        XCTAssertEqual(fl_pool_destroy(pool), FL_OK)
    }
}

/// Nested submissions go through the workers' deques; thieves take them. A tree of tasks that
/// spawn children into their own group, under contention, completes every node exactly once.
final class NestedStressTests: XCTestCase {
    struct Context {
        var group: fl_group?
        var counter: UnsafeMutablePointer<UInt64>
    }

    static let spawn: fl_task_fn = { user, arg, _, _ in
        let context = user!.assumingMemoryBound(to: Context.self)
        _ = fls_atomic_add_u64(context.pointee.counter, 1)
        var depth = arg!.load(as: Int64.self)
        if depth == 0 { return 0 }
        depth -= 1
        for _ in 0..<4 { precondition(fl_group_submit(context.pointee.group, NestedStressTests.spawn, user, &depth, 8) == FL_OK) }
        return 0
    }

    func testTreeOfNestedSubmissions() {
        var pool: fl_pool?
        XCTAssertEqual(fl_pool_create(nil, &pool), FL_OK)
        let context = UnsafeMutablePointer<Context>.allocate(capacity: 1)
        let counter = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        counter.initialize(to: 0)
        context.initialize(to: Context(group: nil, counter: counter))
        defer { context.deallocate(); counter.deallocate() }
        XCTAssertEqual(fl_group_create(pool, &context.pointee.group), FL_OK)
        for _ in 0..<3 {
            counter.pointee = 0
            var depth: Int64 = 6
            XCTAssertEqual(fl_group_submit(context.pointee.group, NestedStressTests.spawn, context, &depth, 8), FL_OK)
            XCTAssertEqual(fl_group_wait(context.pointee.group, -1), FL_OK)
            XCTAssertEqual(counter.pointee, UInt64((pow4(7) - 1) / 3))  // 1 + 4 + ... + 4^6 tasks
        }
        XCTAssertEqual(fl_group_destroy(context.pointee.group), FL_OK)
        XCTAssertEqual(fl_pool_destroy(pool), FL_OK)
    }

    private func pow4(_ n: Int) -> Int { (0..<n).reduce(1) { acc, _ in acc * 4 } }
}

/// Typed calls from several threads on one shared signature, destroyed while calls are queued.
final class TypedStressTests: XCTestCase {
    static let add: @convention(c) (Int64, Int64) -> Int64 = { $0 + $1 }

    func testSharedSignatureAcrossThreads() {
        var pool: fl_pool?
        XCTAssertEqual(fl_pool_create(nil, &pool), FL_OK)
        var signature: fl_signature?
        XCTAssertEqual(fl_signature_create("i64(i64, i64)", &signature), FL_OK)
        final class Caller: ThreadBody {
            let pool: fl_pool?; let signature: fl_signature?; var ok = true
            init(_ pool: fl_pool?, _ signature: fl_signature?) { self.pool = pool; self.signature = signature }
            func run() {
                let fn = unsafeBitCast(TypedStressTests.add, to: fl_fn.self)
                var tuples = (0..<500).flatMap { [Int64($0), Int64(2 * $0)] }
                var results = [Int64](repeating: 0, count: 500)
                for _ in 0..<10 {
                    let rc = tuples.withUnsafeMutableBytes { t in
                        results.withUnsafeMutableBytes { r in
                            fl_pool_starmap_typed(pool, signature, fn, t.baseAddress, 500, r.baseAddress, 7)
                        }
                    }
                    if rc != FL_OK || results[499] != 3 * 499 { ok = false }
                }
                var pair: (Int64, Int64) = (20, 22)
                var sum: Int64 = 0
                if fl_pool_apply_typed(pool, signature, fn, &pair, &sum) != FL_OK || sum != 42 { ok = false }
            }
        }
        let callers = (0..<3).map { _ in Caller(pool, signature) }
        let threads = callers.map { try! OSThread.start($0) }
        threads.forEach(OSThread.join)
        XCTAssertTrue(callers.allSatisfy(\.ok))

        // Destroy the signature with asynchronous calls still queued behind a slow task.
        var tuples: [Int64] = (0..<2000).flatMap { [Int64($0), 1] }
        var results = [Int64](repeating: 0, count: 2000)
        var result: fl_result?
        let fn = unsafeBitCast(TypedStressTests.add, to: fl_fn.self)
        tuples.withUnsafeMutableBytes { t in
            results.withUnsafeMutableBytes { r in
                XCTAssertEqual(fl_pool_starmap_typed_async(pool, signature, fn, t.baseAddress, 2000, r.baseAddress, 1,
                                                           nil, nil, nil, &result), FL_OK)
                XCTAssertEqual(fl_signature_destroy(signature), FL_OK)
                XCTAssertEqual(fl_result_wait(result, -1), FL_OK)
            }
        }
        XCTAssertEqual(results[1999], 2000)
        XCTAssertEqual(fl_result_release(result), FL_OK)
        XCTAssertEqual(fl_pool_destroy(pool), FL_OK)
    }
}
