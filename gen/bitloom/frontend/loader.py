"""Reading an ONNX file, with errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import onnx

from bitloom.errors import BitloomError


def read_model(source: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Load ``source`` with its external-data files; returns the model and a display name."""
    if isinstance(source, onnx.ModelProto):
        return source, "<ModelProto>"
    path = Path(source)
    if not path.is_file():
        raise BitloomError(f"{path}: no such file. Pass the path of an .onnx model.")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several types for garbage input
        raise BitloomError(
            f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc}). "
            "The file may be truncated or not ONNX at all; re-export it."
        ) from None
    if not model.graph.node and not model.graph.input:
        raise BitloomError(f"{path}: the file parsed but holds no ONNX graph; re-export it.")
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except (FileNotFoundError, OSError) as exc:
        missing = getattr(exc, "filename", None) or str(exc)
        raise BitloomError(
            f"{path}: external data file {missing} is missing; keep the weight files that "
            "were saved with the model in the same folder."
        ) from None
    except Exception as exc:
        raise BitloomError(f"{path}: cannot read its external data ({exc}).") from None
    return model, str(path)
