"""Block formats: elements sharing one scale per block (OCP MX; ONNX opset-21 blocked Q/DQ).

A value is ``element * scale``. For MX the scale is an E8M0 power of two chosen from the block
(OCP MX v1.0, section 6.3): ``2**(floor(log2(max|x|)) - emax_elem)``, clamped below to the
smallest scale, NaN above the largest or when the block holds NaN/inf; all-zero blocks take the
smallest scale. Elements are then quantized by the element format, which must be symmetric and
saturate (as the MX elements are and do) so that the scale can be read back from the values.
For ONNX blocked quantization the model supplies the scales (``scales=``, in ONNX layout: the
blocked axis shortened to ``ceil(n / block_size)``); the last block may be partial.

A block value's code is ``scale_code << element.bits | element_code``, so :meth:`Block.decode`
works element by element; :meth:`Block.encode` picks one scale per block. Storage packs one
scale per block: :attr:`Block.bits_per_block`. Zero points (asymmetric blocked Q/DQ) are not
part of the format: the frontend handles them as it does for per-tensor integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitloom.formats.base import Format, Grid
from bitloom.formats.minifloat import Minifloat

E8M0 = Minifloat(8, 0, subnormals=False, specials="fn", saturating=False, signed=False)


@dataclass(frozen=True)
class Block(Format):
    """``block_size`` elements of ``element`` with one ``scale`` per block."""

    element: Format
    block_size: int = 32
    scale: Format = E8M0

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block size must be >= 1, got {self.block_size}")
        if not self.element.min <= 0 <= self.element.max:
            raise ValueError(f"block element {self.element.name} has no zero")

    @property
    def bits(self) -> int:
        """Width of one element's code together with its block's scale code."""
        return self.element.bits + self.scale.bits

    @property
    def bits_per_block(self) -> int:
        return self.block_size * self.element.bits + self.scale.bits

    @property
    def name(self) -> str:
        from bitloom.formats.names import canonical_name

        return canonical_name(self) or f"{self.element.name}@{self.block_size}:{self.scale.name}"

    def grid(self) -> Grid:
        """Every element value times every scale value (exact, hence wide for E8M0 scales)."""
        return self.element.grid().product(self.scale.grid())

    # -- scales ---------------------------------------------------------------------------

    def _blocks(self, x: np.ndarray, axis: int) -> np.ndarray:
        """``x`` with ``axis`` last, zero-padded and split into ``(..., blocks, block_size)``."""
        x = np.moveaxis(x, axis, -1)
        pad = -x.shape[-1] % self.block_size
        if pad:
            x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])
        return x.reshape(*x.shape[:-1], -1, self.block_size)

    @staticmethod
    def _unblock(xb: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
        """Inverse of :meth:`_blocks` for an array that had ``shape``."""
        flat = xb.reshape(*xb.shape[:-2], -1)[..., : shape[axis]]
        return np.moveaxis(flat, -1, axis)

    def _scales(self, xb: np.ndarray, axis: int, scales: np.ndarray | None) -> np.ndarray:
        """Per-block scales as ``(..., blocks, 1)``: the MX ones, or the model's (ONNX layout)."""
        if scales is None:
            return self._mx_scales(xb)[..., None]
        s = np.moveaxis(np.asarray(scales, dtype=np.float64), axis, -1)
        if s.shape != xb.shape[:-1]:
            raise ValueError(f"scales of shape {np.shape(scales)} do not block this array")
        return s[..., None]

    def _mx_scales(self, xb: np.ndarray) -> np.ndarray:
        if not (isinstance(self.scale, Minifloat) and self.scale.man_bits == 0):
            raise ValueError(f"{self.name}: scales that are not powers of two come from the "
                             "model; pass scales=")
        if not getattr(self.element, "saturating", True) or self.element.min != -self.element.max:
            # else the block's largest magnitude may leave [2**emax, 2**(emax+1)) (overflow to
            # inf/NaN, clipping at 0 or at -2**(emax+1)): its scale could not be read back
            raise ValueError(f"{self.name}: MX scales need a symmetric, saturating element")
        amax = np.max(np.abs(xb), axis=-1)
        _, e = np.frexp(self.element.max)
        emax = int(e) - 1
        _, e = np.frexp(amax)
        exponent = np.maximum(e - 1 - emax, -1000)  # far below any scale: clamps to the min
        s = self.scale.quantize(np.ldexp(1.0, exponent))
        return np.where(amax == 0, self.scale.min, np.where(np.isfinite(amax), s, np.nan))

    def shared_scales(self, x: np.ndarray, axis: int = -1) -> np.ndarray:
        """OCP MX shared scales of ``x`` per block along ``axis`` (ONNX layout)."""
        xb = self._blocks(np.asarray(x, dtype=np.float64), axis)
        return np.moveaxis(self._mx_scales(xb), -1, axis)

    # -- arithmetic -----------------------------------------------------------------------

    def quantize(
        self,
        x: np.ndarray,
        rounding: str = "half_even",
        *,
        axis: int = -1,
        scales: np.ndarray | None = None,
    ) -> np.ndarray:
        """Blocks along ``axis`` scaled by ``scales`` (default: the MX shared scales)."""
        x = np.asarray(x, dtype=np.float64)
        xb = self._blocks(x, axis)
        s = self._scales(xb, axis, scales)
        y = xb / s
        # an element that underflows float64 keeps a stand-in below half the element LSB, so
        # directed modes still round it away from zero
        quarter_lsb = 2.0 ** -(self.element.grid().frac_bits + 2)
        y = np.where((y == 0) & (xb != 0), np.copysign(quarter_lsb, xb), y)
        return self._unblock(self.element.quantize(y, rounding) * s, x.shape, axis)

    def encode(
        self, values: np.ndarray, *, axis: int = -1, scales: np.ndarray | None = None
    ) -> np.ndarray:
        """Block values -> ``scale_code << element.bits | element_code`` per element.

        MX scales are recomputed from the values: quantized blocks give back their own scale.
        """
        v = np.asarray(values, dtype=np.float64)
        vb = self._blocks(v, axis)
        s = self._scales(vb, axis, scales)
        elements = np.where(np.isnan(s), 0.0, vb / s)  # a NaN scale makes its elements moot
        codes = (self.scale.encode(s) << self.element.bits) | self.element.encode(elements)
        return self._unblock(codes, v.shape, axis)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        c = np.asarray(codes).astype(np.int64)
        element = self.element.decode(c & ((1 << self.element.bits) - 1))
        return element * self.scale.decode(c >> self.element.bits)
