"""Atomic operations on int64 arrays, for threads that coordinate inside one parallel region (Numba).

    x = atomic_load(a, i)                 a[i], read atomically (sequentially consistent)
    old = atomic_add(a, i, v)             a[i] += v atomically; returns the value before
    ok = atomic_cas(a, i, expected, new)  a[i] = new if a[i] == expected, atomically; True if it did
    spin_pause()                          a hint to the core that this thread is spinning (x86 ``pause``)

a: a 1-D C-contiguous int64 array. Every operation is sequentially consistent, so what a thread
wrote before an ``atomic_add`` is seen by a thread whose ``atomic_load`` (or ``atomic_cas``) reads
that addition's result: the counters that order the steps of ``generate.py``'s workers also carry
their data. Nothing checks bounds. Numba has no atomics of its own on the CPU; each of these is
an ``@intrinsic`` emitting one LLVM atomic instruction (``lock xadd``, ``lock cmpxchg``, a plain
``mov`` for the load on x86).
"""
import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

ORDER = "seq_cst"
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _is_int64_array(a):
    return isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype == types.int64


def _pointer(context, builder, array_type, array, index_type, index):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [context.cast(builder, index, index_type, types.intp)])


@intrinsic
def atomic_load(typingctx, a, i):
    if not (_is_int64_array(a) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1]), ORDER, 8)

    return types.int64(a, i), codegen


@intrinsic
def atomic_add(typingctx, a, i, v):
    if not (_is_int64_array(a) and isinstance(i, types.Integer) and isinstance(v, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        pointer = _pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", pointer, value, ORDER)

    return types.int64(a, i, v), codegen


@intrinsic
def atomic_cas(typingctx, a, i, expected, new):
    if not (_is_int64_array(a) and isinstance(i, types.Integer) and isinstance(expected, types.Integer)
            and isinstance(new, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        pointer = _pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        old = context.cast(builder, args[2], sig.args[2], types.int64)
        value = context.cast(builder, args[3], sig.args[3], types.int64)
        result = builder.cmpxchg(pointer, old, value, ORDER, ORDER)
        return builder.extract_value(result, 1)

    return types.boolean(a, i, expected, new), codegen


@intrinsic
def spin_pause(typingctx):
    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen
