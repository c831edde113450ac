import CForklift

/// Something that runs on its own OS thread.
protocol ThreadBody: AnyObject {
    /// The thread's whole life.
    func run()
}

/// Starting and joining OS threads that run a `ThreadBody`.
enum OSThread {
    /// Starts a thread running `body.run()`; the thread keeps `body` alive. Returns the thread id.
    static func start(_ body: ThreadBody) throws(Failure) -> UInt64 {
        let box = Unmanaged.passRetained(BodyBox(body)).toOpaque()
        var thread: UInt64 = 0
        let error = fls_thread_start({ raw in
            let box = Unmanaged<BodyBox>.fromOpaque(raw!).takeRetainedValue()
            box.body.run()
            return nil
        }, box, &thread)
        guard error == 0 else {
            Unmanaged<BodyBox>.fromOpaque(box).release()
            throw Failure(FL_ESYSTEM, "could not start a thread (error \(error))")
        }
        return thread
    }

    /// Waits for a thread to end.
    static func join(_ thread: UInt64) {
        _ = fls_thread_join(thread)
    }

    private final class BodyBox {
        let body: ThreadBody
        init(_ body: ThreadBody) { self.body = body }
    }
}
