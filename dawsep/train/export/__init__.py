"""torch -> ONNX export with parity checks and dawsep metadata (training side; needs torch + onnx)."""

import json as _json
import os as _os


def register(models_dir: str, kind: str, name: str, entry: dict) -> None:
    """Add or replace ``registry.json``'s ``[kind][name]`` entry (the runtime checks its sha256)."""
    path = _os.path.join(models_dir, "registry.json")
    reg = _json.load(open(path)) if _os.path.exists(path) else {}
    reg.setdefault(kind, {})[name] = entry
    tmp = f"{path}.tmp-{_os.getpid()}"
    with open(tmp, "w") as fh:
        _json.dump(reg, fh, indent=1, sort_keys=True)
    _os.replace(tmp, path)


def ort_session(path_or_bytes, threads: int = 2):
    """An ONNX Runtime CPU session for the exporters' parity and speed checks (a path or the model's
    bytes): ``threads`` intra-op threads, one inter-op, denormals flushed to zero (decaying GRU
    states and filter tails in denormal range slow CPU kernels many times over), quiet logs (the
    overridable stem input's "not a constant" notice is by design)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    so.log_severity_level = 3
    return ort.InferenceSession(path_or_bytes, so, providers=["CPUExecutionProvider"])
