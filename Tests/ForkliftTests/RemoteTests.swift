#if canImport(Glibc)
import Glibc
#endif
import CForklift
import XCTest
@testable import Forklift

/// The Remote engine driven through the C entry points from several threads (so the sanitizer
/// runs of this suite cover dataflow, resolution and shutdown races).
final class RemoteTests: XCTestCase {
    /// The sum of the int64 arguments.
    private static let sum: fl_remote_fn = { _, args, count, ctx in
        var total: Int64 = 0
        for i in 0..<count { total += args![i].data!.loadUnaligned(as: Int64.self) }
        return fl_task_return(ctx, &total, 8)
    }

    /// Calls `body` with an argument record of the 8 bytes of `value`, valid during the call.
    private static func withArgument<R>(_ value: Int64, _ body: (UnsafeMutablePointer<fl_arg>) -> R) -> R {
        withUnsafeBytes(of: value) { bytes in
            var arg = fl_arg(data: bytes.baseAddress, len: 8, ref: nil)
            return body(&arg)
        }
    }

    private static func value(_ ref: fl_ref?) -> Int64 {
        var data: UnsafeRawPointer?
        guard fl_get(ref, 30, &data, nil) == FL_OK else { return -1 }
        return data!.loadUnaligned(as: Int64.self)
    }

    /// A counter actor's constructor (an Int64 from 0), destructor and method (adds one,
    /// returns the new count).
    private static let counterInit: fl_actor_init_fn = { _, _, _, state in
        let cell = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
        cell.initialize(to: 0)
        state!.pointee = UnsafeMutableRawPointer(cell)
        return 0
    }
    private static let counterFree: fl_actor_free_fn = { _, state in state?.deallocate() }
    private static let increment: fl_remote_fn = { state, _, _, ctx in
        let cell = state!.assumingMemoryBound(to: Int64.self)
        cell.pointee += 1
        var value = cell.pointee
        return fl_task_return(ctx, &value, 8)
    }

    /// A runtime with two workers, and whatever else `configure` sets in its options.
    private static func twoWorkerRuntime(_ configure: (inout fl_runtime_options) -> Void = { _ in }) -> fl_runtime? {
        var options = fl_runtime_options()
        XCTAssertEqual(fl_runtime_options_init(&options), FL_OK)
        options.workers = 2
        configure(&options)
        var runtime: fl_runtime?
        XCTAssertEqual(fl_runtime_create(&options, &runtime), FL_OK)
        return runtime
    }

    /// Runs `body(handle, thread)` on three threads at once (`handle`: a runtime or an actor)
    /// and returns the sum of what the three calls return (their failures).
    private static func onThreeThreads(_ handle: OpaquePointer?, _ body: @escaping (OpaquePointer?, Int) -> Int) -> Int {
        let address = UInt(bitPattern: UnsafeRawPointer(handle!))
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: 3)
        counts.initialize(repeating: 0, count: 3)
        defer { counts.deallocate() }
        let countsAddress = UInt(bitPattern: counts)
        let threads = (0..<3).map { t in
            startThread {
                UnsafeMutablePointer<Int>(bitPattern: countsAddress)![t] = body(OpaquePointer(bitPattern: address), t)
            }
        }
        threads.forEach(OSThread.join)
        return counts[0] + counts[1] + counts[2]
    }

    /// The runtime's counters once no task runs and every object is gone (a finishing task
    /// lets go of its objects just after its result is seen), or after 5 s.
    private static func statsOnceSettled(_ runtime: fl_runtime?) -> fl_runtime_stats {
        var stats = fl_runtime_stats()
        for _ in 0..<5000 {
            XCTAssertEqual(fl_runtime_get_stats(runtime, &stats), FL_OK)
            if stats.objects == 0 && stats.tasks_running == 0 { break }
            usleep(1000)
        }
        return stats
    }

    /// Waits for the runtime to settle, checks that no object, stored byte or running task is
    /// left, shuts it down and returns the settled counters (for checks of what ran).
    @discardableResult
    private static func assertNothingLeftThenShutDown(_ runtime: fl_runtime?, file: StaticString = #filePath,
                                                      line: UInt = #line) -> fl_runtime_stats {
        let stats = statsOnceSettled(runtime)
        XCTAssertEqual(stats.objects, 0, "objects left", file: file, line: line)
        XCTAssertEqual(stats.object_bytes, 0, "stored bytes left", file: file, line: line)
        XCTAssertEqual(stats.tasks_running, 0, "tasks still running", file: file, line: line)
        XCTAssertEqual(fl_runtime_shutdown(runtime), FL_OK, file: file, line: line)
        return stats
    }

    func testChainsFromSeveralThreadsThenShutdown() {
        let runtime = Self.twoWorkerRuntime()
        let wrong = Self.onThreeThreads(runtime) { runtime, _ in
            var one: Int64 = 1
            var start: Int64 = 0
            var chain: fl_ref?
            _ = fl_put(runtime, &start, 8, &chain)
            for _ in 0..<300 {
                var next: fl_ref?
                withUnsafePointer(to: &one) { one in
                    var args = [fl_arg(data: nil, len: 0, ref: chain), fl_arg(data: one, len: 8, ref: nil)]
                    _ = fl_remote(runtime, Self.sum, nil, &args, 2, nil, &next)
                }
                _ = fl_ref_release(chain)
                chain = next
            }
            let failed = Self.value(chain) != 300 ? 1 : 0
            _ = fl_ref_release(chain)
            return failed
        }
        XCTAssertEqual(wrong, 0)
        XCTAssertEqual(Self.assertNothingLeftThenShutDown(runtime).tasks_finished, 900)
    }

    /// An actor called from three threads, then killed while calls are queued.
    func testActorOrderUnderConcurrentCallersThenKill() {
        var runtime: fl_runtime?
        XCTAssertEqual(fl_runtime_create(nil, &runtime), FL_OK)
        var actor: fl_actor?
        XCTAssertEqual(fl_actor_create(runtime, Self.counterInit, Self.counterFree, nil, nil, 0, nil, &actor), FL_OK)
        let increment = Self.increment
        let disorder = Self.onThreeThreads(actor) { actor, _ in
            var disorder = 0
            var refs: [fl_ref?] = Array(repeating: nil, count: 200)
            for i in 0..<200 { _ = fl_actor_call(actor, increment, nil, 0, &refs[i]) }
            var last: Int64 = 0
            for ref in refs {
                let value = Self.value(ref)
                if value <= last { disorder += 1 }
                last = value
                _ = fl_ref_release(ref)
            }
            return disorder
        }
        XCTAssertEqual(disorder, 0)
        var last: fl_ref?
        XCTAssertEqual(fl_actor_call(actor, increment, nil, 0, &last), FL_OK)
        XCTAssertEqual(Self.value(last), 601)
        _ = fl_ref_release(last)
        var queued: [fl_ref?] = Array(repeating: nil, count: 50)
        for i in 0..<50 { XCTAssertEqual(fl_actor_call(actor, increment, nil, 0, &queued[i]), FL_OK) }
        XCTAssertEqual(fl_actor_kill(actor), FL_OK)
        for ref in queued {
            let status = fl_get(ref, 30, nil, nil)
            XCTAssertTrue(status == FL_OK || status == FL_ECANCELED)
            _ = fl_ref_release(ref)
        }
        XCTAssertEqual(fl_runtime_shutdown(runtime), FL_OK)
    }

    /// Streams of calls on one actor: thread 0 pipelines bursts of calls, thread 1 waits for
    /// each call at once (racing the worker that lingers on the actor for the call handed to
    /// it), thread 2 kills the actor partway. Every call ends once: each thread sees its
    /// values rise, then (after the kill) only cancellations; the state is freed once.
    func testActorStreamsRacingWaitersAndKill() {
        let runtime = Self.twoWorkerRuntime()
        var actor: fl_actor?
        XCTAssertEqual(fl_actor_create(runtime, Self.counterInit, Self.counterFree, nil, nil, 0, nil, &actor), FL_OK)
        let increment = Self.increment
        let malformed = Self.onThreeThreads(actor) { actor, thread in
            if thread == 2 {
                usleep(3000)
                return fl_actor_kill(actor) == FL_OK ? 0 : 1
            }
            var refs: [fl_ref?] = []
            for i in 0..<4000 {
                var ref: fl_ref?
                guard fl_actor_call(actor, increment, nil, 0, &ref) == FL_OK else { break }
                refs.append(ref)
                if thread == 1 || i % 16 == 15 { _ = fl_get(ref, FL_FOREVER, nil, nil) }
            }
            var malformed = 0
            var last: Int64 = 0
            var cancelled = false
            for ref in refs {
                var data: UnsafeRawPointer?
                switch fl_get(ref, 30, &data, nil) {
                case FL_OK:
                    let value = data!.loadUnaligned(as: Int64.self)
                    if cancelled || value <= last { malformed += 1 }
                    last = value
                case FL_ECANCELED:
                    cancelled = true
                default:
                    malformed += 1
                }
                _ = fl_ref_release(ref)
            }
            return malformed
        }
        XCTAssertEqual(malformed, 0)
        Self.assertNothingLeftThenShutDown(runtime)
    }

    /// Three threads call an actor and submit tasks, each waiting with no limit right away,
    /// so the waiting threads and the workers race to claim the queued ones: every call runs
    /// once, one at a time, in each thread's order, and shutdown finds nothing in flight.
    func testWaitersAndWorkersRaceToRunQueuedTasks() {
        let runtime = Self.twoWorkerRuntime()
        var actor: fl_actor?
        XCTAssertEqual(fl_actor_create(runtime, Self.counterInit, Self.counterFree, nil, nil, 0, nil, &actor), FL_OK)
        let increment = Self.increment
        let runtimeAddress = UInt(bitPattern: UnsafeRawPointer(runtime!))
        let problems = Self.onThreeThreads(actor) { actor, thread in
            let runtime = OpaquePointer(bitPattern: runtimeAddress)
            var problems = 0
            var last: Int64 = 0
            let x = Int64(thread)
            for _ in 0..<500 {
                var call: fl_ref?
                var task: fl_ref?
                if fl_actor_call(actor, increment, nil, 0, &call) != FL_OK { problems += 1 }
                let submitted = Self.withArgument(x) { fl_remote(runtime, Self.sum, nil, $0, 1, nil, &task) }
                if submitted != FL_OK { problems += 1 }
                var data: UnsafeRawPointer?
                if fl_get(call, FL_FOREVER, &data, nil) == FL_OK {
                    let value = data!.loadUnaligned(as: Int64.self)
                    if value <= last { problems += 1 }
                    last = value
                } else {
                    problems += 1
                }
                if fl_get(task, FL_FOREVER, &data, nil) != FL_OK || data!.loadUnaligned(as: Int64.self) != x { problems += 1 }
                _ = fl_ref_release(call)
                _ = fl_ref_release(task)
            }
            return problems
        }
        XCTAssertEqual(problems, 0)
        var final: fl_ref?
        XCTAssertEqual(fl_actor_call(actor, increment, nil, 0, &final), FL_OK)
        XCTAssertEqual(Self.value(final), 1501)  // 1,500 calls, each once
        _ = fl_ref_release(final)
        XCTAssertEqual(fl_actor_kill(actor), FL_OK)
        // The constructor, the calls and the tasks.
        XCTAssertEqual(Self.assertNothingLeftThenShutDown(runtime).tasks_finished, 1 + 1501 + 1500)
    }

    /// Cancels from another thread while tasks are submitted and run: every task ends once.
    func testCancelWhileTasksRun() {
        var runtime: fl_runtime?
        XCTAssertEqual(fl_runtime_create(nil, &runtime), FL_OK)
        var refs: [fl_ref?] = Array(repeating: nil, count: 400)
        var one: Int64 = 1
        var previous: fl_ref?
        for i in 0..<400 {
            withUnsafePointer(to: &one) { one in
                var args = [fl_arg(data: nil, len: 0, ref: previous), fl_arg(data: one, len: 8, ref: nil)]
                _ = fl_remote(runtime, Self.sum, nil, &args, previous == nil ? 0 : 2, nil, &refs[i])
            }
            previous = refs[i]
        }
        let addresses = refs.map { UInt(bitPattern: UnsafeRawPointer($0!)) }
        let canceller = startThread {
            for i in stride(from: 399, through: 0, by: -7) { _ = fl_cancel(fl_ref(bitPattern: addresses[i])) }
        }
        OSThread.join(canceller)
        for ref in refs {
            let status = fl_get(ref, 30, nil, nil)
            XCTAssertTrue(status == FL_OK || status == FL_ECANCELED)
        }
        XCTAssertEqual(fl_runtime_shutdown(runtime), FL_OK)
        for ref in refs { _ = fl_ref_release(ref) }
    }

    /// x, x*x as two results.
    private static let square: fl_remote_fn = { _, args, _, ctx in
        var x = args![0].data!.loadUnaligned(as: Int64.self)
        var squared = x * x
        guard fl_task_return_at(ctx, 1, &squared, 8) == FL_OK else { return 1 }
        return fl_task_return(ctx, &x, 8)
    }

    /// Buffers filled and sealed on several threads while tasks with two results consume them.
    func testCreateSealAndSeveralReturnsFromThreads() {
        let runtime = Self.twoWorkerRuntime()
        let failures = Self.onThreeThreads(runtime) { runtime, _ in
            var failures = 0
            for i in 0..<300 {
                var buffer: UnsafeMutableRawPointer?
                var made: fl_ref?
                guard fl_create(runtime, 8, &buffer, &made) == FL_OK else { failures += 1; continue }
                var args = [fl_arg(data: nil, len: 0, ref: made)]
                var refs: [fl_ref?] = [nil, nil]
                guard fl_remote_multi(runtime, Self.square, nil, &args, 1, nil, 2, &refs) == FL_OK else {
                    failures += 1
                    continue
                }
                buffer!.storeBytes(of: Int64(i), as: Int64.self)
                _ = fl_seal(made)
                _ = fl_ref_release(made)
                if Self.value(refs[0]) != Int64(i) || Self.value(refs[1]) != Int64(i * i) { failures += 1 }
                _ = fl_ref_release(refs[1])
                _ = fl_ref_release(refs[0])
            }
            return failures
        }
        XCTAssertEqual(failures, 0)
        Self.assertNothingLeftThenShutDown(runtime)
    }

    /// Returns its first argument's bytes.
    private static let echo: fl_remote_fn = { _, args, _, ctx in
        fl_task_return(ctx, args![0].data, args![0].len)
    }

    /// Puts, created buffers and task results from three threads on a store of 4 KiB with a
    /// spill directory: some fit, the others go to files; every value reads back right, and
    /// in the end no object, byte or file is left.
    func testSpillingFromThreads() {
        var template = Array("/tmp/forklift-spill-swift-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { return XCTFail("mkdtemp") }
        let directory = String(cString: made)
        let runtime = Self.twoWorkerRuntime { $0.store_capacity = 4096 }
        XCTAssertEqual(fl_runtime_set_spill_directory(runtime, directory), FL_OK)
        let failures = Self.onThreeThreads(runtime) { runtime, thread in
            var failures = 0
            var bytes = [UInt8](repeating: 0, count: 3000)
            for i in 0..<200 {
                let length = 500 + (i * 37 + thread * 101) % 2500
                for j in 0..<length { bytes[j] = UInt8(truncatingIfNeeded: i &+ j &* 3 &+ thread) }
                var put: fl_ref?, created: fl_ref?, echoed: fl_ref?
                var buffer: UnsafeMutableRawPointer?
                guard fl_put(runtime, bytes, length, &put) == FL_OK,
                      fl_create(runtime, length, &buffer, &created) == FL_OK else { failures += 1; continue }
                buffer!.copyMemory(from: bytes, byteCount: length)
                var args = [fl_arg(data: nil, len: 0, ref: created)]
                guard fl_remote(runtime, Self.echo, nil, &args, 1, nil, &echoed) == FL_OK else { failures += 1; continue }
                _ = fl_seal(created)
                for ref in [put, created, echoed] {
                    var data: UnsafeRawPointer?
                    var got = 0
                    if fl_get(ref, 30, &data, &got) != FL_OK || got != length || memcmp(data!, bytes, length) != 0 {
                        failures += 1
                    }
                    _ = fl_ref_release(ref)
                }
            }
            return failures
        }
        XCTAssertEqual(failures, 0)
        Self.assertNothingLeftThenShutDown(runtime)
        XCTAssertEqual(rmdir(directory), 0)  // fails unless every spill file is gone
    }

    /// Tasks asking for CPUs, submitted from several threads, some waiting for others while
    /// holding every CPU (they lend them), then a shutdown with tasks still waiting for CPUs.
    func testCPUCountsFromThreadsThenShutdown() {
        let runtime = Self.twoWorkerRuntime()
        let failures = Self.onThreeThreads(runtime) { runtime, t in
            var failures = 0
            var options = fl_remote_options()
            _ = fl_remote_options_init(&options)
            for i in 0..<200 {
                options.num_cpus = Int32(1 + (i + t) % 2)
                var ref: fl_ref?
                guard Self.withArgument(Int64(i), { fl_remote(runtime, Self.sum, nil, $0, 1, &options, &ref) }) == FL_OK,
                      Self.value(ref) == Int64(i) else {
                    failures += 1
                    continue
                }
                _ = fl_ref_release(ref)
            }
            return failures
        }
        XCTAssertEqual(failures, 0)
        var options = fl_remote_options()
        _ = fl_remote_options_init(&options)
        options.num_cpus = 2
        var refs = [fl_ref?](repeating: nil, count: 20)
        for i in 0..<20 {
            XCTAssertEqual(Self.withArgument(1) { fl_remote(runtime, Self.sum, nil, $0, 1, &options, &refs[i]) }, FL_OK)
        }
        XCTAssertEqual(fl_runtime_shutdown(runtime), FL_OK)
        for ref in refs {
            let code = fl_get(ref, 30, nil, nil)
            XCTAssertTrue(code == FL_OK || code == FL_ECANCELED)
            _ = fl_ref_release(ref)
        }
    }

    /// Returns the worker's pid; a negative argument kills the worker process.
    private static let pidOrDie: fl_remote_fn = { _, args, _, ctx in
        if args![0].data!.loadUnaligned(as: Int64.self) < 0 { raise(SIGKILL) }
        var pid = Int64(getpid())
        return fl_task_return(ctx, &pid, 8)
    }

    /// Submits `count` calls of `pidOrDie` through `submit(argument, ref)` (those `dies` picks
    /// kill their process) and returns how many did not end as expected: FL_OK, or FL_EWORKER
    /// for the killed ones.
    private static func countWrongOutcomes(_ count: Int, dies: (Int) -> Bool,
                                           submit: (UnsafePointer<fl_arg>, UnsafeMutablePointer<fl_ref?>) -> Int32) -> Int {
        var wrong = 0
        for i in 0..<count {
            var ref: fl_ref?
            guard withArgument(Int64(dies(i) ? -1 : i), { submit($0, &ref) }) == FL_OK else {
                wrong += 1
                continue
            }
            if fl_get(ref, 30, nil, nil) != (dies(i) ? FL_EWORKER : FL_OK) { wrong += 1 }
            _ = fl_ref_release(ref)
        }
        return wrong
    }

    /// Isolated tasks and an isolated actor called from three threads, with deaths among them,
    /// then shutdown: every task settles, and the runtime's side of worker processes (the
    /// proxies, restarts, shared objects) runs under the sanitizers.
    func testIsolatedTasksAndActorFromThreads() {
        let runtime = Self.twoWorkerRuntime { $0.process_workers = 2 }
        var actorOptions = fl_actor_options()
        XCTAssertEqual(fl_actor_options_init(&actorOptions), FL_OK)
        actorOptions.isolate = 1
        actorOptions.max_restarts = 100
        var actor: fl_actor?
        XCTAssertEqual(fl_actor_create(runtime, { _, _, _, state in state!.pointee = nil; return 0 }, nil, nil, nil, 0,
                                       &actorOptions, &actor), FL_OK)
        // Thread 0's every tenth task and thread 1's every tenth call kill their process.
        let wrong = Self.onThreeThreads(runtime) { handle, thread in
            var remoteOptions = fl_remote_options()
            _ = fl_remote_options_init(&remoteOptions)
            remoteOptions.isolate = 1
            return Self.countWrongOutcomes(40, dies: { thread == 0 && $0 % 10 == 9 }) { arg, ref in
                fl_remote(handle, Self.pidOrDie, nil, arg, 1, &remoteOptions, ref)
            }
        }
        XCTAssertEqual(wrong, 0)
        let wrongCalls = Self.onThreeThreads(actor) { handle, thread in
            Self.countWrongOutcomes(30, dies: { thread == 1 && $0 % 10 == 5 }) { arg, ref in
                fl_actor_call(handle, Self.pidOrDie, arg, 1, ref)
            }
        }
        XCTAssertEqual(wrongCalls, 0)
        XCTAssertEqual(fl_runtime_shutdown(runtime), FL_OK)
        XCTAssertEqual(fl_actor_kill(actor), FL_OK)
    }

    /// A plain C-convention function for the typed tasks: a + b.
    private static let add: @convention(c) (Int64, Int64) -> Int64 = { $0 + $1 }

    /// Typed tasks (a C function by signature) in chains from three threads sharing one
    /// signature, which is destroyed while their tasks may still run.
    func testTypedChainsFromThreadsWithOneSignature() {
        let runtime = Self.twoWorkerRuntime()
        var signature: fl_signature?
        XCTAssertEqual(fl_signature_create("i64(i64, i64)", &signature), FL_OK)
        let sigAddress = UInt(bitPattern: UnsafeRawPointer(signature!))
        let fn = unsafeBitCast(Self.add, to: fl_fn.self)
        let heads = UnsafeMutablePointer<fl_ref?>.allocate(capacity: 3)
        heads.initialize(repeating: nil, count: 3)
        defer { heads.deallocate() }
        let headsAddress = UInt(bitPattern: heads)
        let refused = Self.onThreeThreads(runtime) { runtime, thread in
            let signature = OpaquePointer(bitPattern: sigAddress)
            var one: Int64 = 1
            var chain: fl_ref?
            var failures = 0
            withUnsafePointer(to: &one) { one in
                for _ in 0..<300 {
                    var next: fl_ref?
                    var args = [chain == nil ? fl_arg(data: one, len: 8, ref: nil) : fl_arg(data: nil, len: 0, ref: chain),
                                fl_arg(data: one, len: 8, ref: nil)]
                    if fl_remote_typed(runtime, signature, fn, &args, 2, nil, &next) != FL_OK { failures += 1 }
                    if chain != nil { _ = fl_ref_release(chain) }
                    chain = next
                }
            }
            UnsafeMutablePointer<fl_ref?>(bitPattern: headsAddress)![thread] = chain
            return failures
        }
        XCTAssertEqual(refused, 0)
        XCTAssertEqual(fl_signature_destroy(signature), FL_OK)
        for thread in 0..<3 {
            XCTAssertEqual(Self.value(heads[thread]), 301)
            XCTAssertEqual(fl_ref_release(heads[thread]), FL_OK)
        }
        XCTAssertEqual(Self.assertNothingLeftThenShutDown(runtime).tasks_finished, 900)
    }

    /// A call cancelled before its submission has queued it (its ref's handle is live before
    /// fl_actor_call returns, so a thread guessing it could) takes its turn as cancelled, and
    /// leaves the actor's count of calls waiting for arguments right: a call queued before it,
    /// waiting for an argument not sealed, still waits, and so do the calls behind that one.
    func testCallCancelledBeforeItsSubmission() throws {
        let runtime = Self.twoWorkerRuntime()
        var handle: fl_actor?
        XCTAssertEqual(fl_actor_create(runtime, Self.counterInit, Self.counterFree, nil, nil, 0, nil, &handle), FL_OK)
        let actor = try Registry.actors.with(handle, "actor") { $0 }
        var buffers: [UnsafeMutableRawPointer?] = [nil, nil]
        var unsealed: [fl_ref?] = [nil, nil]
        for i in 0..<2 { XCTAssertEqual(fl_create(runtime, 8, &buffers[i], &unsealed[i]), FL_OK) }
        // Queued first: waits for the second buffer.
        var waiting: fl_ref?
        var argument = fl_arg(data: nil, len: 0, ref: unsealed[1])
        XCTAssertEqual(fl_actor_call(handle, Self.increment, &argument, 1, &waiting), FL_OK)
        // Made and cancelled, not yet submitted: waits for the first buffer.
        let firstObject = try Registry.refs.with(unsealed[0], "ref") { $0 }
        let output = RemoteObject(store: actor.runtime.store)
        let early = RemoteTask(fn: Self.increment, user: nil, arguments: [.object(firstObject)], blobBytes: nil,
                               output: output, options: RemoteOptions(), runtime: actor.runtime, actor: actor)
        let earlyRef = cHandle(try Registry.refs.register(output, hint: UnsafeRawPointer(output.slot)))
        early.cancel(force: false)
        // Behind the waiting call: it must not run before the second buffer is sealed.
        var behind: fl_ref?
        XCTAssertEqual(fl_actor_call(handle, Self.increment, nil, 0, &behind), FL_OK)
        usleep(50_000)
        XCTAssertEqual(fl_get(waiting, 0, nil, nil), FL_ETIMEDOUT)
        XCTAssertEqual(fl_get(behind, 0, nil, nil), FL_ETIMEDOUT)
        try actor.submit(early)
        XCTAssertEqual(fl_get(earlyRef, 30, nil, nil), FL_ECANCELED)
        XCTAssertEqual(fl_get(waiting, 0, nil, nil), FL_ETIMEDOUT)
        buffers[1]!.storeBytes(of: Int64(7), as: Int64.self)
        XCTAssertEqual(fl_seal(unsealed[1]), FL_OK)
        XCTAssertEqual(Self.value(waiting), 1)
        XCTAssertEqual(Self.value(behind), 2)
        // The count is right again: a call waiting for the first buffer waits for it.
        var last: fl_ref?
        argument = fl_arg(data: nil, len: 0, ref: unsealed[0])
        XCTAssertEqual(fl_actor_call(handle, Self.increment, &argument, 1, &last), FL_OK)
        usleep(20_000)
        XCTAssertEqual(fl_get(last, 0, nil, nil), FL_ETIMEDOUT)
        XCTAssertEqual(fl_seal(unsealed[0]), FL_OK)
        XCTAssertEqual(Self.value(last), 3)
        for ref in [waiting, behind, last, earlyRef] + unsealed { XCTAssertEqual(fl_ref_release(ref), FL_OK) }
        XCTAssertEqual(fl_actor_kill(handle), FL_OK)
        XCTAssertEqual(fl_runtime_shutdown(runtime), FL_OK)
    }

    /// Three threads make boxes that contain puts and a shared box, read them back through
    /// fl_ref_contained and release them in scrambled orders, while tasks read the shared
    /// box's contents (fl_arg_contained): every value arrives, and nothing is left.
    func testContainedObjectsFromThreads() {
        let runtime = Self.twoWorkerRuntime()
        var shared: fl_ref?
        var bytes: UnsafeMutableRawPointer?
        XCTAssertEqual(fl_create(runtime, 0, &bytes, &shared), FL_OK)
        for value in Int64(1)...3 {
            var put: fl_ref?
            var v = value
            XCTAssertEqual(fl_put(runtime, &v, 8, &put), FL_OK)
            XCTAssertEqual(fl_ref_contain(shared, put, nil), FL_OK)
            XCTAssertEqual(fl_ref_release(put), FL_OK)
        }
        XCTAssertEqual(fl_seal(shared), FL_OK)
        let sharedAddress = UInt(bitPattern: UnsafeRawPointer(shared!))
        let sumContained: fl_remote_fn = { _, _, _, ctx in
            var total: Int64 = 0
            var index = 0
            while true {
                var ref: fl_ref?
                guard fl_arg_contained(0, index, &ref) == FL_OK else { break }
                var data: UnsafeRawPointer?
                if fl_get(ref, 30, &data, nil) == FL_OK { total += data!.loadUnaligned(as: Int64.self) }
                _ = fl_ref_release(ref)
                index += 1
            }
            return fl_task_return(ctx, &total, 8)
        }
        let failures = Self.onThreeThreads(runtime) { runtime, thread in
            let shared = OpaquePointer(bitPattern: sharedAddress)
            var failures = 0
            for round in 0..<300 {
                var box: fl_ref?
                var bytes: UnsafeMutableRawPointer?
                if fl_create(runtime, 0, &bytes, &box) != FL_OK { failures += 1; continue }
                var v = Int64(round)
                var put: fl_ref?
                if fl_put(runtime, &v, 8, &put) != FL_OK { failures += 1 }
                if fl_ref_contain(box, put, nil) != FL_OK { failures += 1 }
                if fl_ref_contain(box, shared, nil) != FL_OK { failures += 1 }
                if fl_seal(box) != FL_OK { failures += 1 }
                if (round + thread) % 2 == 0 { _ = fl_ref_release(put) }
                var first: fl_ref?, second: fl_ref?
                if fl_ref_contained(box, 0, &first) != FL_OK || Self.value(first) != Int64(round) { failures += 1 }
                if fl_ref_contained(box, 1, &second) != FL_OK { failures += 1 }
                var arg = fl_arg(data: nil, len: 0, ref: second)
                var sum: fl_ref?
                if fl_remote(runtime, sumContained, nil, &arg, 1, nil, &sum) != FL_OK || Self.value(sum) != 6 { failures += 1 }
                _ = fl_ref_release(sum)
                _ = fl_ref_release(box)
                _ = fl_ref_release(second)
                _ = fl_ref_release(first)
                if (round + thread) % 2 != 0 { _ = fl_ref_release(put) }
            }
            return failures
        }
        XCTAssertEqual(failures, 0)
        XCTAssertEqual(fl_ref_release(shared), FL_OK)
        _ = Self.assertNothingLeftThenShutDown(runtime)
    }
}
