"""Ray-style tasks, objects and actors on Forklift's Remote runtime.

``@forklift.remote`` functions return ObjectRefs at once; refs passed as arguments are
resolved by the runtime before the task runs (the task waits without holding a worker);
``get``, ``wait``, ``put`` and ``cancel`` work as in Ray. Values travel pickled through the
runtime's object store. Tasks run on the runtime's worker threads: Python code among them
shares the GIL, while sleeping, I/O and native code that releases the GIL run in parallel
(use ``Pool(backend="process")`` for CPU-bound Python).

``@forklift.remote`` on a native function (ctypes with argtypes/restype, or cffi) makes a
typed remote task: the runtime calls the C function by its signature without the GIL, its
result is the C value (no pickling), refs of such results can feed other native or Python
tasks, and ``isolate=True`` runs it in one of the runtime's worker processes
(``init(num_process_workers=N)``).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import io
import itertools
import os
import pickle
import struct
import threading
import traceback
from ctypes import byref, c_size_t, c_uint8, c_void_p

from . import _lib, _native
from ._results import attach_traceback, portable

_state_lock = threading.Lock()
_runtime = None
_calls: dict = {}  # call id -> what the C entry point runs (shared by every runtime)
_ids = itertools.count(1)
_named_entries: dict = {}  # qualified name -> its registered C entry point
_RETIRE = object()  # the method name of the last call of an actor whose handles are gone
_futures: dict = {}  # token -> (ObjectRef, concurrent.futures.Future) until the object resolves


def _forget_call(call_id, status):
    """fl_ref_on_ready for the ref of a call that had not started when the ref went: the call
    has ended by now (it ran and took its entry, or it never will), so its entry goes."""
    _calls.pop(call_id, None)


def _settle_future(token, status):
    """fl_ref_on_ready for ObjectRef.future(): the object resolved; the future gets its value
    or its exception."""
    ref, future = _futures.pop(token)
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(get(ref, timeout=0))
    except BaseException as error:
        future.set_exception(error)


# The C entry points of the two, alive as long as the module (the library may call them late).
_forget_call_entry = _lib.fl_ready_fn(_forget_call)
_settle_future_entry = _lib.fl_ready_fn(_settle_future)


class _Failure:
    """A task's exception, stored as the task's object so that get re-raises it."""

    def __init__(self, error: BaseException, text: str):
        self.error = error
        self.text = text

    def raise_it(self):
        raise attach_traceback(self.error, self.text)


class _Runtime:
    def __init__(self, num_workers=None, store_capacity=0, process_workers=0, spill_directory=None):
        options = _lib.RuntimeOptions()
        _lib.lib.fl_runtime_options_init(byref(options))
        if num_workers:
            options.workers = num_workers
        options.store_capacity = store_capacity
        options.process_workers = process_workers
        handle = c_void_p()
        _lib.check(_lib.lib.fl_runtime_create(byref(options), byref(handle)), "init")
        self.handle = handle
        if spill_directory is not None:
            code = _lib.lib.fl_runtime_set_spill_directory(handle, os.fsencode(spill_directory))
            if code < 0:
                failure = _lib.error(code, "init")
                _lib.lib.fl_runtime_shutdown(handle)
                raise failure
        self.actors: dict = {}
        self.task_trampoline = _lib.fl_remote_fn(self._run_task)
        self.method_trampoline = _lib.fl_remote_fn(self._run_method)
        self.init_trampoline = _lib.fl_actor_init_fn(self._construct)
        self.free_trampoline = _lib.fl_actor_free_fn(self._free_actor)

    @staticmethod
    def _resolve(template, blobs, count: int, first: int):
        """The call's arguments with each ObjectRef replaced by its value; a failed
        argument comes back as its _Failure."""
        packed, nested, positions = template
        if packed is None:  # no plain arguments, or ones that do not pickle (passed as such)
            args, kwargs = nested if nested else ((), {})
        else:
            outer = getattr(_unpickling, "nested", ())
            _unpickling.nested = nested
            try:
                args, kwargs = pickle.loads(packed)
            finally:
                _unpickling.nested = outer
        values = []
        for i in range(first, count):
            blob = blobs[i]
            decode = positions[i - first][2]
            if decode is not None:  # the C value of a native task
                values.append(decode(ctypes.string_at(blob.data, blob.len)))
                continue
            value = _loads(ctypes.string_at(blob.data, blob.len), _arg_contained(i)) if blob.len else None
            if isinstance(value, _Failure):
                return value
            values.append(value)
        if not positions:
            return args, kwargs
        args = list(args)
        kwargs = dict(kwargs)
        for (where, key, _), value in zip(positions, values):
            if where == "a":
                args[key] = value
            else:
                kwargs[key] = value
        return args, kwargs

    @staticmethod
    def _finish(ctx, value, returns: int = 1):
        """Stores `value` as result 0 (a failure as every result, so each ref re-raises it)."""
        for index in range(returns - 1, -1, -1):  # each result contains the refs inside it
            try:
                data = _Runtime._pickled_result(ctx, index, value)
            except Exception as error:
                data = pickle.dumps(_Failure(TypeError(f"the result could not be pickled: {error}"), ""))
            _lib.lib.fl_task_return_at(ctx, index, data, len(data))
        return 0

    @staticmethod
    def _pickled_result(ctx, index: int, value) -> bytes:
        """`value` pickled for result `index`, which then contains the refs inside it."""
        data, refs = _dumps(value)
        at = c_size_t()
        for position, ref in enumerate(refs):
            code = _lib.lib.fl_task_contain(ctx, index, ref._handle, byref(at))
            if code != _lib.OK:
                raise _lib.error(code, "the result's ObjectRef")
            if at.value != position:
                raise RuntimeError(f"forklift: the result's ref {position} was contained at index {at.value}")
        return data

    @staticmethod
    def _call(function, resolved, retries: int):
        if isinstance(resolved, _Failure):
            return resolved
        args, kwargs = resolved
        while True:
            try:
                return function(*args, **kwargs)
            except BaseException as error:
                if retries > 0:
                    retries -= 1
                    continue
                return _Failure(_portable(error), traceback.format_exc())

    @staticmethod
    def _run_task(user, blobs, count, ctx):
        try:
            function, template, retries, returns = _calls.pop(user)
            value = _Runtime._call(function, _Runtime._resolve(template, blobs, count, 0), retries)
            if returns == 1 or isinstance(value, _Failure):
                return _Runtime._finish(ctx, value, returns)
            try:
                values = tuple(value)
            except TypeError:
                values = ()
            if len(values) != returns:
                return _Runtime._finish(ctx, _Failure(ValueError(
                    f"the task has num_returns={returns} but returned {type(value).__name__} "
                    f"{'of ' + str(len(values)) + ' items' if values else 'that is not a sequence'}"), ""), returns)
            for index in range(returns - 1, -1, -1):
                try:
                    data = _Runtime._pickled_result(ctx, index, values[index])
                except Exception as error:
                    data = pickle.dumps(_Failure(TypeError(f"result {index} could not be pickled: {error}"), ""))
                _lib.lib.fl_task_return_at(ctx, index, data, len(data))
            return 0
        except BaseException as error:  # a fault of the binding itself: fail the task, say why
            return _lib.lib.fl_task_fail(ctx, 1, f"forklift: {error!r}".encode())

    def _run_method(self, state, blobs, count, ctx):
        try:
            call_id = struct.unpack("q", ctypes.string_at(blobs[0].data, 8))[0]
            name, template = _calls.pop(call_id)
            if name is _RETIRE:  # see ActorHandle.__del__: `template` is the actor's handle
                _lib.lib.fl_actor_kill(template)
                return 0
            instance = self.actors[state]
            if isinstance(instance, _Failure):
                return _Runtime._finish(ctx, instance)
            method = getattr(instance, name)
            return _Runtime._finish(ctx, _Runtime._call(method, _Runtime._resolve(template, blobs, count, 1), 0))
        except BaseException as error:
            return _lib.lib.fl_task_fail(ctx, 1, f"forklift: {error!r}".encode())

    def _construct(self, user, blobs, count, state_out):
        cls, template = _calls.pop(user)
        try:
            resolved = _Runtime._resolve(template, blobs, count, 0)
        except BaseException as error:  # an argument that does not unpickle
            resolved = _Failure(_portable(error), traceback.format_exc())
        made = _Runtime._call(cls, resolved, 0)
        self.actors[user] = made  # a failed constructor is kept: its calls raise its error
        state_out[0] = user
        return 0

    def _free_actor(self, user, state):
        self.actors.pop(state, None)

    def shutdown(self):
        _lib.lib.fl_runtime_shutdown(self.handle)


def init(num_cpus=None, num_workers=None, object_store_memory=None, ignore_reinit_error=False,
         num_process_workers=0, object_spilling_directory=None):
    """Starts the runtime (ray.init): ``num_workers`` threads (default: the CPU count), an
    object store of ``object_store_memory`` bytes (default: no limit), and
    ``num_process_workers`` worker processes for native functions made remote with
    ``isolate=True`` (forked now: native code loaded later is not in them). With
    ``object_spilling_directory``, objects that do not fit the store go to files there
    (read back through their mappings) instead of failing."""
    global _runtime
    with _state_lock:
        if _runtime is not None:
            if ignore_reinit_error:
                return
            raise RuntimeError("forklift.init() was already called; call shutdown() first")
        _runtime = _Runtime(num_workers or num_cpus, object_store_memory or 0, num_process_workers,
                            object_spilling_directory)


def is_initialized() -> bool:
    return _runtime is not None


def shutdown():
    """Ends the runtime: tasks not started resolve as cancelled; refs stay readable."""
    global _runtime
    with _state_lock:
        runtime, _runtime = _runtime, None
    if runtime is not None:
        runtime.shutdown()


def _current() -> _Runtime:
    if _runtime is None:
        init(ignore_reinit_error=True)
    return _runtime


def _resolved(handle) -> bool:
    """Whether the object is resolved: a poll that runs no task and sets no error message
    (fl_wait for none of one), so it is safe in __del__."""
    refs = (c_void_p * 1)(handle)
    flags = (ctypes.c_uint8 * 1)()
    _lib.lib.fl_wait(refs, 1, 0, 0.0, flags)
    return flags[0] != 0


class ObjectRef:
    """A reference to an object of the store: a task's future result or a put value."""

    __slots__ = ("_handle", "_decode", "_call", "__weakref__")

    def __init__(self, handle: c_void_p, decode=None, call=None):
        self._handle = handle
        # A native task's result holds C bytes: this turns them into the Python value.
        self._decode = decode
        # The id of the call producing it (its entry in `_calls`), for cancel.
        self._call = call

    def __del__(self):
        if self._handle:
            # A call that never starts (cancelled, its argument failed, the runtime shut down)
            # never takes its entry: it goes once the result is there, now or later.
            if self._call is not None and self._call in _calls:
                if _resolved(self._handle):
                    _calls.pop(self._call, None)
                else:
                    _lib.lib.fl_ref_on_ready(self._handle, _forget_call_entry, self._call)
            _lib.lib.fl_ref_release(self._handle)
            self._handle = None

    def future(self) -> concurrent.futures.Future:
        """A concurrent.futures.Future that gets the object's value, or its task's exception,
        once the object resolves (ray's ObjectRef.future()); no thread waits for it meanwhile."""
        future = concurrent.futures.Future()
        token = next(_ids)
        _futures[token] = (self, future)
        code = _lib.lib.fl_ref_on_ready(self._handle, _settle_future_entry, token)
        if code != _lib.OK:
            _futures.pop(token, None)
            raise _lib.error(code, "future")
        return future

    def __await__(self):
        """``await ref`` in a coroutine: its value, without blocking the event loop."""
        import asyncio
        return asyncio.wrap_future(self.future()).__await__()

    def __repr__(self):
        return f"ObjectRef({self._handle.value:#x})"

    def __reduce__(self):
        refs = getattr(_containing, "refs", None)
        if refs is None:
            raise TypeError("an ObjectRef can be pickled only inside a value that forklift stores "
                            "(put, a task's result or argument)")
        refs.append(self)
        if self._decode is None:
            return _contained_ref, (len(refs) - 1,)
        # A native task's result holds C bytes: the ref made on unpickling decodes them too.
        return _contained_ref, (len(refs) - 1, _decoder_token(self._decode))


class _ArgumentPickler(pickle.Pickler):
    """Pickles a call's plain arguments; an ObjectRef or an ActorHandle inside one (in a list,
    say) travels as itself, as in Ray: the task gets the ref, not its value, and the same
    actor (a copy of a handle would end the actor when collected)."""

    def __init__(self, file, nested: list):
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self.nested = nested

    def reducer_override(self, obj):
        if type(obj) is ObjectRef or type(obj) is ActorHandle:
            self.nested.append(obj)
            return _nested_ref, (len(self.nested) - 1,)
        return NotImplemented


_unpickling = threading.local()  # the nested refs of the call whose arguments are unpickled


def _nested_ref(index: int) -> "ObjectRef":
    return _unpickling.nested[index]


# An ObjectRef inside a value that put() stores or a task returns is pickled as its index
# among the refs the value's object contains (fl_ref_contain, fl_task_contain): the object
# keeps those alive, as a Ray object keeps the refs inside it, and unpickling the value makes
# a new ref to each (fl_ref_contained from outside, fl_arg_contained in a task).
_containing = threading.local()  # .refs: the ObjectRefs met while pickling such a value


def _dumps(value):
    """`value` pickled, and the ObjectRefs inside it in the order their indices name them."""
    outer = getattr(_containing, "refs", None)
    _containing.refs = []
    try:
        data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        return data, _containing.refs
    finally:
        _containing.refs = outer


def _loads(data, contained):
    """Unpickles `data`; `contained(i)` makes the handle of the i-th ref its object contains."""
    outer = getattr(_unpickling, "contained", None)
    _unpickling.contained = contained
    try:
        return pickle.loads(data)
    finally:
        _unpickling.contained = outer


_decoders: dict = {}  # token -> the decode of native results whose refs were put inside values
_decoder_tokens: dict = {}  # id(decode) -> token


def _decoder_token(decode) -> int:
    with _state_lock:
        token = _decoder_tokens.get(id(decode))
        if token is None:
            token = _decoder_tokens[id(decode)] = next(_ids)
            _decoders[token] = decode  # kept: the id stays that function's
        return token


def _contained_ref(index: int, decoder: int = 0) -> "ObjectRef":
    contained = getattr(_unpickling, "contained", None)
    if contained is None:
        raise pickle.UnpicklingError("an ObjectRef inside a value can only be unpickled by forklift.get or a task")
    handle = c_void_p()
    code = contained(index, handle)
    if code != _lib.OK:
        raise _lib.error(code, "get")
    return ObjectRef(handle, _decoders[decoder] if decoder else None)


def _portable(error: BaseException) -> BaseException:
    """`portable(error)` for an exception that may hold ObjectRefs: its round trip rebuilds
    them as new refs to the same objects, as unpickling from the store would."""
    try:
        data, refs = _dumps(error)
    except Exception:
        return portable(error)
    if not refs:
        return portable(error)
    try:
        _loads(data, lambda index, out: _lib.lib.fl_ref_clone(refs[index]._handle, byref(out)))
        return error
    except Exception:
        return portable(error)


def _ref_contained(ref_handle):
    """The `contained` of _loads for the object of a ref."""
    return lambda index, out: _lib.lib.fl_ref_contained(ref_handle, index, byref(out))


def _arg_contained(arg: int):
    """The `contained` of _loads for argument `arg` of the running task."""
    return lambda index, out: _lib.lib.fl_arg_contained(arg, index, byref(out))


def _split(args, kwargs):
    """Refs given as arguments become runtime arguments (dataflow: the task waits for them
    and gets their values); the other arguments are pickled now, so that the task sees them
    as they were at the call (Ray's by-value arguments), whatever the caller does to them
    afterwards. Arguments that do not pickle (a lambda, a lock) are passed as themselves:
    the runtime's tasks run in this process. Returns the call's template and its refs."""
    positions, refs = [], []
    plain_args = list(args)
    plain_kwargs = dict(kwargs)
    for i, value in enumerate(args):
        if isinstance(value, ObjectRef):
            positions.append(("a", i, value._decode))
            refs.append(value)
            plain_args[i] = None
    for key, value in kwargs.items():
        if isinstance(value, ObjectRef):
            positions.append(("k", key, value._decode))
            refs.append(value)
            plain_kwargs[key] = None
    if not plain_args and not plain_kwargs:
        return (None, (), positions), refs
    nested: list = []
    buffer = io.BytesIO()
    try:
        _ArgumentPickler(buffer, nested).dump((tuple(plain_args), plain_kwargs))
    except Exception:
        return (None, (tuple(plain_args), plain_kwargs), positions), refs
    return (buffer.getvalue(), tuple(nested), positions), refs


def _arg_array(refs, leading: bytes | None = None):
    count = len(refs) + (1 if leading is not None else 0)
    if count == 0:
        return None, 0
    array = (_lib.Arg * max(count, 1))()
    offset = 0
    if leading is not None:
        array[0].data = ctypes.cast(ctypes.c_char_p(leading), c_void_p)
        array[0].len = len(leading)
        offset = 1
    for i, ref in enumerate(refs):
        array[offset + i].ref = ref._handle
    return array, count


def _checked_options(options, allowed, what: str) -> dict:
    """A copy of ``options``; ValueError naming any key not in ``allowed``."""
    options = dict(options or {})
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"unsupported {what}: {', '.join(sorted(unknown))}")
    return options


_TASK_OPTIONS = {"max_retries", "retry_exceptions", "num_returns", "num_cpus", "name"}


class RemoteFunction:
    """A function made remote by ``@forklift.remote``: ``f.remote(*args)`` returns an ObjectRef."""

    def __init__(self, function, options=None):
        self._function = function
        self._options = _checked_options(options, _TASK_OPTIONS, "task options")
        self._returns = self._options.get("num_returns", 1)
        if not isinstance(self._returns, int) or not 1 <= self._returns <= 1024:
            raise ValueError("num_returns must be an int from 1 to 1024")
        self.__name__ = getattr(function, "__name__", "remote_function")
        self.__doc__ = getattr(function, "__doc__", None)
        self._trampoline = None
        retry = self._options.get("retry_exceptions", False)
        self._retries = self._options.get("max_retries", 3) if retry else 0
        self._c_options = None
        cpus = self._options.get("num_cpus", 0)
        if cpus:
            self._c_options = _lib.RemoteOptions()
            _lib.lib.fl_remote_options_init(byref(self._c_options))
            self._c_options.num_cpus = int(cpus)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"remote function {self.__name__} cannot be called directly; use {self.__name__}.remote()")

    def _register(self, runtime):
        """A C entry point of this function's own, registered (process-wide) under its
        qualified name so that traces show it; the shared one if the name is taken."""
        name = f"{getattr(self._function, '__module__', '?')}.{getattr(self._function, '__qualname__', self.__name__)}"
        trampoline = _named_entries.get(name)
        if trampoline is None:
            trampoline = _lib.fl_remote_fn(_Runtime._run_task)
            if _lib.lib.fl_function_register(name.encode()[:255], trampoline, None) != _lib.OK:
                return runtime.task_trampoline
            _named_entries[name] = trampoline  # kept alive: the registration stays
        return trampoline

    def options(self, **options):
        """A copy with other options (num_returns, num_cpus, max_retries, retry_exceptions)."""
        return RemoteFunction(self._function, {**self._options, **options})

    def remote(self, *args, **kwargs) -> ObjectRef:
        runtime = _current()
        template, refs = _split(args, kwargs)
        call_id = next(_ids)
        _calls[call_id] = (self._function, template, self._retries, self._returns)
        array, count = _arg_array(refs)
        trampoline = self._trampoline
        if trampoline is None:
            trampoline = self._trampoline = self._register(runtime)
        if self._returns == 1:
            handle = c_void_p()
            code = _lib.lib.fl_remote(runtime.handle, trampoline, call_id, array, count, self._c_options,
                                      byref(handle))
            handles = [handle]
        else:
            out = (c_void_p * self._returns)()
            code = _lib.lib.fl_remote_multi(runtime.handle, trampoline, call_id, array, count, self._c_options,
                                            self._returns, out)
            handles = [c_void_p(value) for value in out]
        if code != _lib.OK:
            _calls.pop(call_id, None)
            raise _lib.error(code, self.__name__ + ".remote")
        if self._returns == 1:
            return ObjectRef(handles[0], call=call_id)
        return [ObjectRef(handle, call=call_id) for handle in handles]


class ActorMethod:
    def __init__(self, actor: "ActorHandle", name: str):
        self._actor = actor
        self._name = name

    def remote(self, *args, **kwargs) -> ObjectRef:
        actor = self._actor
        runtime = actor._runtime
        template, refs = _split(args, kwargs)
        call_id = next(_ids)
        _calls[call_id] = (self._name, template)
        leading = struct.pack("q", call_id)
        array, count = _arg_array(refs, leading)
        handle = c_void_p()
        code = _lib.lib.fl_actor_call(actor._handle, runtime.method_trampoline, array, count, byref(handle))
        if code != _lib.OK:
            _calls.pop(call_id, None)
            raise _lib.error(code, f"{actor._class_name}.{self._name}.remote")
        return ObjectRef(handle, call=call_id)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor method {self._name} cannot be called directly; use .{self._name}.remote()")


class ActorHandle:
    """A live actor: ``handle.method.remote(*args)`` returns an ObjectRef; calls run one at a
    time in the order they were made (``max_concurrency`` at once if asked)."""

    def __init__(self, runtime, handle, class_name, methods):
        self._runtime = runtime
        self._handle = handle
        self._class_name = class_name
        self._methods = methods
        self._killed = False

    def __del__(self):
        # The last handle is gone (Ray's automatic termination): a last call, queued behind
        # the calls made so far, kills the actor once they have run, and its state goes.
        if self._killed or not getattr(self, "_handle", None):
            return
        if _runtime is not self._runtime:
            # Its runtime was shut down, which ended the actor (and dropped its instance):
            # only the handle is left to free.
            try:
                _lib.lib.fl_actor_kill(self._handle)
            except Exception:  # interpreter shutdown
                pass
            return
        try:
            call_id = next(_ids)
            _calls[call_id] = (_RETIRE, self._handle)
            leading = struct.pack("q", call_id)
            array, count = _arg_array([], leading)
            ref = c_void_p()
            if _lib.lib.fl_actor_call(self._handle, self._runtime.method_trampoline, array, count, byref(ref)) == 0:
                _lib.lib.fl_ref_release(ref)
            else:
                _calls.pop(call_id, None)
        except Exception:  # interpreter shutdown: the runtime's shutdown ends the actor
            pass

    def __getattr__(self, name):
        if name.startswith("_") or name not in self._methods:
            raise AttributeError(f"actor {self._class_name} has no method {name!r}")
        return ActorMethod(self, name)

    def __repr__(self):
        return f"Actor({self._class_name}, {self._handle.value:#x})"


class ActorClass:
    """A class made remote by ``@forklift.remote``: ``Cls.remote(*args)`` starts an actor."""

    def __init__(self, cls, options=None):
        self._cls = cls
        self._options = _checked_options(options, {"max_concurrency", "name"}, "actor options")
        self.__name__ = cls.__name__

    def options(self, **options):
        return ActorClass(self._cls, {**self._options, **options})

    def remote(self, *args, **kwargs) -> ActorHandle:
        runtime = _current()
        template, refs = _split(args, kwargs)
        call_id = next(_ids)
        _calls[call_id] = (self._cls, template)
        array, count = _arg_array(refs)
        options = _lib.ActorOptions()
        _lib.lib.fl_actor_options_init(byref(options))
        options.max_concurrency = self._options.get("max_concurrency", 1)
        handle = c_void_p()
        code = _lib.lib.fl_actor_create(runtime.handle, runtime.init_trampoline, runtime.free_trampoline, call_id,
                                        array, count, byref(options), byref(handle))
        if code != _lib.OK:
            _calls.pop(call_id, None)
            raise _lib.error(code, self.__name__ + ".remote")
        methods = {name for name in dir(self._cls) if callable(getattr(self._cls, name)) and not name.startswith("_")}
        return ActorHandle(runtime, handle, self.__name__, methods)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor class {self.__name__} cannot be instantiated directly; use {self.__name__}.remote()")


_NATIVE_OPTIONS = {"max_retries", "retry_exceptions", "num_cpus", "isolate"}


class NativeRemoteFunction:
    """A native function (ctypes or cffi) made remote: ``f.remote(*args)`` submits a typed
    remote task (fl_remote_typed): the C function runs without the GIL, on a worker thread or
    (``isolate=True``) in a worker process; its ref holds the C return value."""

    def __init__(self, function, options=None):
        self._options = _checked_options(options, _NATIVE_OPTIONS, "options for a native remote function")
        self._native = _native.NativeFunction(function)
        self._function = function
        self.__name__ = getattr(function, "__name__", "native_function")
        self._c_options = _lib.RemoteOptions()
        _lib.lib.fl_remote_options_init(byref(self._c_options))
        self._c_options.num_cpus = int(self._options.get("num_cpus", 0))
        self._c_options.isolate = 1 if self._options.get("isolate") else 0
        self._c_options.max_retries = int(self._options.get("max_retries", 0))
        self._c_options.retry_on_error = 1 if self._options.get("retry_exceptions") else 0
        self._decode = self._decoder()

    def _decoder(self):
        native = self._native
        if native.Result is None:
            return lambda data: None
        result_type = native.Result

        def decode(data):
            return native.convert(result_type.from_buffer_copy(data))
        return decode

    def __call__(self, *args, **kwargs):
        raise TypeError(f"remote function {self.__name__} cannot be called directly; use {self.__name__}.remote()")

    def options(self, **options):
        """A copy with other options (num_cpus, isolate, max_retries, retry_exceptions)."""
        return NativeRemoteFunction(self._function, {**self._options, **options})

    def remote(self, *args) -> ObjectRef:
        runtime = _current()
        native = self._native
        if len(args) != len(native.argtypes):
            raise TypeError(f"{self.__name__} takes {len(native.argtypes)} arguments ({len(args)} given)")
        array = (_lib.Arg * max(len(args), 1))()
        keep = []
        for i, value in enumerate(args):
            if isinstance(value, ObjectRef):
                if value._decode is None:
                    raise TypeError(f"argument {i} of {self.__name__}: a ref passed to a native function must hold "
                                    "a native function's result (put() and Python tasks hold pickled values)")
                array[i].ref = value._handle
                continue
            slot = _native._slot_type(native.argtypes[i])
            if _native._is_pointer(native.argtypes[i]):
                cell = slot(_native.address_of(value, keep))
            else:
                cell = value if isinstance(value, slot) else slot(value)
            keep.append(cell)
            array[i].data = ctypes.cast(ctypes.pointer(cell), c_void_p)
            array[i].len = ctypes.sizeof(cell)
        handle = c_void_p()
        code = _lib.lib.fl_remote_typed(runtime.handle, native.signature, native.address, array, len(args),
                                        byref(self._c_options), byref(handle))
        if code != _lib.OK:
            raise _lib.error(code, self.__name__ + ".remote")
        return ObjectRef(handle, self._decode)


def remote(*args, **options):
    """Decorator: ``@remote`` or ``@remote(max_retries=..., max_concurrency=...)`` on a
    function (remote task) or a class (actor)."""
    def wrap(target):
        if isinstance(target, type):
            return ActorClass(target, options)
        if _native.is_native(target):
            return NativeRemoteFunction(target, options)
        if options.get("isolate"):
            raise ValueError("isolate=True is for native functions (ctypes, cffi): worker processes run "
                             "C code only; use Pool(backend=\"process\") to isolate Python code")
        return RemoteFunction(target, options)
    if len(args) == 1 and not options and callable(args[0]):
        return wrap(args[0])
    if args:
        raise TypeError("@remote takes keyword options only")
    return wrap


def put(value) -> ObjectRef:
    """Stores a copy of ``value`` in the object store (pickled) and returns its ref."""
    runtime = _current()
    data, refs = _dumps(value)
    handle = c_void_p()
    if not refs:
        _lib.check(_lib.lib.fl_put(runtime.handle, data, len(data), byref(handle)), "put")
        return ObjectRef(handle)
    # A value with refs inside: a buffer that contains their objects, then sealed.
    buffer = c_void_p()
    _lib.check(_lib.lib.fl_create(runtime.handle, len(data), byref(buffer), byref(handle)), "put")
    made = ObjectRef(handle)
    try:
        ctypes.memmove(buffer, data, len(data))
        for ref in refs:
            _lib.check(_lib.lib.fl_ref_contain(handle, ref._handle, None), "put")
        _lib.check(_lib.lib.fl_seal(handle), "put")
    except BaseException:
        made.__del__()  # the buffer goes now, not when the traceback does
        raise
    return made


def _get_one(ref: ObjectRef, timeout: float):
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"get() expects ObjectRefs, got {type(ref).__name__}")
    data, length = c_void_p(), c_size_t()
    code = _lib.lib.fl_get(ref._handle, timeout, byref(data), byref(length))
    if code != _lib.OK:
        if code == _lib.ETIMEDOUT:
            raise GetTimeoutError("the object is not ready yet", code)
        raise _lib.error(code, "get")
    if ref._decode is not None:
        return ref._decode(ctypes.string_at(data, length.value))
    value = _loads(ctypes.string_at(data, length.value), _ref_contained(ref._handle)) if length.value else None
    if isinstance(value, _Failure):
        value.raise_it()
    return value


class GetTimeoutError(_lib.TimeoutError):
    """get() ran out of time (Ray's GetTimeoutError)."""


def get(refs, *, timeout=None):
    """The value of a ref, or the list of values of a list of refs (ray.get); re-raises a
    task's exception; GetTimeoutError if not ready within ``timeout`` seconds overall."""
    import time
    deadline = None if timeout is None else time.monotonic() + timeout

    def remaining():
        return _lib.FOREVER if deadline is None else max(0.0, deadline - time.monotonic())
    if isinstance(refs, ObjectRef):
        return _get_one(refs, remaining())
    return [_get_one(ref, remaining()) for ref in refs]


def wait(refs, *, num_returns=1, timeout=None):
    """(ready, not_ready): waits until ``num_returns`` refs are resolved or ``timeout``
    passes (ray.wait); both lists keep the input order."""
    refs = list(refs)
    if not all(isinstance(ref, ObjectRef) for ref in refs):
        raise TypeError("wait() expects a list of ObjectRefs")
    if len({id(ref) for ref in refs}) != len(refs):
        raise ValueError("wait() expects a list of unique ObjectRefs (as ray.wait)")
    if num_returns > len(refs):
        raise ValueError("num_returns cannot be larger than the number of refs")
    if not refs:
        return [], []
    handles = (c_void_p * len(refs))(*[ref._handle.value for ref in refs])
    flags = (c_uint8 * len(refs))()
    code = _lib.lib.fl_wait(handles, len(refs), num_returns, _lib.FOREVER if timeout is None else timeout, flags)
    if code not in (_lib.OK, _lib.ETIMEDOUT):
        raise _lib.error(code, "wait")
    ready = [ref for ref, flag in zip(refs, flags) if flag]
    if len(ready) > num_returns:
        ready = ready[:num_returns]
    chosen = {id(ref) for ref in ready}
    return ready, [ref for ref in refs if id(ref) not in chosen]


def cancel(ref: ObjectRef, *, force: bool = False, recursive: bool = True):
    """Cancels the task behind ``ref`` (ray.cancel): not started, it never runs; get raises
    CancelledError. A running task finishes on its own; with ``force``, a native task running
    in a worker process (``isolate=True``) has that process killed. With ``recursive`` (the
    default), the tasks it submitted while running and that have not finished are cancelled
    too, and so are those it submits afterwards."""
    flags = (_lib.CANCEL_FORCE if force else 0) | (_lib.CANCEL_RECURSIVE if recursive else 0)
    _lib.check(_lib.lib.fl_cancel_with(ref._handle, flags), "cancel")
    # What the call would have run goes now (a call that has started took it already; one
    # that starts meanwhile finds nothing and fails, its result cancelled already).
    if ref._call is not None:
        _calls.pop(ref._call, None)


def kill(actor: ActorHandle):
    """Ends an actor: calls not started are cancelled. (An actor whose last handle goes
    away ends by itself, once the calls made before have run.)"""
    _lib.check(_lib.lib.fl_actor_kill(actor._handle), "kill")
    actor._killed = True


def timeline(filename=None):
    """The task events recorded since ``start_timeline()`` (ray.timeline): written to
    ``filename`` as Chrome-trace JSON (open it in Perfetto), or returned as a list of
    event dicts when no filename is given."""
    runtime = _current()
    if filename is not None:
        _lib.check(_lib.lib.fl_runtime_trace_write(runtime.handle, str(filename).encode()), "timeline")
        return None
    import json
    import os
    import tempfile
    handle, path = tempfile.mkstemp(suffix=".json")
    os.close(handle)
    try:
        _lib.check(_lib.lib.fl_runtime_trace_write(runtime.handle, path.encode()), "timeline")
        with open(path) as file:
            return json.load(file)["traceEvents"]
    finally:
        os.unlink(path)


def start_timeline():
    """Starts recording task events (clearing earlier ones) for ``timeline()``."""
    _lib.check(_lib.lib.fl_runtime_trace_start(_current().handle), "start_timeline")


def stop_timeline():
    """Stops recording task events; ``timeline()`` still returns those recorded."""
    _lib.check(_lib.lib.fl_runtime_trace_stop(_current().handle), "stop_timeline")


def stats() -> dict:
    """The runtime's counters: tasks submitted/running/finished/failed, objects and bytes."""
    runtime = _current()
    counters = _lib.RuntimeStats()
    _lib.check(_lib.lib.fl_runtime_get_stats(runtime.handle, byref(counters)), "stats")
    return {name: getattr(counters, name) for name, _ in _lib.RuntimeStats._fields_}
