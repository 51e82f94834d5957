"""Reading a feature pickle without trusting it: no code runs, no allocation past the budget.

:func:`read_pickle` unpickles with an exact allowlist of globals (NumPy arrays, dtypes and
scalars of NumPy 1 and 2, plain containers, ``_codecs.encode`` for protocol-2 bytes); every
other global is refused before any module is looked up. Each allowed callable is wrapped so
that a file can only rebuild data the way ``pickle.dumps`` writes it:

* ``numpy.ndarray`` is rebuilt through ``_reconstruct(ndarray, (0,), b'b')`` and its state
  (``BUILD``), which is checked first: the shape, a plain dtype, raw bytes of exactly
  ``size * itemsize`` (an object array: a list of exactly ``size`` items); ``ndarray(...)``
  called directly needs a buffer and is counted at ``size * itemsize``, whatever its strides;
* ``_frombuffer`` views (protocol 5) are counted at their size, however many share a buffer;
* ``bytes(n)`` / ``bytearray(n)`` are counted before they are allocated; builtins never take
  an array (``list(array)`` would materialise it);
* ``APPEND``/``SETITEM``/``ADDITEMS``/``BUILD`` only fill the containers that pickle fills
  with them (lists, dicts, sets, arrays, dtypes); ``defaultdict`` is read as a plain dict;
* no read asks the file for more bytes than it has left.

After loading, every array and container is counted at its *materialised* size: a list
referenced 100,000 times counts 100,000 times, as it would once turned into an array. The
total goes to the :class:`~composer.data.budget.Budget` before a reader builds anything from
it. A container that holds itself, or nesting deeper than :data:`MAX_DEPTH`, is refused.
:func:`array_bytes` bounds what ``np.asarray`` makes of one value (strings widen a whole
list), and :func:`as_array` counts that before converting.

The pure-Python unpickler (``pickle._Unpickler``) is used so that every opcode that fills a
container can be checked; it reads a MOSEI-sized file a few times slower than the C one.
"""

from __future__ import annotations

import collections
import math
import pickle
import re
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np

from composer.data.budget import Budget
from composer.errors import DataError

__all__ = ["read_pickle", "array_bytes", "as_array", "MAX_DEPTH"]

MAX_DEPTH = 64
_SIMPLE_DTYPE = re.compile(r"[<>|=]?(b1|\?|[iu][1248]|f[248]|f16|c(8|16|32)|O8?|[USV][1-9][0-9]{0,9})")


def _refuse(what: str) -> DataError:
    return DataError(f"the pickle {what}, which a feature file does not need; refusing to load it")


def _numpy_core():
    """NumPy's core module (``numpy._core`` since NumPy 2, ``numpy.core`` before), already imported."""
    return getattr(np, "_core", None) or np.core


# -- the allowed globals, wrapped ------------------------------------------------------------
class _ArrayClass:
    """What the pickle gets for ``numpy.ndarray``: the argument ``_reconstruct`` expects, and a
    checked constructor when called (a view of a buffer, counted at ``size * itemsize``)."""

    def __init__(self, unpickler: "_Unpickler"):
        self.unpickler = unpickler

    def __call__(self, shape, dtype="f8", buffer=None, offset=0, strides=None, order=None):
        dtype = _dtype(dtype)
        shape = _shape(shape)
        if buffer is None or not isinstance(buffer, (bytes, bytearray)) or dtype.hasobject:
            raise _refuse("calls numpy.ndarray without a byte buffer, or for objects")
        self.unpickler.budget.check(_count(shape) * dtype.itemsize, f"an array of shape {shape} ({dtype})")
        _check_text(bytes(buffer), dtype)
        return np.ndarray(shape, dtype, buffer, offset, strides, order)


def _shape(value: Any) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, tuple) or len(value) > 32 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in value):
        raise _refuse(f"gives an array the shape {str(value)[:80]}")
    return tuple(int(s) for s in value)


def _count(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _dtype(value: Any) -> np.dtype:
    """A dtype argument: a dtype the pickle built, or a plain type string."""
    if isinstance(value, np.dtype):
        return value
    if isinstance(value, str) and _SIMPLE_DTYPE.fullmatch(value):
        return np.dtype(value)
    raise _refuse(f"asks for the dtype {str(value)[:80]!r}")


def _make_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    """``numpy.dtype(spec, align, copy)`` for plain type strings only, always a fresh copy (a
    later ``BUILD`` must never change NumPy's shared dtypes)."""
    if not isinstance(spec, str) or not _SIMPLE_DTYPE.fullmatch(spec):
        raise _refuse(f"asks for the dtype {str(spec)[:80]!r}")
    return np.dtype(spec, bool(align), True)


def _dtype_state_ok(dtype: np.dtype, state: Any) -> bool:
    """Whether ``state`` is what NumPy pickles for ``dtype``: a byte order and nothing else new."""
    if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
        return False
    _, order, sub, names, fields, elsize, alignment, flags = state[:8]
    return (
        order == "|" if dtype.byteorder == "|" else order in ("<", ">", "=")
        and sub is None and names is None and fields is None
        and (len(state) == 8 or state[8] is None)
        and elsize in (-1, dtype.itemsize)
        and alignment in (-1, dtype.alignment)
        and flags == dtype.flags
    )


def _array_state_ok(state: Any) -> bool:
    """Whether ``state`` is ``([version,] shape, dtype, fortran, data)`` with data of exactly the
    array's size: raw bytes, or a list of ``size`` items for an object array."""
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        return False
    if len(state) == 5 and state[0] != 1:
        return False
    shape, dtype, fortran, data = state[-4:]
    if not isinstance(dtype, np.dtype) or not isinstance(fortran, (bool, int)):
        return False
    shape = _shape(shape)
    if dtype.hasobject:
        return dtype == np.dtype("O") and isinstance(data, list) and len(data) == _count(shape)
    if isinstance(data, str):
        size = len(data)
    elif isinstance(data, (bytes, bytearray)):
        size = len(data)
    else:
        return False
    return size == _count(shape) * dtype.itemsize


def _check_text(data: bytes, dtype: np.dtype) -> None:
    """Unicode arrays hold code points NumPy can turn into Python strings (no surrogates, none
    above U+10FFFF): NumPy raises SystemError on others."""
    if dtype.kind != "U" or not data:
        return
    order = "<" if dtype.byteorder in ("=", "|") and np.little_endian or dtype.byteorder == "<" else ">"
    codes = np.frombuffer(data, dtype=f"{order}u4")
    if ((codes > 0x10FFFF) | ((codes >= 0xD800) & (codes <= 0xDFFF))).any():
        raise _refuse("holds text that is not Unicode (surrogates or code points above U+10FFFF)")


def _reconstruct_wrapper(unpickler: "_Unpickler") -> Callable:
    core = _numpy_core()

    def _reconstruct(subtype, shape, typecode):
        if not isinstance(subtype, _ArrayClass) or shape != (0,) or typecode not in (b"b", "b"):
            raise _refuse("rebuilds an array other than the way NumPy pickles one")
        return core.multiarray._reconstruct(np.ndarray, (0,), b"b")

    return _reconstruct


def _frombuffer_wrapper(unpickler: "_Unpickler") -> Callable:
    core = _numpy_core()

    def _frombuffer(buf, dtype, shape, order):
        dtype, shape = _dtype(dtype), _shape(shape)
        if not isinstance(buf, (bytes, bytearray)) or dtype.hasobject or order not in ("C", "F", "A", "K"):
            raise _refuse("views something other than bytes as an array")
        if len(buf) != _count(shape) * dtype.itemsize:
            raise DataError(f"the pickle views {len(buf):,} bytes as an array of shape {shape} ({dtype}); the sizes differ")
        unpickler.budget.check(len(buf), f"an array of shape {shape} ({dtype})")
        _check_text(bytes(buf), dtype)
        return core.numeric._frombuffer(buf, dtype, shape, order)

    return _frombuffer


def _scalar(dtype, data=None):
    dtype = _dtype(dtype)
    if dtype.hasobject:
        if dtype != np.dtype("O"):
            raise _refuse(f"asks for a scalar of {dtype}")
        return data
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise _refuse(f"gives a {dtype} scalar other than {dtype.itemsize} bytes")
    _check_text(bytes(data), dtype)
    return _numpy_core().multiarray.scalar(dtype, bytes(data))


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: only the latin-1 codec."""
    if not isinstance(text, str) or not isinstance(encoding, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise _refuse(f"asks for codec '{str(encoding)[:40]}'")
    return text.encode("latin1", "strict")


_FLAT = (str, bytes, int, float, complex, bool, type(None))


def _flat_key(key: Any) -> bool:
    """A key a feature file uses: a string or number, or a tuple of them (hashing a deeper key
    could take time exponential in the file's size)."""
    return isinstance(key, _FLAT) or (type(key) is tuple and all(isinstance(k, _FLAT) for k in key))


def _check_keys(keys: Any, op: str) -> None:
    for k in keys:
        if not _flat_key(k):
            raise _refuse(f"uses a {type(k).__name__} as a key or set item in {op}")


def _pairs(args: tuple) -> None:
    """The keys of ``dict(...)`` / ``OrderedDict(...)`` arguments must be flat."""
    if args and isinstance(args[0], dict):
        _check_keys(args[0], "a dict")
    elif args:
        if not isinstance(args[0], (list, tuple)) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in args[0]):
            raise _refuse("builds a dict from something other than key-value pairs")
        _check_keys([p[0] for p in args[0]], "a dict")


def _ordered_dict(*args) -> collections.OrderedDict:
    _pairs(args[:1])
    return collections.OrderedDict(*args[:1])


def _builtin(unpickler: "_Unpickler", kind: type) -> Callable:
    """A builtin the way pickle uses it: never on an array or a buffer view; ``str`` of text and
    numbers only (the text of a nested list could be huge); set items and dict keys flat;
    ``bytes(n)`` counted first."""

    def call(*args):
        if any(isinstance(a, (np.ndarray, _ArrayClass, memoryview)) for a in args):
            raise _refuse(f"calls builtins.{kind.__name__} on an array")
        if kind is str and not all(isinstance(a, (str, bytes, int, float)) for a in args):
            raise _refuse("calls builtins.str on a container")
        if kind in (set, frozenset) and args:
            if not isinstance(args[0], (list, tuple, set, frozenset, str, bytes)):
                raise _refuse(f"builds a {kind.__name__} from a {type(args[0]).__name__}")
            _check_keys(args[0], f"a {kind.__name__}")
        if kind is dict:
            _pairs(args)
        if kind in (bytes, bytearray) and args and isinstance(args[0], int):
            unpickler.budget.take(max(0, args[0]), f"builtins.{kind.__name__}({args[0]:,})")
        try:
            return kind(*args)
        except (TypeError, ValueError, OverflowError, UnicodeError, MemoryError) as exc:
            raise DataError(f"the pickle calls builtins.{kind.__name__} with arguments it rejects ({type(exc).__name__}: {str(exc)[:120]})") from None

    call.__name__ = kind.__name__
    return call


def _defaultdict(*args) -> dict:
    """``collections.defaultdict`` read as a plain dict: a reader never needs its factory."""
    return dict(*args[1:2]) if len(args) > 1 and isinstance(args[1], dict) else {}


_BUILTINS = (dict, list, tuple, set, frozenset, str, bytes, int, float, complex, bool, slice, bytearray)


def _allowed_globals(unpickler: "_Unpickler") -> dict[tuple[str, str], Any]:
    """The exact ``(module, name)`` pairs a feature pickle may name, resolved without importing."""
    table: dict[tuple[str, str], Any] = {("builtins", k.__name__): _builtin(unpickler, k) for k in _BUILTINS}
    table[("__builtin__", "set")] = table[("builtins", "set")]  # Python 2 pickles
    table[("collections", "OrderedDict")] = _ordered_dict
    table[("collections", "defaultdict")] = _defaultdict
    table[("_codecs", "encode")] = _latin1_encode
    table[("numpy", "ndarray")] = _ArrayClass(unpickler)
    table[("numpy", "dtype")] = _make_dtype
    for prefix in ("numpy.core", "numpy._core"):
        table[(f"{prefix}.multiarray", "_reconstruct")] = _reconstruct_wrapper(unpickler)
        table[(f"{prefix}.multiarray", "scalar")] = _scalar
        table[(f"{prefix}.numeric", "_frombuffer")] = _frombuffer_wrapper(unpickler)
    return table


# -- the unpickler ---------------------------------------------------------------------------
class _Capped:
    """A file that never hands out (or allocates for) more than the bytes it has left."""

    def __init__(self, f, size: int):
        self._f, self._left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readline(self) -> bytes:
        data = self._f.readline(self._left)
        self._left -= len(data)
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


class _Unpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be checked
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, f, budget: Budget):
        super().__init__(f)
        self.budget = budget
        self._allowed = _allowed_globals(self)

    def find_class(self, module: str, name: str):
        found = self._allowed.get((module, name))
        if found is None:
            raise _refuse(f"asks for '{str(module)[:80]}.{str(name)[:80]}'")
        return found

    def persistent_load(self, pid):
        raise _refuse("refers to a persistent object")

    def _target(self, kinds: tuple[type, ...], op: str, depth: int = 1) -> Any:
        target = self.stack[-depth]
        if type(target) not in kinds:
            raise _refuse(f"uses {op} on a {type(target).__name__}")
        return target

    def load_build(self):
        state, inst = self.stack[-1], self.stack[-2]
        if type(inst) is np.ndarray:
            ok = _array_state_ok(state)
        elif type(inst) is np.dtype or isinstance(inst, np.dtype):
            ok = _dtype_state_ok(inst, state)
        else:
            raise _refuse(f"sets the state of a {type(inst).__name__}")
        if not ok:
            raise _refuse(f"sets a {type(inst).__name__} state other than NumPy writes")
        if type(inst) is np.ndarray and isinstance(state[-1], (bytes, bytearray, str)):
            data = state[-1].encode("latin1", "replace") if isinstance(state[-1], str) else bytes(state[-1])
            _check_text(data, state[-3])
        super().load_build()

    def load_append(self):
        self._target((list,), "APPEND", 2)
        super().load_append()

    def load_appends(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not list:
            raise _refuse(f"uses APPENDS on a {type(target).__name__}")
        target.extend(items)

    def load_setitem(self):
        self._target((dict, collections.OrderedDict), "SETITEM", 3)
        _check_keys([self.stack[-2]], "SETITEM")
        super().load_setitem()

    def load_setitems(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) not in (dict, collections.OrderedDict):
            raise _refuse(f"uses SETITEMS on a {type(target).__name__}")
        _check_keys(items[0::2], "SETITEMS")
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]

    def load_additems(self):
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise _refuse(f"uses ADDITEMS on a {type(target).__name__}")
        _check_keys(items, "ADDITEMS")
        target.update(items)

    def load_buffer(self):
        raise _refuse("uses out-of-band or read-only buffers")

    def load_bytearray8(self):
        (size,) = struct.unpack("<Q", self.read(8))
        data = self.read(size)  # never more than the file holds
        if len(data) != size:
            raise DataError(f"the pickle is truncated: a bytearray of {size:,} bytes has {len(data):,}")
        self.append(bytearray(data))

    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.APPEND[0]] = load_append
    dispatch[pickle.APPENDS[0]] = load_appends
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.ADDITEMS[0]] = load_additems
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8
    dispatch[pickle.NEXT_BUFFER[0]] = load_buffer
    dispatch[pickle.READONLY_BUFFER[0]] = load_buffer


# -- materialised sizes ----------------------------------------------------------------------
def _where(path: tuple) -> str:
    return "".join(f"[{p!r}]" for p in path[:4]) or "the top level"


class _Walk:
    """Materialised bytes of an unpickled object: shared parts counted once per reference."""

    def __init__(self, budget: Budget, source: str):
        self.budget, self.source = budget, source
        self.sizes: dict[int, int] = {}
        self.active: set[int] = set()

    def size(self, obj: Any, path: tuple = (), depth: int = 0) -> int:
        key = id(obj)
        if key in self.sizes:
            return self.sizes[key]
        if depth > MAX_DEPTH:
            raise DataError(f"{self.source}: containers nested deeper than {MAX_DEPTH} levels at {_where(path)}; a feature file needs a few")
        if key in self.active:
            raise DataError(f"{self.source}: a container at {_where(path)} contains itself; a feature file holds no cycles")
        self.active.add(key)
        total = self._own(obj, path, depth)
        self.active.discard(key)
        self.sizes[key] = total
        return total

    def _add(self, total: int, part: int, path: tuple) -> int:
        total += part
        if total > self.budget.remaining():
            self.budget.check(total, f"the arrays and containers at {_where(path)} (counted at their materialised size)")
        return total

    def _own(self, obj: Any, path: tuple, depth: int) -> int:
        if isinstance(obj, np.ndarray):
            if not obj.dtype.hasobject:
                return self._add(0, obj.size * max(obj.dtype.itemsize, 1), path)
            total = self._add(0, obj.size * 8, path)
            for i, item in enumerate(obj.flat):
                total = self._add(total, self.size(item, (*path, i), depth + 1), path)
            return total
        if isinstance(obj, dict):
            total = self._add(0, 16 * len(obj), path)
            for k, v in obj.items():
                total = self._add(total, self.size(k, path, depth + 1) + self.size(v, (*path, k), depth + 1), path)
            return total
        if isinstance(obj, (list, tuple, set, frozenset)):
            total = self._add(0, 8 * len(obj), path)
            for i, item in enumerate(obj):
                total = self._add(total, self.size(item, (*path, i), depth + 1), path)
            return total
        if isinstance(obj, (str, bytes, bytearray)):
            return self._add(0, len(obj), path)
        if isinstance(obj, np.generic):
            return max(8, obj.itemsize)
        return 8


def read_pickle(path: str | Path, budget: Budget | None = None) -> Any:
    """Load a feature pickle with the checked unpickler; its materialised size goes to ``budget``
    (by default a fresh :class:`Budget` for the file)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    budget = budget if budget is not None else Budget([path])
    try:
        with open(path, "rb") as f:
            data = _Unpickler(_Capped(f, path.stat().st_size), budget).load()
    except DataError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise DataError(f"{path}: {exc}") from None
    except RecursionError:
        raise DataError(f"{path}: not a readable feature pickle (nested too deeply)") from None
    except Exception as exc:  # a malformed pickle: any opcode error, a type rejected by NumPy
        raise DataError(f"{path}: not a readable feature pickle ({type(exc).__name__}: {str(exc)[:200]})") from None
    walk = _Walk(budget, str(path))
    budget.take(walk.size(data), "the pickle's arrays and containers (counted at their materialised size)")
    return data


# -- conversions -----------------------------------------------------------------------------
def _leaves(obj: Any, memo: dict[int, tuple[int, int, bool]], depth: int = 0) -> tuple[int, int, bool]:
    """``(elements, widest element in bytes, holds strings)`` of what ``np.asarray(obj)`` builds."""
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, np.ndarray):
        out = (obj.size, max(obj.dtype.itemsize, 1), obj.dtype.kind in "USO")
    elif isinstance(obj, (list, tuple)) and depth < MAX_DEPTH:
        n, wide, text = 0, 1, False
        for item in obj:
            a, b, c = _leaves(item, memo, depth + 1)
            n, wide, text = n + a, max(wide, b), text or c
        out = (max(n, 1) if not obj else n, wide, text)
    elif isinstance(obj, str):
        out = (1, 4 * max(len(obj), 1), True)
    elif isinstance(obj, (bytes, bytearray)):
        out = (1, max(len(obj), 1), True)
    elif isinstance(obj, np.generic):
        out = (1, max(obj.itemsize, 8), obj.dtype.kind in "USO")
    else:
        out = (1, 8, False)
    memo[key] = out
    return out


def array_bytes(value: Any) -> int:
    """An upper bound of ``np.asarray(value).nbytes``: elements times the widest element (a
    list that mixes numbers and strings becomes strings of at least 32 characters)."""
    n, wide, text = _leaves(value, {})
    return n * max(wide, 128 if text else 8)


def as_array(value: Any, budget: Budget, what: str, dtype: Any = None) -> np.ndarray:
    """``np.asarray(value)`` (then ``astype(dtype)``), counted against ``budget`` first."""
    arr_bytes = 0 if isinstance(value, np.ndarray) else array_bytes(value)
    if dtype is not None:
        n = value.size if isinstance(value, np.ndarray) else _leaves(value, {})[0]
        arr_bytes += n * np.dtype(dtype).itemsize
    budget.take(arr_bytes, what)
    arr = np.asarray(value)
    return arr if dtype is None else arr.astype(dtype)
