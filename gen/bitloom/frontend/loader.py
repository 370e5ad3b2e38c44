"""Reading an ONNX file, with errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import onnx

from bitloom.errors import BitloomError


def read_model(source: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Load ``source`` with its external-data files; returns the model and a display name."""
    if isinstance(source, onnx.ModelProto):
        check_text(source, "<ModelProto>")
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
    check_text(model, str(path))
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


def check_text(model: onnx.ModelProto, name: str) -> None:
    """Every name, op type and string attribute is text. protobuf hands back ``bytes`` for a
    string field that is not valid UTF-8 (a corrupted file), which nothing downstream
    expects."""
    graph = model.graph
    fields = [("an opset domain", o.domain) for o in model.opset_import]
    for i, node in enumerate(graph.node):
        where = f"node #{i} ({node.op_type if isinstance(node.op_type, str) else '?'})"
        fields += [(where, t) for t in (node.name, node.op_type, node.domain, *node.input,
                                        *node.output)]
        for a in node.attribute:
            fields.append((where, a.name))
            for s in (a.s, *a.strings):
                try:
                    s.decode()
                except UnicodeDecodeError:
                    fields.append((where, s))
    fields += [("an initializer", t.name) for t in graph.initializer]
    fields += [("a graph input or output", v.name) for v in (*graph.input, *graph.output)]
    for where, text in fields:
        if isinstance(text, bytes):
            raise BitloomError(
                f"{name}: {where} holds a string that is not valid UTF-8 ({text[:40]!r}); the "
                "file is corrupted. Re-export it.")
