"""Reading an ONNX file, with errors a user can act on; and the declared input format a
model may carry in its metadata."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import onnx

from bitloom.errors import BitloomError
from bitloom.formats import Format, Int
from bitloom.formats.names import parse_format

#: metadata keys of a declared input format (written into a design folder's model.onnx)
INPUT_FORMAT_KEY, INPUT_SCALE_KEY = "bitloom.input_format", "bitloom.input_scale"


@dataclass(frozen=True)
class DeclaredInput:
    """How a model's float input arrives, for a model whose first compute layer reads it
    unquantized: codes of ``fmt``, each meaning ``code * scale`` (``1/255`` for 8-bit
    images in [0, 1]); ``scale`` keeps the user's spelling."""

    fmt: Format
    scale: float
    spelling: tuple[str, str]

    @classmethod
    def parse(cls, fmt: str, scale: str | float | None) -> DeclaredInput:
        try:
            parsed = parse_format(fmt)
        except ValueError as exc:
            raise BitloomError(f"--input-format {fmt!r}: {exc}") from None
        if not isinstance(parsed, Int) or parsed.bipolar:
            raise BitloomError(f"--input-format {fmt!r}: give an integer format of 2 to 16 "
                               "bits, e.g. uint8 for 8-bit images.")
        spelled = "1" if scale is None else str(scale)
        try:
            value = float(Fraction(spelled.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            value = 0.0
        if not value > 0 or value == float("inf"):
            raise BitloomError(f"--input-scale {spelled!r}: give a positive number or a "
                               "fraction, e.g. 1/255.")
        return cls(parsed, value, (fmt, spelled))

    def annotate(self, model: onnx.ModelProto) -> None:
        """Record the declaration in ``model``'s metadata, which :func:`declared_input`
        reads back."""
        keys = (INPUT_FORMAT_KEY, INPUT_SCALE_KEY)
        keep = [p for p in model.metadata_props if p.key not in keys]
        del model.metadata_props[:]
        model.metadata_props.extend(keep)
        for key, value in zip(keys, self.spelling, strict=True):
            model.metadata_props.add(key=key, value=value)


def declared_input(model: onnx.ModelProto) -> DeclaredInput | None:
    """The input format a model's metadata declares, if any."""
    meta = {p.key: p.value for p in model.metadata_props}
    if INPUT_FORMAT_KEY not in meta:
        return None
    return DeclaredInput.parse(meta[INPUT_FORMAT_KEY], meta.get(INPUT_SCALE_KEY))


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
