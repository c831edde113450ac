import CForklift

/// A C function signature, parsed and prepared for libffi once, shared by every call that uses
/// it (from any thread). Engines reuse it: a typed call is a blob task whose argument is a tuple
/// laid out as this signature describes.
final class Signature {
    let prepared: OpaquePointer
    /// The text it was parsed from (worker processes parse it again on their side).
    let text: String
    /// Arguments, bytes of an argument tuple, bytes of the result (0 for void).
    let argumentCount: Int
    let tupleSize: Int
    let resultSize: Int

    /// Parses `text`, e.g. "double(double, double)" or "i64(i32, {double, double}, ptr)".
    init(_ text: String) throws(Failure) {
        var error = [CChar](repeating: 0, count: 256)
        guard let prepared = text.withCString({ fls_sig_parse($0, &error, error.count) }) else {
            throw Failure(FL_EINVAL, String(cString: error))
        }
        self.prepared = prepared
        self.text = text
        argumentCount = fls_sig_nargs(prepared)
        tupleSize = fls_sig_tuple_size(prepared)
        resultSize = fls_sig_result_size(prepared)
    }

    deinit { fls_sig_free(prepared) }

    /// Calls `fn` with the arguments in `tuple`, writing the result to `result`.
    @inline(__always)
    func call(_ fn: fl_fn, tuple: UnsafeRawPointer?, result: UnsafeMutableRawPointer?) {
        fls_sig_call(prepared, fn, tuple, result)
    }
}
