"""Human and machine descriptions of networks and plans (report.json, summary tables)."""

from __future__ import annotations

from bitloom.ir import Network


def summary_text(net: Network) -> str:
    """A plain-text table of layers, shapes, formats and MACs."""
    lines = [f"{net.source}", f"  input  {net.input.name}: {net.input.shape} -> quantized to "
             f"{net.input.fmt} (scale {net.input.quantizer.scale:g}, zero point "
             f"{net.input.quantizer.zero_point})"]
    header = f"  {'layer':8} {'op':12} {'K x N':>10} {'in':>7} {'weight':>7} {'acc':>7} " \
             f"{'out':>7} {'MACs':>8}  requant"
    lines.append(header)
    for ly in net.layers:
        req = "thresholds" if ly.requant is not None else "host dequantizes"
        lines.append(
            f"  {ly.name:8} {'MatMul':12} {f'{ly.in_features}x{ly.out_features}':>10} "
            f"{ly.in_fmt.name:>7} {ly.w_fmt.name:>7} {ly.acc_fmt.name:>7} {ly.out_fmt.name:>7} "
            f"{ly.macs:>8}  {req}")
    lines.append(f"  output {net.output.name}: {net.output.shape}, float32 "
                 f"({net.output.chain.describe()} on the host)")
    lines.append(f"  total MACs per frame: {sum(ly.macs for ly in net.layers)}")
    return "\n".join(lines)


def report_dict(plan, board) -> dict:
    """The content of report.json (see DESIGN.md for the contract)."""
    from bitloom import __version__
    from bitloom.plan.cost import estimate_layer

    layers = []
    for lp in plan.layers:
        ly = lp.layer
        layers.append({
            "name": ly.name,
            "op": "MatrixVector",
            "onnx_nodes": ly.source_nodes,
            "in_features": ly.in_features,
            "out_features": ly.out_features,
            "formats": {"input": ly.in_fmt.name, "weight": ly.w_fmt.name,
                        "accumulator": ly.acc_fmt.name, "output": ly.out_fmt.name},
            "requant": "thresholds" if ly.requant is not None else "none (host)",
            "pe": lp.fold.pe,
            "simd": lp.fold.simd,
            "cycles_per_frame": lp.cycles,
            "fifo_depth": lp.fifo_depth,
            "estimated": estimate_layer(lp),
        })
    est_total: dict[str, float] = {}
    for ly in layers:
        for k, v in ly["estimated"].items():
            est_total[k] = est_total.get(k, 0) + v
    first, last = plan.layers[0], plan.layers[-1]
    return {
        "bitloom": __version__,
        "model": plan.net.source,
        "board": board.name,
        "part": board.part,
        "family": board.family,
        "clock_mhz": plan.clock_mhz,
        "top": "bitloom_top",
        "io": {
            "input": {"name": plan.net.input.name, "format": first.layer.in_fmt.name,
                      "element_bits": first.layer.in_fmt.bits,
                      "elements_per_beat": first.fold.simd, "beats_per_frame": first.in_beats,
                      "tdata_bits": 8 * ((first.in_beat_bits + 7) // 8)},
            "output": {"name": plan.net.output.name, "format": last.layer.out_fmt.name,
                       "element_bits": last.layer.out_fmt.bits,
                       "elements_per_beat": last.fold.pe, "beats_per_frame": last.out_beats,
                       "tdata_bits": 8 * ((last.out_beat_bits + 7) // 8)},
        },
        "layers": layers,
        "totals": {"estimated": est_total,
                   "macs_per_frame": sum(lp.layer.macs for lp in plan.layers)},
        "cycles_per_frame": plan.cycles_per_frame,
        "latency_cycles_estimate": plan.latency_cycles,
        "frames_per_second": plan.frames_per_second,
    }
