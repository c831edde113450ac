#if canImport(Glibc)
import Glibc
#endif
import CForklift

/// A remote task, actor call or actor constructor packed for a worker process (an
/// `fls_remote_call`, see `forklift_worker.h`): the header, a record per argument, then the
/// arguments' bytes. An argument whose object lives in shared memory travels as its place
/// there (the worker maps it, no copy; an arena segment once per worker process); every other
/// one is copied in.
struct IsolatedCall {
    /// One argument: its bytes, and where they live if they are in shared memory.
    struct Argument {
        let data: UnsafeRawPointer?
        let length: Int
        let shared: fls_arena_place?
    }

    let bytes: UnsafeMutableRawPointer
    let length: Int

    /// Packs a call of `fn` (an `fl_remote_fn`, or an `fl_actor_init_fn` for a constructor; with
    /// `signature`, any C function called through libffi with the arguments as its values).
    init(fn: UnsafeRawPointer, user: UnsafeMutableRawPointer?, isMethod: Bool, signature: Signature? = nil,
         arguments: [Argument]) {
        let header = MemoryLayout<fls_remote_call>.stride
        let record = MemoryLayout<fls_remote_arg>.stride
        let text = signature.map { Array($0.text.utf8CString) } ?? []
        var inline = (text.count + 15) & ~15
        for argument in arguments where argument.shared == nil { inline += (argument.length + 15) & ~15 }
        length = header + record * arguments.count + inline
        bytes = .allocate(byteCount: max(length, 1), alignment: 16)
        bytes.storeBytes(of: fls_remote_call(fn: unsafeBitCast(fn, to: (@convention(c) () -> Void).self), user: user,
                                             nargs: UInt32(arguments.count), is_method: isMethod ? 1 : 0,
                                             owner_pid: getpid(), signature_len: UInt32(text.count)),
                         as: fls_remote_call.self)
        var offset = header + record * arguments.count
        if !text.isEmpty {
            text.withUnsafeBytes { (bytes + offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        offset += (text.count + 15) & ~15
        for (index, argument) in arguments.enumerated() {
            let at = bytes + header + record * index
            if let place = argument.shared {
                at.storeBytes(of: fls_remote_arg(offset: place.offset, len: UInt64(argument.length), fd: place.fd, pad: 0,
                                                 inode: place.inode, span: place.span),
                              as: fls_remote_arg.self)
                continue
            }
            at.storeBytes(of: fls_remote_arg(offset: UInt64(offset), len: UInt64(argument.length), fd: -1, pad: 0,
                                             inode: 0, span: 0),
                          as: fls_remote_arg.self)
            if argument.length > 0 { (bytes + offset).copyMemory(from: argument.data!, byteCount: argument.length) }
            offset += (argument.length + 15) & ~15
        }
    }

    /// The packed bytes as an array (initializer arguments of an actor's process).
    var array: [UInt8] { Array(UnsafeRawBufferPointer(start: bytes, count: length)) }

    func deallocate() { bytes.deallocate() }
}
