"""Tile sizes by rule: the sketches' decisions (:mod:`tvmq.targets.x86_sketch`) chosen from the
loop extents and the CPU, without tuning, as oneDNN and TOPI choose their blocking.

Packed convs (int8 dot product or fp32 FMA), a register tile of ``w1 x ob1`` accumulators:

* every step of the reduction loads ``ob1`` weight vectors and broadcasts ``w1`` inputs for
  ``w1 * ob1`` dot products / FMAs, so the tile maximizes ``w1 ob1 / (w1 + ob1)`` (work per
  load) subject to ``w1 ob1 + ob1 + spare <= registers`` (``spare``: the broadcast input and
  the temporaries of a two-step dot product), ``w1 | W <= 16``, ``ob1 | OB <= 4``;
* ``ob1 = 1`` where a reduction has fewer than :data:`SHORT_REDUCTION` steps (``KH KW RC``):
  there the epilogue, vectorized over ``ob1 lanes``, costs more than the loads the tile saves
  (MobileNetV2's int8 convs, each alone on one thread: 16 -> 96 at 112x112 189 us with
  ``ob1 = 1``, 324 with 3; from 24 steps on the tile won, 144 -> 1280 at 7x7 86 against 120);
* ``h1`` output rows per parallel task: the largest ``h1 | H <= 4`` that still leaves
  ``N (H / h1) (OB / ob1) >= 4 cores`` tasks. More rows per task stream each weight block
  from memory fewer times and recompute less of the pad;
* ``rc1``: the largest ``rc1 | RC <= 16`` input-channel (groups) per inner reduction step.

Depthwise convs vectorize ``vector`` channels; the tile is ``w1 x c1`` accumulators
(``w1 | W <= 8``, ``c1 | C / vector <= 4`` a power of two: one vectorized loop of ``c1 vector``), each ``vector * 32 / vector_bits`` registers, with
``c1`` weight vectors and one input live, and ``h1`` as for packed convs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SHORT_REDUCTION = 16  # dot-product / FMA steps per output below which a conv's register tile is one block wide


@dataclass(frozen=True)
class CpuModel:
    """What the rules read off a target: parallel cores, vector width and registers."""

    cores: int
    vector_bits: int  # widest vector register (512 with AVX-512, 256 with AVX2)
    registers: int  # vector registers: 32 with AVX-512, 16 below

    @classmethod
    def of(cls, target) -> "CpuModel":
        """The model of ``target``: its vector width from its x86 features (TVM 0.27's
        ``llvm_get_vector_width`` says 512 for every x86 CPU, haswell and znver3 included, which
        sized AVX2 tiles for 32 registers of 512 bits), from LLVM for other CPUs."""
        from tvm.target.codegen import llvm_get_vector_width, target_has_features

        cores = int(target.attrs.get("num-cores", 0) or 0) or _online_cpus()
        x86_bits = next((bits for feature, bits in X86_VECTOR_BITS if target_has_features(feature, target)), None)
        bits = x86_bits or llvm_get_vector_width(target)
        bits = bits if bits > 0 else 128
        return cls(cores, bits, 32 if bits >= 512 else 16)


X86_VECTOR_BITS = (("avx512f", 512), ("avx2", 256), ("avx", 256), ("sse2", 128))  # widest first


def _online_cpus() -> int:
    try:
        text = Path("/sys/devices/system/cpu/online").read_text().strip()
    except OSError:
        return 1
    return sum(int(b) - int(a) + 1 for a, b in (part.split("-") if "-" in part else (part, part)
                                                for part in text.split(",")))


def divisors(n: int, limit: int) -> list[int]:
    """The divisors of ``n`` up to ``limit``, ascending."""
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def packed_conv_tiles(cpu: CpuModel, spare: int = 1):
    """The rule for :func:`tvmq.targets.x86_sketch.schedule_packed_conv` / ``schedule_fp32_conv``:
    extents -> inner tile sizes (module docstring)."""

    def tiles(extents: dict) -> dict:
        steps = extents["rh"] * extents["rw"] * extents["rc"]
        blocks = 1 if steps < SHORT_REDUCTION else 4
        w1, ob1 = register_tile(extents["w"], extents["ob"], 16, blocks, cpu.registers, spare, vectors_each=1)
        return {"w": w1, "ob": ob1, "h": rows_per_task(extents, extents["ob"] // ob1, cpu),
                "rc": max(divisors(extents["rc"], 16))}

    return tiles


def packed_dense_tiles(cpu: CpuModel, spare: int = 1):
    """The rule for :func:`tvmq.targets.x86_sketch.schedule_packed_dense`: the packed convs' register
    tile over rows ``m`` and output blocks ``ob``."""

    def tiles(extents: dict) -> dict:
        m1, ob1 = register_tile(extents["m"], extents["ob"], 16, 4, cpu.registers, spare, vectors_each=1)
        return {"m": m1, "ob": ob1}

    return tiles


def depthwise_tiles(cpu: CpuModel):
    """The rule for :func:`tvmq.targets.x86_sketch.schedule_depthwise`."""

    def tiles(extents: dict) -> dict:
        each = max(1, extents["vector"] * 32 // cpu.vector_bits)
        w1, c1 = register_tile(extents["w"], extents["c"], 8, 4, cpu.registers, 1, vectors_each=each,
                               power_of_two_blocks=True)
        return {"w": w1, "c": c1, "h": rows_per_task(extents, extents["c"] // c1, cpu)}

    return tiles


def input_edge_tiles(extents: dict) -> dict:
    """The rule for :func:`tvmq.targets.x86_sketch.schedule_input_edge`: one pixel a step (the
    tuned choice on MobileNetV2's input; ResNet-50's preferred two, not understood)."""
    return {"pixels": 1}


def register_tile(width: int, blocks: int, max_width: int, max_blocks: int, registers: int, spare: int,
                  vectors_each: int, power_of_two_blocks: bool = False) -> tuple[int, int]:
    """``(w1, b1)``: ``w1 | width``, ``b1 | blocks`` maximizing the work per load
    ``w1 b1 / (w1 + b1)`` (then the tile) with ``(w1 b1 + b1) vectors_each + spare <= registers``;
    ``power_of_two_blocks`` where the blocks form one vectorized loop (depthwise: LLVM made a
    48-wide float loop of 56x56x144 run 10 ms against 0.18 ms at 16 wide)."""
    fits = [(w1, b1) for w1 in divisors(width, max_width) for b1 in divisors(blocks, max_blocks)
            if (w1 * b1 + b1) * vectors_each + spare <= registers and not (power_of_two_blocks and b1 & (b1 - 1))]
    return max(fits or [(1, 1)], key=lambda t: (t[0] * t[1] / (t[0] + t[1]), t[0] * t[1], t[0]))


def rows_per_task(extents: dict, outer_blocks: int, cpu: CpuModel) -> int:
    """The largest ``h1 | H <= 4`` leaving ``N (H / h1) outer_blocks >= 4 cores`` parallel tasks (else 1)."""
    n, h = extents["n"], extents["h"]
    enough = [d for d in divisors(h, 4) if n * (h // d) * outer_blocks >= 4 * cpu.cores]
    return max(enough or [1])
