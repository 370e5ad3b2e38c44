"""Which function imports which ONNX op: a table keyed by ``(domain, op_type)``.

A handler is ``handler(ctx, node, ins) -> Value``: ``ins`` are the node's inputs as
:mod:`bitloom.frontend.values` (None for a blank optional input), the result is the value
of its first output. Modules register their handlers with :func:`handles`; the importer
looks ops up here, and the list of supported ops in its errors comes from here too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import onnx

from bitloom.frontend.context import ONNX_DOMAINS, ImportContext
from bitloom.frontend.values import Value

#: the standard domain
ONNX = ONNX_DOMAINS
#: Q/DQ and QOperator ops: the standard domain and onnxruntime's contrib ops
QDQ = (*ONNX_DOMAINS, "com.microsoft")
#: QONNX's and FINN's custom ops (Brevitas exports ``onnx.brevitas``)
QONNX = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general")

HandlerFn = Callable[[ImportContext, onnx.NodeProto, list[Value | None]], Value]
#: how a handler treats a transposed activation (a ``perm`` view): ``aware`` reads the perm
#: itself; ``elementwise`` sees the untransposed tensor (constants transposed alike) and its
#: result gets the transpose back; ``per_tensor`` is element-wise when its parameters
#: (inputs after the first) are scalars; ``plain`` refuses transposed inputs
Layout = Literal["aware", "elementwise", "per_tensor", "plain"]


def always(ins: list[Value | None]) -> bool:
    """The default ``folds``: a standard op of constant inputs is evaluated."""
    return True


def never(ins: list[Value | None]) -> bool:
    """``folds`` of the quantizers: they turn constants into weights, not into constants."""
    return False


@dataclass(frozen=True)
class Handler:
    """A handler function and what the importer needs to know about it."""

    run: HandlerFn
    layout: Layout = "plain"
    #: may read a host-side result (Softmax and what may follow it at the graph output)
    reads_host: bool = False
    #: only computes constants (shape expressions): refused on activations
    constant_only: bool = False
    #: named in the "bitloom maps ..." list of the unsupported-op error
    listed: bool = True
    #: whether a standard-domain node of constant inputs is evaluated instead (not for
    #: quantizers, which turn constants into weights)
    folds: Callable[[list[Value | None]], bool] = always
    #: inputs a non-standard op requires (standard ops are checked against their schema)
    inputs: int = 1


HANDLERS: dict[tuple[str, str], Handler] = {}
#: handlers of an op whose first input is a host-side result (a Q/DQ after Softmax)
HOST_HANDLERS: dict[tuple[str, str], Handler] = {}


def handles(domains: tuple[str, ...], *op_types: str, host_result: bool = False,
            layout: Layout = "plain", reads_host: bool = False, constant_only: bool = False,
            listed: bool = True, folds: Callable[[list[Value | None]], bool] = always,
            inputs: int = 1) -> Callable[[HandlerFn], HandlerFn]:
    """Register the decorated function for ``op_types`` in ``domains`` (the other arguments
    are :class:`Handler`'s); ``host_result`` registers it for a host-side first input."""
    table = HOST_HANDLERS if host_result else HANDLERS

    def register(fn: HandlerFn) -> HandlerFn:
        handler = Handler(fn, layout, reads_host, constant_only, listed, folds, inputs)
        for domain in domains:
            for op in op_types:
                if (domain, op) in table:
                    raise ValueError(f"two handlers for {op} in domain {domain!r}")
                table[(domain, op)] = handler
        return fn

    return register


def handler_for(node: onnx.NodeProto) -> Handler | None:
    """The handler of ``node``, or None when bitloom does not support it."""
    return HANDLERS.get((node.domain, node.op_type))


def host_handler_for(node: onnx.NodeProto) -> Handler | None:
    """The handler of ``node`` when its first input is a host-side result, if it differs."""
    return HOST_HANDLERS.get((node.domain, node.op_type))


def supported_ops() -> list[str]:
    """The op types named in the unsupported-op error, sorted."""
    return sorted({op for (_, op), h in HANDLERS.items() if h.listed})
