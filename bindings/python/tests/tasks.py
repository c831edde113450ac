"""Task functions for the tests: module level, so worker processes find them by name."""

import os
import signal
import time

state = {}


def square(x):
    return x * x


def add(a, b, c=0):
    return a + b + c


def fail(message):
    raise ValueError(message)


def remember(key, value):
    state[key] = value


def recall(key):
    return state.get(key)


def pid(_=None):
    return os.getpid()


def sleep_then(value, seconds):
    time.sleep(seconds)
    return value


def die(how="kill"):
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "exit":
        os._exit(7)
    if how == "abort":
        os.abort()


def big(n):
    return bytes(range(256)) * (n // 256)


def unpicklable_result():
    return lambda: None


def sleep_pair(pair):
    value, seconds = pair
    time.sleep(seconds)
    return value


class SayWhenError(ValueError):
    pass


def exception_throwing_generator(total, when):
    for i in range(total):
        if i == when:
            raise SayWhenError("Somebody said when")
        yield i


def identity(x):
    return x


class CustomError(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


def raise_custom(code):
    raise CustomError(code)


class TwoArgError(Exception):
    """Pickles, but does not unpickle: its __init__ takes two arguments, its args hold one."""

    def __init__(self, a, b):
        super().__init__(a)
        self.b = b


def raise_two_arg(a, b):
    raise TwoArgError(a, b)


def returns_stranger():
    """Returns an instance of a class that exists in this process's module only: it pickles
    here and does not unpickle in a process that lacks it (the pool's)."""
    import sys
    module = sys.modules[__name__]
    cls = type("OnlyInTheWorker", (), {"__module__": __name__})
    setattr(module, "OnlyInTheWorker", cls)
    return cls()
