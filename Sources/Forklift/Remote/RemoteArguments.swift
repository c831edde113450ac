import CForklift

/// The arguments of a submission, checked and converted: blobs copied back to back into one
/// buffer, references resolved to their objects.
struct RemoteArguments {
    private(set) var list: [RemoteTask.Argument] = []
    private var bytes: UnsafeMutableRawPointer?

    init(_ args: UnsafePointer<fl_arg>?, _ count: Int) throws(Failure) {
        var total = 0
        for i in 0..<count where args![i].ref == nil {
            try Check.bytes(args![i].data, args![i].len, "args[].data")
            total += args![i].len
        }
        bytes = total > 0 ? UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 16) : nil
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
            bytes?.deallocate()
            throw error
        }
    }

    /// The copied bytes; the task owns them from now on.
    mutating func takeBytes() -> UnsafeMutableRawPointer? {
        defer { bytes = nil }
        return bytes
    }
}
