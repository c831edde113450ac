"""Native functions (ctypes function pointers) called through Forklift's typed-call path.

A ctypes function with ``argtypes`` and ``restype`` becomes a signature such as
``"double(double, double)"``; its arguments are packed into a C struct laid out as that
signature's argument tuple and the library calls the function on a worker through libffi,
so no Python code (and no GIL) is involved while it runs. Pointer parameters accept numpy
arrays and other writable buffers without a copy.
"""

from __future__ import annotations

import ctypes
from ctypes import Structure, c_void_p, sizeof

from . import _lib

_CODES = {"b": "i8", "B": "u8", "h": "i16", "H": "u16", "i": "i32", "I": "u32", "l": "i64",
          "L": "u64", "q": "i64", "Q": "u64", "f": "float", "d": "double", "?": "u8", "c": "i8",
          "z": "ptr", "Z": "ptr", "P": "ptr"}


def is_native(function) -> bool:
    """Whether ``function`` is a ctypes function pointer or a cffi function (called natively,
    not as Python)."""
    return isinstance(function, ctypes._CFuncPtr) or _is_cffi_function(function)


_CFFI_PRIMITIVES = {
    "char": ctypes.c_byte, "signed char": ctypes.c_byte, "unsigned char": ctypes.c_ubyte,
    "short": ctypes.c_short, "unsigned short": ctypes.c_ushort, "int": ctypes.c_int,
    "unsigned int": ctypes.c_uint, "long": ctypes.c_long, "unsigned long": ctypes.c_ulong,
    "long long": ctypes.c_longlong, "unsigned long long": ctypes.c_ulonglong, "float": ctypes.c_float,
    "double": ctypes.c_double, "_Bool": ctypes.c_bool, "size_t": ctypes.c_size_t, "ssize_t": ctypes.c_ssize_t,
    "int8_t": ctypes.c_int8, "uint8_t": ctypes.c_uint8, "int16_t": ctypes.c_int16, "uint16_t": ctypes.c_uint16,
    "int32_t": ctypes.c_int32, "uint32_t": ctypes.c_uint32, "int64_t": ctypes.c_int64, "uint64_t": ctypes.c_uint64,
    "intptr_t": ctypes.c_ssize_t, "uintptr_t": ctypes.c_size_t,
}
_cffi_ffi = None
_cffi_converted: dict = {}


try:  # cffi is optional: without it, nothing is a cffi function
    import _cffi_backend
    _CFFI_DATA = _cffi_backend._CDataBase
except ImportError:
    _cffi_backend = None
    _CFFI_DATA = ()


def _is_cffi_function(function) -> bool:
    if not isinstance(function, _CFFI_DATA):
        return False
    global _cffi_ffi
    if _cffi_ffi is None:
        _cffi_ffi = _cffi_backend.FFI()
    try:
        return _cffi_ffi.typeof(function).kind == "function"
    except (TypeError, AttributeError):
        return False


def _ctypes_of(ctype):
    if ctype.kind == "void":
        return None
    if ctype.kind == "pointer":
        return c_void_p
    if ctype.kind == "primitive" and ctype.cname in _CFFI_PRIMITIVES:
        return _CFFI_PRIMITIVES[ctype.cname]
    raise TypeError(f"cffi type {ctype.cname!r} has no Forklift typed-call equivalent")


def as_ctypes(function):
    """The ctypes function pointer for a native function: itself, or the same address with
    the signature of a cffi function."""
    if isinstance(function, ctypes._CFuncPtr):
        return function
    ctype = _cffi_ffi.typeof(function)
    if ctype.ellipsis:
        raise TypeError("variadic functions cannot be called through typed calls")
    address = int(_cffi_ffi.cast("uintptr_t", function))
    key = (address, ctype.cname)
    converted = _cffi_converted.get(key)
    if converted is None:
        argtypes = [_ctypes_of(arg) for arg in ctype.args]
        restype = _ctypes_of(ctype.result)
        converted = ctypes.CFUNCTYPE(restype, *argtypes)(address)
        converted.argtypes = argtypes
        converted.restype = restype
        _cffi_converted[key] = converted
    return converted


def _is_pointer(ctype) -> bool:
    if ctype in (ctypes.c_char_p, ctypes.c_wchar_p, c_void_p):
        return True
    if isinstance(ctype, type) and issubclass(ctype, (ctypes._Pointer, ctypes._CFuncPtr)):
        return True
    # numpy.ctypeslib.ndpointer classes and other from_param adapters that are pointers.
    return isinstance(ctype, type) and issubclass(ctype, c_void_p)


def _type_text(ctype) -> str:
    if ctype is None:
        return "void"
    if _is_pointer(ctype):
        return "ptr"
    if isinstance(ctype, type) and issubclass(ctype, Structure):
        return "{" + ", ".join(_type_text(field[1]) for field in ctype._fields_) + "}"
    code = getattr(ctype, "_type_", None)
    if isinstance(code, str) and code in _CODES:
        return _CODES[code]
    raise TypeError(f"{ctype!r} has no Forklift typed-call equivalent")


def _slot_type(ctype):
    """The member type used in the argument tuple: pointers travel as plain addresses."""
    return c_void_p if _is_pointer(ctype) else ctype


class NativeFunction:
    """A ctypes function prepared for typed calls: its signature and tuple/result layouts."""

    def __init__(self, function):
        if not is_native(function):
            raise TypeError("a ctypes function pointer or a cffi function is needed")
        function = as_ctypes(function)
        argtypes = function.argtypes
        if argtypes is None:
            raise TypeError(f"{function!r} needs argtypes (and restype) to be called natively")
        self.function = function
        self.argtypes = tuple(argtypes)
        self.restype = function.restype
        text = f"{_type_text(self.restype)}({', '.join(_type_text(t) for t in self.argtypes) or 'void'})"
        self.signature_text = text
        handle = c_void_p()
        _lib.check(_lib.lib.fl_signature_create(text.encode(), ctypes.byref(handle)), "signature " + text)
        self.signature = handle
        fields = [(f"a{i}", _slot_type(t)) for i, t in enumerate(self.argtypes)]
        self.Tuple = type("Arguments", (Structure,), {"_fields_": fields})
        self.Result = _slot_type(self.restype) if self.restype is not None else None
        count, tuple_size, result_size = ctypes.c_size_t(), ctypes.c_size_t(), ctypes.c_size_t()
        _lib.lib.fl_signature_layout(self.signature, ctypes.byref(count), ctypes.byref(tuple_size),
                                     ctypes.byref(result_size))
        if self.argtypes and tuple_size.value != sizeof(self.Tuple):
            raise TypeError(f"{text}: argument layout mismatch ({tuple_size.value} != {sizeof(self.Tuple)})")
        self.address = ctypes.cast(function, c_void_p).value

    def __del__(self):
        handle = getattr(self, "signature", None)
        if handle and _lib is not None and _lib.lib is not None:
            _lib.lib.fl_signature_destroy(handle)

    def pack(self, args, into, keep: list):
        """Fills ``into`` (a ``Tuple``) from Python values; objects that must stay alive
        while the call runs are appended to ``keep``."""
        if len(args) != len(self.argtypes):
            raise TypeError(f"{self.function.__name__ if hasattr(self.function, '__name__') else 'function'} "
                            f"takes {len(self.argtypes)} arguments ({len(args)} given)")
        for i, (value, ctype) in enumerate(zip(args, self.argtypes)):
            if _is_pointer(ctype):
                setattr(into, f"a{i}", address_of(value, keep))
            else:
                setattr(into, f"a{i}", value)
        return into

    def tuple_bytes(self, args, keep: list):
        return self.pack(args, self.Tuple(), keep)

    def convert(self, result):
        """The Python value of a result slot."""
        if self.Result is None:
            return None
        if isinstance(result, Structure):
            return result
        value = result.value
        if self.restype is ctypes.c_char_p and value is not None:
            return ctypes.string_at(value)
        return value


def address_of(value, keep: list):
    """The address to pass for a pointer parameter, without copying when the object allows."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        buffer = ctypes.c_char_p(value)
        keep.append((value, buffer))
        return ctypes.cast(buffer, c_void_p).value
    if isinstance(value, (ctypes._SimpleCData, ctypes.Array, Structure, ctypes.Union)):
        keep.append(value)
        return ctypes.addressof(value)
    if isinstance(value, ctypes._Pointer):
        keep.append(value)
        return ctypes.cast(value, c_void_p).value
    interface = getattr(value, "__array_interface__", None)
    if interface is not None:
        keep.append(value)
        return interface["data"][0]
    view = memoryview(value)
    keep.append(value)
    if view.readonly:
        raise TypeError("a read-only buffer cannot be passed as a pointer without a copy; "
                        "pass bytes or a writable buffer")
    holder = (ctypes.c_char * view.nbytes).from_buffer(view)
    keep.append(holder)
    return ctypes.addressof(holder)
