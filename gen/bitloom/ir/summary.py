"""The plain-text description of a network: its layers, shapes, formats and MACs."""

from __future__ import annotations


def summary_text(net) -> str:
    """A plain-text table of layers, shapes, formats and MACs."""
    lines = [f"{net.source}", f"  input  {net.input.name}: {net.input.shape} -> quantized to "
             f"{net.input.quantizer.describe()}"]
    if net.input.steps:
        lines.insert(1, "  host   before the input quantizer, in float32: "
                     + ", ".join(step.describe() for step in net.input.steps))
    header = f"  {'layer':10} {'op':14} {'in -> out':>22} {'in':>7} {'weight':>7} " \
             f"{'acc':>7} {'out':>7} {'MACs':>8}  requant"
    lines.append(header)
    read = {i for ly in net.layers for i in ly.inputs}
    for index, ly in enumerate(net.layers):
        fmts = layer_formats(ly)
        acc = fmts.get("accumulator")
        req = "-" if acc is None else requantizers(ly) if ly.requant is not None else (
            "none: the accumulator travels on" if index in read else "host dequantizes")
        if getattr(ly, "function", ""):
            req = f"table of {len(ly.table)} ({ly.function})"
        shapes = f"{'x'.join(map(str, ly.in_shape))} -> {'x'.join(map(str, ly.out_shape))}"
        lines.append(
            f"  {ly.name:10} {ly.kind:14} {shapes:>22} {fmts['input']:>7} "
            f"{fmts.get('weight', '-'):>7} {acc or '-':>7} {fmts['output']:>7} "
            f"{ly.macs:>8}  {req}")
    lines.extend(f"  {ly.name}: golden only (no hardware mapping): {ly.golden_only}"
                 for ly in net.layers if ly.golden_only)
    host = "".join(f" -> {op.describe()}" for op in net.output.host_ops)
    lines.append(f"  output {net.output.name}: {net.output.shape}, float32 "
                 f"({net.output.chain.describe()}{host} on the host)")
    lines.append(f"  total MACs per frame: {sum(ly.macs for ly in net.layers)}")
    return "\n".join(lines)


def requantizers(ly) -> str:
    """The requantizers that can build a layer's table: thresholds (up to 8 bits), and the
    scale unit when one is exact (the plan picks between them by cost)."""
    from bitloom.ir.scale_requant import ScaleRequant, fit_scale

    if isinstance(ly.requant, ScaleRequant):  # the exact integers of a float island
        return f"scale ({ly.requant.multiplier_bits}-bit multiplier, no shift: exact)"
    fit = fit_scale(ly.requant, ly.acc_fmt)
    thresholds = "thresholds" if ly.requant.out_fmt.bits <= 8 else None
    if not isinstance(fit, ScaleRequant):
        return thresholds or f"none in hardware ({fit})"
    ties = ", ties to even" if fit.ties_to_even else ""
    scale = f"scale ({fit.multiplier_bits}-bit multiplier, shift {fit.shift}{ties})"
    return f"{thresholds} or {scale}" if thresholds else scale


def layer_formats(ly) -> dict[str, str]:
    """Format names of a layer's input, weights, accumulator and output (where it has them)."""
    fmt_in = getattr(ly, "in_fmt", None) or getattr(ly, "fmt", None) or ly.in_fmts[0]
    out = {"input": fmt_in.name}
    if hasattr(ly, "w_fmt"):
        out["weight"] = ly.w_fmt.name
    if hasattr(ly, "acc_fmt"):
        out["accumulator"] = ly.acc_fmt.name
    out["output"] = ly.out_fmt.name
    return out
