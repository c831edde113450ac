#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// The arguments of a submission, checked and converted: blobs copied back to back into one
/// buffer, references resolved to their objects.
struct RemoteArguments {
    private(set) var list: [RemoteTask.Argument] = []
    private var bytes: UnsafeMutableRawPointer?

    /// At most this many arguments per submission (a larger `nargs` is a caller's error).
    static let maximumCount = 1 << 20

    init(_ args: UnsafePointer<fl_arg>?, _ count: Int) throws(Failure) {
        try Check.size(count, "nargs")
        guard count <= Self.maximumCount else { throw Failure(FL_EINVAL, "nargs \(count) is more than \(Self.maximumCount)") }
        var total = 0
        for i in 0..<count where args![i].ref == nil {
            try Check.bytes(args![i].data, args![i].len, "args[].data")
            let (sum, overflow) = total.addingReportingOverflow(args![i].len)
            guard !overflow else { throw Failure(FL_EINVAL, "the blob arguments' lengths add up to an impossible size") }
            total = sum
        }
        if total > 0 {
            // malloc, so that a size the machine cannot hold is FL_ENOMEM rather than a trap.
            guard let block = malloc(total) else {
                throw Failure(FL_ENOMEM, "no memory to copy \(total) bytes of arguments")
            }
            bytes = block
        }
        var offset = 0
        if count > 0 { list.reserveCapacity(count) }
        do throws(Failure) {
            for i in 0..<count {
                let arg = args![i]
                if let ref = arg.ref {
                    list.append(.object(try Registry.refs.with(ref, "args[].ref") { $0 }))
                } else {
                    if arg.len > 0 { (bytes! + offset).copyMemory(from: arg.data!, byteCount: arg.len) }
                    list.append(.blob(offset: offset, length: arg.len))
                    offset += arg.len
                }
            }
        } catch {
            free(bytes)
            throw error
        }
    }

    /// The copied bytes (malloc'd); the task owns them from now on and frees them with free().
    mutating func takeBytes() -> UnsafeMutableRawPointer? {
        defer { bytes = nil }
        return bytes
    }
}
