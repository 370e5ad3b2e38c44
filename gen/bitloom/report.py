"""Human and machine descriptions of networks and plans (report.json, summary tables)."""

from __future__ import annotations

from bitloom.ir import Network


def summary_text(net: Network) -> str:
    """A plain-text table of layers, shapes, formats and MACs."""
    lines = [f"{net.source}", f"  input  {net.input.name}: {net.input.shape} -> quantized to "
             f"{net.input.quantizer.describe()}"]
    header = f"  {'layer':10} {'op':14} {'in -> out':>22} {'in':>7} {'weight':>7} " \
             f"{'acc':>7} {'out':>7} {'MACs':>8}  requant"
    lines.append(header)
    for ly in net.layers:
        fmts = layer_formats(ly)
        acc = fmts.get("accumulator")
        req = "-" if acc is None else (
            "thresholds" if ly.requant is not None else "host dequantizes")
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


def report_dict(plan, board) -> dict:
    """The content of report.json (see DESIGN.md for the contract)."""
    from bitloom import __version__
    from bitloom.plan.cost import estimate_layer

    layers = []
    for lp in plan.layers:
        ly = lp.layer
        requant = getattr(ly, "requant", False)
        layers.append({
            "name": ly.name,
            "op": ly.kind,
            "onnx_nodes": ly.source_nodes,
            "inputs": [plan.net.layers[p].name if p >= 0 else "input" for p in ly.inputs],
            "in_shape": list(ly.in_shape),
            "out_shape": list(ly.out_shape),
            "formats": layer_formats(ly),
            "requant": "none" if requant is False else (
                "thresholds" if requant is not None else "none (host)"),
            "pe": lp.fold.pe,
            "simd": lp.fold.simd,
            "macs_per_frame": ly.macs,
            "cycles_per_frame": lp.cycles,
            "fifo_depths": list(lp.fifo_depths),
            "weight_memory": None if lp.memory is None else lp.memory.as_dict(),
            "dsp": lp.dsp,
            "estimated": estimate_layer(lp),
        })
    est_total: dict[str, float] = {}
    for ly in layers:
        for k, v in ly["estimated"].items():
            est_total[k] = est_total.get(k, 0) + v
    last = plan.output
    in_fmt = plan.in_fmt
    return {
        "bitloom": __version__,
        "model": plan.net.source,
        "board": board.name,
        "part": board.part,
        "family": board.family,
        "clock_mhz": plan.clock_mhz,
        "top": "bitloom_top",
        "io": {
            "input": {"name": plan.net.input.name, "format": in_fmt.name,
                      "element_bits": in_fmt.bits, "shape_channel_last":
                      list(plan.net.input.stream_shape),
                      "elements_per_beat": plan.in_elems, "beats_per_frame": plan.in_beats,
                      "tdata_bits": 8 * ((plan.in_elems * in_fmt.bits + 7) // 8)},
            "output": {"name": plan.net.output.name, "format": last.layer.out_fmt.name,
                       "element_bits": last.layer.out_fmt.bits,
                       "shape_channel_last": list(last.layer.out_shape),
                       "elements_per_beat": last.out_elems, "beats_per_frame": last.out_beats,
                       "tdata_bits": 8 * ((last.out_beat_bits + 7) // 8)},
        },
        "layers": layers,
        "totals": {"estimated": est_total,
                   "macs_per_frame": sum(lp.layer.macs for lp in plan.layers)},
        "cycles_per_frame": plan.cycles_per_frame,
        "latency_cycles_estimate": plan.latency_cycles,
        "frames_per_second": plan.frames_per_second,
    }
