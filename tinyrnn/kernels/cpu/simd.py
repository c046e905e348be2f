"""Explicit SIMD vectors for Numba kernels: a 16-lane vector type and its operations.

    v = vload(a, i)         v[l] = a[i + l]                  a: 1-D C-contiguous float array
    vstore(a, i, v)         a[i + l] = v[l]
    v = vsplat(x)           v[l] = x                         x: a float32 / float64 scalar
    v = vzeros(a)           v[l] = 0, of a's dtype
    v = vfma(a, b, c)       v[l] = a[l] * b[l] + c[l]        (one fused multiply-add where the CPU has it)
    v = vadd(a, b)          v[l] = a[l] + b[l]
    x = vget(v, l)          one lane, as a scalar;  v = vset(v, l, x): a copy with lane l replaced

    for l in range(LANES). Inside kernels the arithmetic operators + - * / and min(), max()
    also work lane by lane on vectors, and between a vector and a scalar (broadcast), so code
    written for scalars runs unchanged on vectors: ``c = f * c_prev + i * g`` computes 16
    units at once when its inputs are vectors (``activations.py`` gives tanh and sigmoid too).

Integer dot products (int8 weights times int8 activations, summed in int32; ``generate.py``):

    v = vizeros()                    v[l] = 0, an IVec: LANES int32 lanes
    v = vdot_u8s8(acc, u, i, x, j)   v[l] = acc[l] + sum_m u[i+4l+m] x[j+4l+m], m < 4
                                     u, x: 1-D C uint8 and int8 arrays, x in [-64, 64] (u: int8
                                     weights in excess 128); 4 * LANES products
    v = vsum_bytes(acc, x, j)        v[l] = acc[l] + sum_m x[j+4l+m], m < 4
    s = vsum(v)                      the int32 sum of the lanes (wraps on overflow: the caller bounds it)
    vadd_row_dots(out, r, a0, a1, a2, a3, bias, scale, step)
                                     out[r+m] += (scale[r+m] * step) * (vsum(a_m) - bias), m < 4: four
                                     rows' dots finished at once, as vectors (out, scale: 1-D C float)

bfloat16 dot products (bfloat16 weights times a bfloat16 vector, products and sums in float32):

    v = vdot_bf16(acc, w, i, x, j)   acc plus BF16_PER_DOT products w[i+m] x[j+m] in its lanes
                                     (2 * LANES on AVX-512, LANES on AVX2: which lane takes which
                                     product is in its docstring); w, x: 1-D C arrays of 16-bit
                                     integers holding bfloat16 bit patterns (w in pairs where
                                     ``isa.bf16_pairs``, see its docstring); acc: a float32 Vec
    s = vsum(v)                      for a float Vec: the sum of its lanes, as a tree (a fixed order)

Why: a matmul's inner loop wants a block of C, e.g. 4 rows x 64 columns, held in *registers*
for the whole k loop. Numba runs LLVM's loop vectoriser but not its SLP vectoriser, so a block
of C written as scalar locals stays scalar, and written as a small array it is loaded and stored
at every k (the array may alias the operands). A value of type ``Vec`` is one LLVM vector
(``<16 x float>``: one AVX-512 register, two AVX2 registers, four NEON registers), so 16 of them
held in locals across a loop stay in 16 registers, and the loop is exactly the FMAs we wrote.
(The gate math uses them for the other reason: a loop vectorised by LLVM over 64 units pays
for runtime alias checks and remainder loops on every row; vectors pay for neither.)
LLVM lowers the vector operations for whatever CPU the kernel is compiled for (Numba compiles
for the host), so the code is portable; only the speed depends on the register file.

The operations are Numba ``@intrinsic``s: they are typed in Python and emit a few lines of LLVM IR
each, inlined into the calling kernel, and cached with it (``cache=True``); the operators are
``@overload``s of them (small functions LLVM inlines: ``jit.OVERLOAD_OPTIONS``). Nothing checks bounds:
like the rest of the kernels, the caller guarantees ``0 <= i`` and ``i + LANES <= len(a)``.
"""
import operator

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

from ..jit import OVERLOAD_OPTIONS
from ..isa import bf16_firsts_by_bytes, bf16_products, byte_products, simd_level, vnni_products

LANES = 16
# bfloat16 products one ``vdot_bf16`` adds: 2 * LANES where a Vec is one register (AVX-512), LANES
# where it is two (AVX2: see vdot_bf16)
BF16_PER_DOT = 2 * LANES if simd_level() == "AVX-512" else LANES
# vpshufb's bytes for ``word << 16`` in each 32-bit word of a 256-bit register: its low 2 bytes up, zeros below
FIRST_UP = [b for word in range(8) for b in (-128, -128, 4 * (word % 4), 4 * (word % 4) + 1)]


I32 = ir.IntType(32)


class Vec(types.Type):
    """A SIMD vector of LANES numbers of a float dtype (a Numba type; values live in registers)."""

    def __init__(self, dtype):
        self.dtype = dtype
        super().__init__(name=f"Vec({dtype} x {LANES})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, LANES))


class IVec(types.Type):
    """LANES int32 lanes: the accumulator of ``vdot_u8s8`` and ``vsum_bytes`` (values live in registers)."""

    def __init__(self):
        super().__init__(name=f"IVec(int32 x {LANES})")


ivec = IVec()


@register_model(IVec)
class _IVecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(I32, LANES))


def _is_flat(a):
    return isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"


def _is_flat_float_array(a):
    return _is_flat(a) and isinstance(a.dtype, types.Float)


def _is_flat_16bit_array(a):
    return _is_flat(a) and isinstance(a.dtype, types.Integer) and a.dtype.bitwidth == 16


def _is_flat_signed_array(a, bits):
    return _is_flat(a) and isinstance(a.dtype, types.Integer) and a.dtype.signed and a.dtype.bitwidth == bits


def _is_flat_unsigned_array(a, bits):
    return _is_flat(a) and isinstance(a.dtype, types.Integer) and not a.dtype.signed and a.dtype.bitwidth == bits


def _vector_pointer(context, builder, array_type, array, index_type, index, lanes=LANES):
    """LLVM pointer to a[index], typed as a pointer to a vector of ``lanes`` elements."""
    data = context.make_array(array_type)(context, builder, array).data
    i = context.cast(builder, index, index_type, types.intp)
    element_pointer = builder.gep(data, [i])
    return builder.bitcast(element_pointer, ir.VectorType(data.type.pointee, lanes).as_pointer())


@intrinsic
def vload(typingctx, a, i):
    if not (_is_flat_float_array(a) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        p = _vector_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        return builder.load(p, align=sig.args[0].dtype.bitwidth // 8)     # unaligned is fine

    return Vec(a.dtype)(a, i), codegen


@intrinsic
def vstore(typingctx, a, i, v):
    if not (_is_flat_float_array(a) and isinstance(i, types.Integer)
            and isinstance(v, Vec) and v.dtype == a.dtype):
        return None

    def codegen(context, builder, sig, args):
        p = _vector_pointer(context, builder, sig.args[0], args[0], sig.args[1], args[1])
        builder.store(args[2], p, align=sig.args[0].dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(a, i, v), codegen


def _splat(builder, x, lanes=LANES):
    """An LLVM vector of ``lanes`` copies of the scalar x."""
    vt = ir.VectorType(x.type, lanes)
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
    return builder.shuffle_vector(v, ir.Constant(vt, ir.Undefined), mask)


@intrinsic
def vsplat(typingctx, x):
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        return _splat(builder, args[0])

    return Vec(x)(x), codegen


@intrinsic
def vzeros(typingctx, a):
    if not _is_flat_float_array(a):
        return None

    def codegen(context, builder, sig, args):
        element = context.get_value_type(sig.args[0].dtype)
        return ir.Constant(ir.VectorType(element, LANES), [0.0] * LANES)

    return Vec(a.dtype)(a), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    if not (isinstance(a, Vec) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        vt = args[0].type
        # llvm.fmuladd: one FMA instruction where the CPU has one, else a multiply and an add
        suffix = "f32" if sig.args[0].dtype == types.float32 else "f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]),
                                            f"llvm.fmuladd.v{LANES}{suffix}")
        return builder.call(fn, args)

    return a(a, b, c), codegen



@intrinsic
def vget(typingctx, v, lane):
    if not (isinstance(v, Vec) and isinstance(lane, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], args[1])

    return v.dtype(v, lane), codegen


@intrinsic
def vset(typingctx, v, lane, x):
    if not (isinstance(v, Vec) and isinstance(lane, types.Integer) and _is_scalar(x)):
        return None

    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[2], sig.args[2], sig.args[0].dtype)   # to the lane type
        return builder.insert_element(args[0], value, args[1])

    return v(v, lane, x), codegen


# ---- arithmetic, lane by lane ----------------------------------------------------------------

def _binary(build):
    """An intrinsic (a, b) -> Vec for two vectors of one type, built by build(builder, a, b)."""
    def typer(typingctx, a, b):
        if not (isinstance(a, Vec) and a == b):
            return None

        def codegen(context, builder, sig, args):
            return build(builder, args[0], args[1])

        return a(a, b), codegen

    return intrinsic(typer)


vadd = _binary(lambda bld, a, b: bld.fadd(a, b))
vsub = _binary(lambda bld, a, b: bld.fsub(a, b))
vmul = _binary(lambda bld, a, b: bld.fmul(a, b))
vdiv = _binary(lambda bld, a, b: bld.fdiv(a, b))
vmin = _binary(lambda bld, a, b: bld.select(bld.fcmp_ordered("<", b, a), b, a))    # min(a, b)
vmax = _binary(lambda bld, a, b: bld.select(bld.fcmp_ordered(">", b, a), b, a))    # max(a, b)


def _is_scalar(x):
    return isinstance(x, (types.Float, types.Integer))


def _overload_binary(op, vector_op):
    """op(a, b) for Vec op Vec, Vec op scalar and scalar op Vec (the scalar is broadcast)."""
    @overload(op, jit_options=OVERLOAD_OPTIONS)
    def _impl(a, b):
        if isinstance(a, Vec) and a == b:
            return lambda a, b: vector_op(a, b)
        if isinstance(a, Vec) and _is_scalar(b):
            dt = a.dtype
            return lambda a, b: vector_op(a, vsplat(dt(b)))
        if _is_scalar(a) and isinstance(b, Vec):
            dt = b.dtype
            return lambda a, b: vector_op(vsplat(dt(a)), b)


for _op, _vector_op in ((operator.add, vadd), (operator.sub, vsub), (operator.mul, vmul),
                        (operator.truediv, vdiv), (min, vmin), (max, vmax)):
    _overload_binary(_op, _vector_op)


@overload(operator.neg, jit_options=OVERLOAD_OPTIONS)
def _neg(a):
    if isinstance(a, Vec):
        dt = a.dtype
        return lambda a: vsub(vsplat(dt(0)), a)


# ---- integer dot products -------------------------------------------------------------------

@intrinsic
def vizeros(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(ir.VectorType(I32, LANES), [0] * LANES)

    return ivec(), codegen


def _add_groups_of_four(builder, acc, wide):
    """acc[l] + sum_m wide[4l+m], m < 4: the 4 * LANES int32 lanes of wide added into acc's LANES."""
    n = 4 * LANES
    for m in range(4):
        acc = builder.add(acc, builder.shuffle_vector(wide, wide, ir.Constant(ir.VectorType(I32, LANES),
                                                                              list(range(m, n, 4)))))
    return acc


@intrinsic
def vdot_u8s8(typingctx, acc, u, i, x, j):
    """4 * LANES products of bytes, added in groups of four neighbours into acc's int32 lanes:
    v[l] = acc[l] + sum_m u[i+4l+m] x[j+4l+m], m < 4. u uint8 (an int8 weight q stored in excess
    128, u = q + 128: ``weight_formats.to_stored_int8``; the caller takes 128 * sum(x) off); x int8
    in [-64, 64].

    This is the x86 byte product (``isa.byte_products``: 512-bit with AVX-512BW, else 256-bit on
    AVX2). Per register of products, with VNNI (``isa.vnni_products``) one ``vpdpbusd`` multiplies
    the unsigned by the signed bytes and adds each group of four products to its int32 lane (exact:
    no saturation); without VNNI ``vpmaddubsw`` multiplies them and adds neighbouring pairs into
    16-bit lanes, exactly (255 * 64 * 2 = 32,640 < 2**15: no saturation), ``vpmaddwd`` by ones adds
    neighbouring 16-bit pairs into 32 bits, and an addition takes them into acc; against two
    widenings, two ``vpmaddwd`` and two additions for a 16-bit x. The same sums either way (VNNI:
    int8 sampling at b 0.9x the time on the Intel VM, BENCHMARKS.md). (``vpsignb`` instead of the
    bias, to multiply |x| by q with x's sign, measured 1.3x slower on Zen 4. Weights stored as
    int8, their top bits flipped here by a ``vpxor`` a register: int8 sampling 4% slower on Zen 4,
    and a quarter of the loop on Intel's cores by LLVM's models; BENCHMARKS.md.) Elsewhere plain IR
    (widen, multiply, add groups of four), the same numbers."""
    if not (acc == ivec and _is_flat_unsigned_array(u, 8) and _is_flat_signed_array(x, 8)
            and isinstance(i, types.Integer) and isinstance(j, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        acc_v, u_a, i_v, x_a, j_v = args
        n = 4 * LANES
        uv = builder.load(_vector_pointer(context, builder, sig.args[1], u_a, sig.args[2], i_v, n), align=1)
        xv = builder.load(_vector_pointer(context, builder, sig.args[3], x_a, sig.args[4], j_v, n), align=1)
        width = byte_products()
        if not width:
            wide = ir.VectorType(I32, n)
            return _add_groups_of_four(builder, acc_v, builder.mul(builder.zext(uv, wide), builder.sext(xv, wide)))
        parts = 1 if width == "AVX-512" else 2      # one register of 64 bytes, or two of 32
        b = n // parts
        halves = [list(range(b * p, b * p + b)) for p in range(parts)]
        us, xs = _parts(builder, uv, halves), _parts(builder, xv, halves)
        if vnni_products():
            ints_t = ir.VectorType(I32, b // 4)
            dot = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ints_t, [ints_t] * 3),
                                                 f"llvm.x86.avx512.vpdpbusd.{8 * b}")
            accs = _parts(builder, acc_v, [list(range(b // 4 * p, b // 4 * (p + 1))) for p in range(parts)])
            sums = [builder.call(dot, [a, builder.bitcast(u, ints_t), builder.bitcast(x, ints_t)])
                    for a, u, x in zip(accs, us, xs)]
            return _joined(builder, sums)
        names = (("llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512") if parts == 1 else
                 ("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd"))
        bytes_t, shorts_t, ints_t = (ir.VectorType(ir.IntType(8), b), ir.VectorType(ir.IntType(16), b // 2),
                                     ir.VectorType(I32, b // 4))
        pairs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(shorts_t, [bytes_t, bytes_t]), names[0])
        quads = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ints_t, [shorts_t, shorts_t]), names[1])
        ones = ir.Constant(shorts_t, [1] * (b // 2))
        return builder.add(acc_v, _joined(builder, [builder.call(quads, [builder.call(pairs, [u, x]), ones])
                                                     for u, x in zip(us, xs)]))

    return ivec(acc, u, i, x, j), codegen


def _lane_sums4(builder, vs, add):
    """The lane sums of four vectors of LANES lanes as one vector of 4 lanes (lane m: the sum of
    vs[m]'s), each added in ``vsum``'s order (lane l with lane l + n/2, halving n) but the four side
    by side: a step adds the low and high halves of every row's block of lanes at once. ``add``: the
    builder's add or fadd."""
    def halves(a, b, blocks, width):    # blocks: where each row's `width` lanes start in a ++ b
        def pick(offset):
            lanes = [start + offset + i for start in blocks for i in range(width // 2)]
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(I32, len(lanes)), lanes))
        return add(pick(0), pick(width // 2))

    n = LANES
    first, second = (halves(vs[k], vs[k + 1], [0, n], n) for k in (0, 2))      # two rows, n/2 lanes each
    width = n // 2
    x = halves(first, second, [0, width, n, n + width], width)                 # four rows, n/4 lanes each
    while width > 2:
        width //= 2
        x = halves(x, x, [row * width for row in range(4)], width)
    return x


@intrinsic
def vadd_row_dots(typingctx, out, r, a0, a1, a2, a3, bias, scale, step):
    """out[r+m] += (scale[r+m] * step) * (vsum(a_m) - bias) for m < 4: four rows' int8 dots
    (``vdot_u8s8``'s sums, less the bias of their excess 128) scaled and added into out at once,
    as vectors: the lane sums by ``_lane_sums4``, then one subtraction, conversion, product and sum
    for the four. The arithmetic is the scalar code's: scale[r+m] * step in the type Numba gives it
    (float32 for a float32 step), the rest in float64, rounded once to out's dtype (float32 results
    are the same bits: the float64 product of a float32 and a dot under 2**29 is exact). out: 1-D C
    float array, scale: 1-D C float32 array (r + 4 <= their lengths); step: out's dtype. (Each row's
    sum by ``vsum`` and the scalar code made a 4-row group at rows of 256 take 1.13-1.16x the time of
    this on Zen 4; BENCHMARKS.md.)"""
    if not (_is_flat_float_array(out) and _is_flat_float_array(scale) and scale.dtype == types.float32
            and a0 == ivec and a0 == a1 == a2 == a3 and isinstance(r, types.Integer)
            and isinstance(bias, types.Integer) and step == out.dtype):
        return None

    def codegen(context, builder, sig, args):
        out_a, r_v, *accs, bias_v, scale_a, step_v = args

        def splat4(x):
            return _splat(builder, x, 4)

        def at_r(array_type, array):
            return _vector_pointer(context, builder, array_type, array, sig.args[1], r_v, 4)

        dots = builder.sub(_lane_sums4(builder, accs, builder.add),
                           splat4(context.cast(builder, bias_v, sig.args[6], types.int32)))
        scale_t, out_t = sig.args[7], sig.args[0]
        scales = builder.load(at_r(scale_t, scale_a), align=scale_t.dtype.bitwidth // 8)
        double = ir.DoubleType()
        wide = ir.VectorType(double, 4)

        def widened(v):
            return v if v.type.element == double else builder.fpext(v, wide)

        if isinstance(step_v.type, ir.DoubleType):          # float32 * float64: float64
            factors = builder.fmul(widened(scales), splat4(step_v))
        else:                                               # float32 * float32: float32, then widened
            factors = widened(builder.fmul(scales, splat4(step_v)))
        pointer = at_r(out_t, out_a)
        old = builder.load(pointer, align=out_t.dtype.bitwidth // 8)
        new = builder.fadd(widened(old), builder.fmul(factors, builder.sitofp(dots, wide)))
        if old.type.element != double:
            new = builder.fptrunc(new, old.type)
        builder.store(new, pointer, align=out_t.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(out, r, a0, a1, a2, a3, bias, scale, step), codegen


def _parts(builder, v, lanes):
    """The vectors of v's lanes ``lanes[p]`` for each p (all of v when one part takes every lane)."""
    if len(lanes) == 1:
        return [v]
    return [builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, len(ls)), ls)) for ls in lanes]


def _joined(builder, parts):
    """One vector of the parts' lanes, in order (one part or two of the same length)."""
    if len(parts) == 1:
        return parts[0]
    both = ir.Constant(ir.VectorType(I32, 2 * parts[0].type.count), list(range(2 * parts[0].type.count)))
    return builder.shuffle_vector(parts[0], parts[1], both)


@intrinsic
def vsum_bytes(typingctx, acc, x, j):
    """4 * LANES int8 x[j:], added in groups of four neighbours into acc's int32 lanes:
    v[l] = acc[l] + sum_m x[j+4l+m], m < 4 (``vdot_u8s8``'s 128 * sum(x), a vector at a time)."""
    if not (acc == ivec and _is_flat_signed_array(x, 8) and isinstance(j, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        acc_v, x_a, j_v = args
        n = 4 * LANES
        xv = builder.load(_vector_pointer(context, builder, sig.args[1], x_a, sig.args[2], j_v, n), align=1)
        return _add_groups_of_four(builder, acc_v, builder.sext(xv, ir.VectorType(I32, n)))

    return ivec(acc, x, j), codegen


@intrinsic
def vdot_bf16(typingctx, acc, w, i, x, j):
    """BF16_PER_DOT products of bfloat16 w[i:] and x[j:] added into acc's float32 lanes (``vsum`` of
    the lanes, after the last call, is the dot product). The arrays hold pairs of bfloat16s in
    32-bit words (little endian: the first in the low half; i and j even in a row stored in pairs);
    w and x are read at the same offsets. (w[i+2l+1] below: the weight it stands for.)

    AVX-512 (BF16_PER_DOT = 2 * LANES): v[l] = acc[l] + w[i+2l] x[j+2l] + w[i+2l+1] x[j+2l+1].
    Where the target has AVX-512 BF16 (``isa.bf16_products``) this is one ``vdpbf16ps``: the
    products are exact, each added in float32 (round to nearest even), with denormal inputs and
    results read and written as 0. Elsewhere the same sums from shifts and masks: a bfloat16 is
    the top half of a float32, so the first of a pair is ``word << 16`` and the second ``word &
    0xFFFF0000``, both exact, with no widening shuffle; then two fused multiply-adds. There w is in
    *pairs* (``weight_formats.to_bfloat16_pairs``: the second of a pair is the whole 32-bit word read
    as a float32), so each 32 weights take a load, a shift and two FMAs (with the mask, a sampled
    character of the AVX2 build took 1.05-1.09x the time; BENCHMARKS.md), against two loads, two
    widenings, two shifts and two FMAs of a float32 vector; x is read as plain bfloat16s (its halves
    serve every row a kernel multiplies).

    AVX2 and narrower (BF16_PER_DOT = LANES): half the words, and each product its own lane: lane
    l < LANES/2 adds w[i+2l] x[j+2l], lane LANES/2 + l adds w[i+2l+1] x[j+2l+1]; one FMA. A Vec is
    two ymm registers there, and with 32 products a call each took two chained FMAs, while 4 rows'
    accumulators (8 registers), the vector's two halves (4) and the masks did not fit the 16
    registers: LLVM kept half the accumulators on the stack (BENCHMARKS.md: one thread, 1,024 x 256,
    11.7 -> 9.3 us). Built for an Intel core (``isa.bf16_firsts_by_bytes``) the weights' ``word <<
    16`` is a byte shuffle, ``vpshufb`` (``FIRST_UP``): there a shift shares ports 0 and 1 with the
    FMAs, a ``vpshufb`` runs on port 5. LLVM's own scheduling models give 4 rows x 16 columns 6.5 ->
    5.0 cycles on Skylake to Alder Lake, 6.5 -> 4.7 on Ice Lake, no change on Zen 1-3; not yet
    measured on an Intel CPU; on Zen 4 the Haswell build sampled 3% slower with it (BENCHMARKS.md).
    The codes may differ in the last bit of a sum (the order of the additions; denormals)."""
    if not (acc == Vec(types.float32) and _is_flat_16bit_array(w) and _is_flat_16bit_array(x)
            and isinstance(i, types.Integer) and isinstance(j, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        acc_v, w_a, i_v, x_a, j_v = args
        n_words = BF16_PER_DOT // 2
        words = ir.VectorType(I32, n_words)
        halves_t = ir.VectorType(ir.FloatType(), n_words)
        floats = ir.VectorType(ir.FloatType(), LANES)

        def load_words(array_type, array, index_type, index):
            p = _vector_pointer(context, builder, array_type, array, index_type, index, BF16_PER_DOT)
            return builder.load(builder.bitcast(p, words.as_pointer()), align=2)

        w_words = load_words(sig.args[1], w_a, sig.args[2], i_v)
        x_words = load_words(sig.args[3], x_a, sig.args[4], j_v)
        if bf16_products():
            # the pairs typed <16 x i32>, the intrinsic's older declaration: LLVM now declares it over
            # <32 x bfloat> and upgrades calls of the old type (llvmlite has no bfloat type)
            dot = cgutils.get_or_insert_function(builder.module, ir.FunctionType(floats, [floats, words, words]),
                                                 "llvm.x86.avx512bf16.dpbf16ps.512")
            return builder.call(dot, [acc_v, w_words, x_words])

        def first(word):
            return builder.bitcast(builder.shl(word, ir.Constant(words, [16] * n_words)), halves_t)

        def first_by_bytes(word):       # first(word) as a vpshufb (Intel's port 5, not the FMAs' ports)
            byte_t = ir.VectorType(ir.IntType(8), 32)
            shuffle = cgutils.get_or_insert_function(builder.module, ir.FunctionType(byte_t, [byte_t, byte_t]),
                                                     "llvm.x86.avx2.pshuf.b")
            # the mask through an empty inline asm (it returns its input): from a constant mask LLVM makes
            # the shift again. readnone, so that LLVM still hoists it out of the loop into one register.
            mask = builder.call(ir.InlineAsm(ir.FunctionType(byte_t, [byte_t]), "", "=x,0"),
                                [ir.Constant(byte_t, FIRST_UP)], attrs=("readnone", "nounwind"))
            moved = builder.call(shuffle, [builder.bitcast(word, byte_t), mask])
            return builder.bitcast(moved, halves_t)

        def second(word):
            return builder.bitcast(builder.and_(word, ir.Constant(words, [-65536] * n_words)), halves_t)

        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(floats, [floats] * 3),
                                             f"llvm.fmuladd.v{LANES}f32")
        w0 = first_by_bytes(w_words) if bf16_firsts_by_bytes() else first(w_words)
        w1 = builder.bitcast(w_words, halves_t)     # w in pairs: the second is the whole word
        x0, x1 = first(x_words), second(x_words)
        if BF16_PER_DOT == LANES:       # the firsts in the low lanes, the seconds in the high ones
            both = ir.Constant(ir.VectorType(I32, LANES), list(range(LANES)))
            return builder.call(fma, [builder.shuffle_vector(w0, w1, both), builder.shuffle_vector(x0, x1, both),
                                      acc_v])
        return builder.call(fma, [w1, x1, builder.call(fma, [w0, x0, acc_v])])

    return acc(acc, w, i, x, j), codegen


@intrinsic
def vsum(typingctx, v):
    if v == ivec:
        def codegen(context, builder, sig, args):
            vt = args[0].type
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(I32, [vt]),
                                                f"llvm.vector.reduce.add.v{LANES}i32")
            return builder.call(fn, args)

        return types.int32(v), codegen
    if isinstance(v, Vec):
        def codegen(context, builder, sig, args):     # halves added until one lane is left
            x, n = args[0], LANES
            while n > 1:
                n //= 2
                low = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(I32, n), list(range(n))))
                high = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(I32, n), list(range(n, 2 * n))))
                x = builder.fadd(low, high)
            return builder.extract_element(x, ir.Constant(I32, 0))

        return v.dtype(v), codegen
    return None
