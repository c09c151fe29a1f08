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
