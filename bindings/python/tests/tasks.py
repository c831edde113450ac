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
