"""``bitloom dse``: a tiny sweep end to end, and the Pareto bookkeeping."""

from __future__ import annotations

import argparse
import csv
import xml.dom.minidom

import numpy as np
import onnxruntime as ort
import pytest
from float_models import float_mlp

from bitloom.dse import COLUMNS, add_arguments, command, format_pairs, pareto, read_csv
from bitloom.errors import BitloomError


def dominated(p: dict, rows: list[dict], cost: str, sign: float) -> bool:
    """Some other row is at least as accurate and as cheap/fast, and better in one."""
    return any(q["accuracy"] >= p["accuracy"] and sign * q[cost] >= sign * p[cost]
               and (q["accuracy"], q[cost]) != (p["accuracy"], p[cost]) for q in rows)


def test_pareto_flags_by_hand():
    points = [(0.9, -100), (0.8, -50), (0.85, -120), (0.9, -100), (0.7, -50)]
    assert pareto(points) == [True, True, False, True, False]


def test_format_pairs():
    assert format_pairs(["int4", "e2m1"]) == [("int4", "int4"), ("e2m1", "e2m1")]
    assert len(format_pairs(["int4", "e2m1"], cross=True)) == 4
    assert format_pairs([], weights=["int4"], acts=["int8", "e4m3"]) == [
        ("int4", "int8"), ("int4", "e4m3")]
    with pytest.raises(BitloomError, match="unknown format"):
        format_pairs(["int4", "inf8"])


def test_tiny_sweep(tmp_path):
    """2 formats x 1 folding on a small MLP: CSV columns, consistent fronts, the plot."""
    model = float_mlp(3, sizes=(16, 12, 8))
    path = tmp_path / "mlp.onnx"
    path.write_bytes(model.SerializeToString())
    rng = np.random.default_rng(0)
    calib, x = (rng.normal(size=(n, 16)).astype(np.float32) for n in (64, 200))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    np.savez(tmp_path / "calib.npz", x=calib)
    np.savez(tmp_path / "eval.npz", x=x, y=y.argmax(1))
    out = tmp_path / "dse"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(path), "--calib", str(tmp_path / "calib.npz"), "--eval",
                              str(tmp_path / "eval.npz"), "--board", "pynq-z2", "--formats",
                              "int4", "e2m1", "--targets", "12", "--jobs", "2", "--method",
                              "minmax", "--out", str(out)])
    assert command(args) == 0
    with (out / "pareto.csv").open() as f:
        assert tuple(csv.DictReader(f).fieldnames) == COLUMNS
    rows = read_csv(out / "pareto.csv")
    assert [(r["weights"], r["acts"]) for r in rows] == [("int4", "int4"), ("e2m1", "e2m1")]
    assert {r["family"] for r in rows} == {"int", "minifloat"}
    for r in rows:
        assert 0.5 < r["accuracy"] <= 1 and r["LUT"] > 0 and r["cycles_per_frame"] <= 12
        assert r["fits"] and r["fastest_fit"]  # one folding each, tiny: both fit
        assert r["fps"] == pytest.approx(100e6 / r["cycles_per_frame"], rel=1e-3)
        assert (out / "models" / f"{r['weights']}-{r['acts']}.onnx").is_file()
    for flag, cost, sign in (("pareto_lut", "LUT", -1), ("pareto_fps", "fps", 1)):
        flagged = [r for r in rows if r[flag]]
        assert flagged
        assert not any(dominated(r, rows, cost, sign) for r in flagged)
        assert all(dominated(r, rows, cost, sign) for r in rows if not r[flag])
    svg = (out / "pareto.svg").read_text()
    assert xml.dom.minidom.parseString(svg).documentElement.tagName == "svg"
    assert "int4" in svg
