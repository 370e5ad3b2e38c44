"""Fuzz: 1,000 mutated models through ``bitloom inspect`` (and ``run`` for a quarter of
them) in-process. Every one must end in exit 0 or exit 2 with a message: no exception may
escape ``main``, no other exit code, no hang (a per-model time budget)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import tempfile
import traceback
from pathlib import Path

import numpy as np
import pytest
from fuzz_models import mutant

from bitloom.cli import main

TOTAL = 1000
CHUNKS = 20
BUDGET_SECONDS = 10.0
FAILURE_DIR = Path(tempfile.gettempdir()) / "bitloom-fuzz"


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"no result within {BUDGET_SECONDS} s")


def _call(argv: list[str]) -> str | None:
    """None when ``main(argv)`` ends in exit 0 or 2, otherwise what went wrong."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, BUDGET_SECONDS)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
                io.StringIO()):
            code = main(argv)
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # any escape is the failure being looked for
        return traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if code in (0, 2):
        return None
    return f"exit status {code!r}"


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_mutated_models_exit_cleanly(tmp_path, chunk):
    failures = []
    for index in range(chunk, TOTAL, CHUNKS):
        data, description, shape = mutant(index)
        path = tmp_path / f"m{index}.onnx"
        path.write_bytes(data)
        problem = _call(["inspect", str(path)])
        command = "inspect"
        if problem is None and index % 4 == 0:
            x = np.random.default_rng(index).normal(size=(2, *shape[1:])).astype(np.float32)
            np.save(tmp_path / "x.npy", x)
            command = "run"
            problem = _call(["run", str(path), "--input", str(tmp_path / "x.npy"),
                             "--output", str(tmp_path / "y.npy")])
        if problem is not None:
            failures.append({"index": index, "mutation": description, "command": command,
                             "problem": problem})
    if failures:
        FAILURE_DIR.mkdir(exist_ok=True)
        (FAILURE_DIR / f"chunk{chunk}-{os.getpid()}.json").write_text(json.dumps(failures))
    assert not failures, "\n\n".join(
        f"#{f['index']} {f['command']} [{f['mutation']}]\n{f['problem']}" for f in failures[:5])
