"""Whole pickled messages through a Forklift shared-memory queue (fl_queue)."""

from __future__ import annotations

import ctypes
import pickle
from ctypes import byref, c_size_t, c_void_p

from . import _lib

NAME_CAPACITY = 128


class Channel:
    """One fl_queue handle with a reusable receive buffer. ``owner`` destroys the queue."""

    def __init__(self, handle: c_void_p, owner: bool):
        self.handle = handle
        self.owner = owner
        self._buffer = ctypes.create_string_buffer(64 * 1024)
        self._length = c_size_t()

    @classmethod
    def create(cls, capacity: int = 1 << 20, max_items: int = 0) -> "Channel":
        handle = c_void_p()
        _lib.check(_lib.lib.fl_queue_create(capacity, max_items, byref(handle)), "queue")
        return cls(handle, True)

    @classmethod
    def open(cls, name: str) -> "Channel":
        handle = c_void_p()
        _lib.check(_lib.lib.fl_queue_open(name.encode(), byref(handle)), "open " + name)
        return cls(handle, False)

    @property
    def name(self) -> str:
        buffer = ctypes.create_string_buffer(NAME_CAPACITY)
        _lib.check(_lib.lib.fl_queue_name(self.handle, buffer, NAME_CAPACITY), "queue name")
        return buffer.value.decode()

    def send_bytes(self, data: bytes, timeout: float = _lib.FOREVER) -> int:
        """Returns the status code (FL_OK, FL_ETIMEDOUT, FL_ESTATE when closed, ...)."""
        return _lib.lib.fl_queue_put(self.handle, data, len(data), timeout)

    def send(self, obj, timeout: float = _lib.FOREVER) -> int:
        return self.send_bytes(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL), timeout)

    def recv_bytes(self, timeout: float = _lib.FOREVER):
        """(status, bytes or None). Grows the buffer when a message does not fit."""
        while True:
            code = _lib.lib.fl_queue_get(self.handle, self._buffer, len(self._buffer), byref(self._length), timeout)
            if code == _lib.ERANGE:
                self._buffer = ctypes.create_string_buffer(max(self._length.value, 2 * len(self._buffer)))
                continue
            if code != _lib.OK:
                return code, None
            # string_at copies only the message (`.raw` would copy the whole buffer first).
            return code, ctypes.string_at(self._buffer, self._length.value)

    def close(self):
        if self.handle:
            _lib.lib.fl_queue_close(self.handle)

    def destroy(self):
        if self.handle:
            _lib.lib.fl_queue_destroy(self.handle)
            self.handle = None
