"""The intermediate representation: typed integer layers between host-side quantizers."""

from bitloom.ir.elementwise import Affine, Chain, Clamp
from bitloom.ir.graph import InputQuantizer, MatrixVector, Network, OutputDequantizer
from bitloom.ir.requant import Thresholds, derive_thresholds

__all__ = [
    "Affine",
    "Chain",
    "Clamp",
    "InputQuantizer",
    "MatrixVector",
    "Network",
    "OutputDequantizer",
    "Thresholds",
    "derive_thresholds",
]
