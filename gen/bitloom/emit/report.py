"""Human and machine descriptions of networks and plans (report.json, summary tables)."""

from __future__ import annotations

from bitloom.ir.summary import layer_formats
from bitloom.plan.cost import estimate_layer
from bitloom.plan.design import frame_cycles, weight_traffic
from bitloom.plan.requantizers import requantizer_name
from bitloom.version import __version__


def report_dict(plan, board) -> dict:
    """The content of report.json (see DESIGN.md for the contract)."""
    layers = []
    for lp in plan.layers:
        ly = lp.layer
        requant = getattr(ly, "requant", False)
        scale = lp.scale
        layers.append({
            "name": ly.name,
            "op": ly.kind,
            "onnx_nodes": ly.source_nodes,
            "inputs": [plan.net.layers[p].name if p >= 0 else "input" for p in ly.inputs],
            "in_shape": list(ly.in_shape),
            "out_shape": list(ly.out_shape),
            "formats": layer_formats(ly),
            "requant": "none" if requant is False else (
                requantizer_name(lp.requant) if requant is not None else "none (host)"),
            "requantizer": None if scale is None else {
                "kind": requantizer_name(scale), "shift": scale.shift,
                "multiplier_bits": scale.multiplier_bits, "offset_bits": scale.offset_bits,
                "per_channel": scale.varying()},
            "pe": lp.fold.pe,
            "simd": lp.fold.simd,
            "macs_per_frame": ly.macs,
            "cycles_per_frame": lp.cycles,
            "fifo_depths": list(lp.fifo_depths),
            "weight_memory": None if lp.memory is None else lp.memory.as_dict(),
            "dsp": lp.dsp,
            "ultraram": list(lp.ultra),
            "pipeline": lp.pipeline,
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
        "frames_per_second": plan.clock_mhz * 1e6 / frame_cycles(plan, board),
        "weights_from_ddr": {
            "bits_per_frame": weight_traffic(plan, board)[0],
            "ddr_gbytes_per_s": board.ddr_gbytes_per_s,
            "cycles_per_frame": frame_cycles(plan, board),
        },
    }
