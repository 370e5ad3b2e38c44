"""The intermediate representation: typed integer layers between host-side quantizers."""

from bitloom.ir.elementwise import Affine, Chain, Clamp
from bitloom.ir.graph import InputQuantizer, MatrixVector, Network, OutputDequantizer
from bitloom.ir.quantizer import CLIP_THEN_ROUND, ROUND_THEN_SHIFT, Quantizer
from bitloom.ir.requant import Thresholds, derive_thresholds

__all__ = [
    "CLIP_THEN_ROUND",
    "ROUND_THEN_SHIFT",
    "Affine",
    "Chain",
    "Clamp",
    "InputQuantizer",
    "MatrixVector",
    "Network",
    "OutputDequantizer",
    "Quantizer",
    "Thresholds",
    "derive_thresholds",
]
