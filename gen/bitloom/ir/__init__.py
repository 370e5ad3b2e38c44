"""The intermediate representation: typed integer layers between host-side quantizers."""

from bitloom.ir.elementwise import Affine, Chain, Clamp
from bitloom.ir.graph import HostOp, InputQuantizer, Network, OutputDequantizer
from bitloom.ir.layers import (
    AddStreams,
    AnyLayer,
    ChannelScale,
    ChannelShuffle,
    Concat,
    DepthwiseConv,
    Lookup,
    MatrixVector,
    MaxPool,
    SumPool,
    Thresholding,
    Window,
)
from bitloom.ir.quantizer import CLIP_THEN_ROUND, ROUND_THEN_SHIFT, Quantizer
from bitloom.ir.requant import Thresholds, derive_thresholds
from bitloom.ir.scale_requant import ScaleRequant, fit_scale

__all__ = [
    "CLIP_THEN_ROUND",
    "ROUND_THEN_SHIFT",
    "AddStreams",
    "Affine",
    "AnyLayer",
    "Chain",
    "ChannelScale",
    "ChannelShuffle",
    "Clamp",
    "Concat",
    "DepthwiseConv",
    "HostOp",
    "InputQuantizer",
    "Lookup",
    "MatrixVector",
    "MaxPool",
    "Network",
    "OutputDequantizer",
    "Quantizer",
    "ScaleRequant",
    "SumPool",
    "Thresholding",
    "Thresholds",
    "Window",
    "derive_thresholds",
    "fit_scale",
]
