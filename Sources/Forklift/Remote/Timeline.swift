#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// The task events of a runtime, for a Chrome-trace timeline (`fl_runtime_trace_*`): each
/// run of a task or actor call with its function, thread, start, duration and outcome.
///
/// While off, recording costs a task one atomic load; while on, one lock to append an event.
/// Names are resolved only when the trace is written.
final class Timeline {
    /// One run of a task on a worker thread.
    struct Event {
        /// The function run (its address: a remote function, or a typed task's C function).
        let function: UnsafeRawPointer
        /// The user pointer it was called with (which of its registered names it ran under);
        /// nil for a typed task, whose per-call state tells no name.
        let user: UnsafeRawPointer?
        let thread: Int64
        let startNanoseconds: Int64
        let endNanoseconds: Int64
        let status: Int32
        let isActorCall: Bool
        /// A fixed name instead of the function's (an actor's constructor).
        var label: StaticString? = nil
    }

    /// Events kept at most; later ones are counted as dropped.
    static let capacity = 1 << 20

    private let enabled: UnsafeMutablePointer<UInt32>
    private let lock = Lock()
    private var events: [Event] = []
    private var dropped = 0

    init() {
        enabled = .allocate(capacity: 1)
        enabled.initialize(to: 0)
    }

    deinit { enabled.deallocate() }

    /// Whether events are being recorded.
    var isRecording: Bool { fls_atomic_load_u32(enabled) != 0 }

    /// Clears the events and starts recording.
    func start() {
        lock.withLock {
            events.removeAll(keepingCapacity: true)
            dropped = 0
        }
        fls_atomic_store_u32(enabled, 1)
    }

    /// Stops recording; the events stay until the next start.
    func stop() { fls_atomic_store_u32(enabled, 0) }

    /// Appends one event (while recording).
    func record(_ event: Event) {
        lock.withLock {
            if events.count < Self.capacity { events.append(event) } else { dropped += 1 }
        }
    }

    /// Writes the events as Chrome-trace JSON (the "traceEvents" format Perfetto and
    /// chrome://tracing open): one complete ("X") event per run, timestamps in µs.
    func write(to path: String) throws(Failure) {
        let snapshot: ([Event], Int) = lock.withLock { (events, dropped) }
        guard let file = fopen(path, "w") else {
            throw Failure(FL_ESYSTEM, "cannot open \"\(path)\" for writing (errno \(errno))")
        }
        let pid = getpid()
        let origin = snapshot.0.map(\.startNanoseconds).min() ?? 0
        var names: [CalledAs: String] = [:]
        fputs("{\"displayTimeUnit\":\"ms\",\"otherData\":{\"dropped_events\":\(snapshot.1)},\"traceEvents\":[\n", file)
        fputs("{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":\(pid),\"args\":{\"name\":\"forklift runtime\"}}", file)
        for event in snapshot.0 {
            let called = CalledAs(function: event.function, user: event.user)
            let name: String
            if let label = event.label {
                name = label.description
            } else if let known = names[called] {
                name = known
            } else {
                name = Self.functionName(called)
                names[called] = name
            }
            let start = Double(event.startNanoseconds - origin) / 1000
            let duration = Double(event.endNanoseconds - event.startNanoseconds) / 1000
            let line = ",\n{\"name\":\"\(Self.escaped(name))\",\"cat\":\"\(event.isActorCall ? "actor" : "task")\","
                + "\"ph\":\"X\",\"ts\":\(start),\"dur\":\(duration),\"pid\":\(pid),\"tid\":\(event.thread),"
                + "\"args\":{\"status\":\(event.status)}}"
            fputs(line, file)
        }
        fputs("\n]}\n", file)
        let failed = ferror(file) != 0
        if fclose(file) != 0 || failed {
            throw Failure(FL_ESYSTEM, "could not write \"\(path)\" (errno \(errno))")
        }
    }

    /// A function and the user pointer it was called with: what a trace names.
    private struct CalledAs: Hashable {
        let function: UnsafeRawPointer
        let user: UnsafeRawPointer?
    }

    /// The registered name of a function, else its symbol, else its address.
    private static func functionName(_ called: CalledAs) -> String {
        let address = called.function
        if let registered = FunctionRegistry.name(of: address, user: called.user) { return registered }
        var path = [CChar](repeating: 0, count: 4096)
        var symbol = [CChar](repeating: 0, count: 512)
        if fls_function_name(address, &path, path.count, &symbol, symbol.count) == 0 {
            return String(decoding: symbol.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        return "task@0x" + String(UInt(bitPattern: address), radix: 16)
    }

    /// `text` as the inside of a JSON string.
    static func escaped(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }
}
