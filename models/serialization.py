"""State dicts to bytes and back, holding plain data only: no class is ever looked up on load.

A state dict (`EntityScorer.state_dict()`, an estimator's, the calibrator's) is a tree of dicts,
lists, tuples, strings, bytes, numbers, booleans, None and numpy arrays of numbers. `dumps` writes
it with pickle, each array as a tagged tuple `(tag, dtype, shape, bytes)`, so the stream holds
builtins only; `loads` reads it with an unpickler whose `find_class` refuses every name. Without a
class or function to call, a pickle can build containers and nothing else: a crafted file cannot
run code, which the pickled object graphs that checkpoints used to be could.

Why pickle and not JSON + `.npz`: floats (inf and NaN included) round-trip bit for bit, and int
keys, tuples and bytes keep their types, all in one stream with no second file to keep in step;
what made pickle unsafe is the class lookup, which is exactly what is refused here.

>>> import numpy as np
>>> state = {"version": 2, "mass": np.arange(4, dtype=np.uint16), "seen": [1.5, float("inf")], "none": None}
>>> back = loads(dumps(state))
>>> back["mass"], back["mass"].dtype, back["seen"], back["version"]
(array([0, 1, 2, 3], dtype=uint16), dtype('uint16'), [1.5, inf], 2)
>>> dumps({"model": object()})
Traceback (most recent call last):
...
TypeError: state['model']: object is not plain data (dicts, lists, tuples, str, bytes, numbers, bool, None, numeric arrays)
>>> import pickle
>>> loads(pickle.dumps({"sneaky": print}))
Traceback (most recent call last):
...
_pickle.UnpicklingError: not a plain state: it names builtins.print (state files hold plain data only)
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

__all__ = ["dumps", "loads"]

_ARRAY = "\x00ndarray"  # first item of the tuple an array is written as
_NUMERIC = frozenset("biuf")  # dtype kinds an array may have: bool, int, uint, float
_SCALARS = (str, int, float, bool, bytes, type(None))


def dumps(state: Any) -> bytes:
    """`state` as bytes; TypeError (naming where) on anything that is not plain data."""
    return pickle.dumps(_encode(state, "state"), protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> Any:
    """The state `dumps` wrote; pickle.UnpicklingError for a stream that names any class."""
    return _decode(_PlainUnpickler(io.BytesIO(data)).load())


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Every route to a callable (GLOBAL, STACK_GLOBAL, the extension registry) ends here.
        raise pickle.UnpicklingError(f"not a plain state: it names {module}.{name} (state files hold plain data only)")


def _encode(value: Any, path: str) -> Any:
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(f"{path}: key {key!r} is a {type(key).__name__}, not a str or int")
            out[key] = _encode(item, f"{path}[{key!r}]")
        return out
    if kind is list:
        return [_encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if kind is tuple:
        if value and value[0] == _ARRAY:
            raise TypeError(f"{path}: a tuple may not start with the array tag")
        return tuple(_encode(item, f"{path}[{i}]") for i, item in enumerate(value))
    if kind is np.ndarray:
        if value.dtype.kind not in _NUMERIC:
            raise TypeError(f"{path}: a {value.dtype} array is not plain data (numbers and booleans only)")
        return (_ARRAY, value.dtype.str, tuple(value.shape), np.ascontiguousarray(value).tobytes())
    if isinstance(value, (np.bool_, np.integer, np.float64)):
        return value.item()  # exact: the same value as a Python bool, int or float
    raise TypeError(f"{path}: {kind.__name__} is not plain data "
                    "(dicts, lists, tuples, str, bytes, numbers, bool, None, numeric arrays)")


def _decode(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {key: _decode(item) for key, item in value.items()}
    if kind is list:
        return [_decode(item) for item in value]
    if kind is tuple:
        if value and value[0] == _ARRAY:
            return _array(value)
        return tuple(_decode(item) for item in value)
    return value


def _array(value: tuple[Any, ...]) -> np.ndarray:
    if len(value) != 4:
        raise pickle.UnpicklingError("a malformed array in the state")
    _, dtype_text, shape, data = value
    dtype = np.dtype(dtype_text)
    if dtype.kind not in _NUMERIC:
        raise pickle.UnpicklingError(f"an array of {dtype} in the state (numbers and booleans only)")
    # frombuffer over bytes is read-only; the scorer writes into its arrays, so copy.
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
