"""Score transcribers on the test split: mir_eval note/offset/velocity/frame F1 on the clean piano
stem, the mixture and the default separator's piano stem (24 songs x 30 s).

    python scripts/score_transcribers.py [--data ROOT] MODEL ...

MODEL: ``shipped`` (dawsep/models/transcriber.onnx), an .onnx file, or a training checkpoint (.pt,
exported to a temporary ONNX file first). Prints one JSON line per model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data", default=os.path.expanduser("~/.cache/dawsep/data"))
    ap.add_argument("--songs", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    from dawsep.separate import Separator
    from dawsep.train.evaluate import evaluate_transcriber, transcription_songs

    songs = transcription_songs(args.data, args.songs, args.seconds)
    sep = Separator("default", threads=2)
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.models:
            t0 = time.time()
            path = os.path.join("dawsep", "models", "transcriber.onnx") if m == "shipped" else m
            if path.endswith(".pt"):
                from dawsep.train.export.transcriber import export_checkpoint

                onnx_path = os.path.join(tmp, f"{abs(hash(m))}.onnx")
                export_checkpoint(path, onnx_path, rtf_seconds=None)
                path = onnx_path
            res = evaluate_transcriber(path, songs, sep, threads=2)
            print(json.dumps({"model": m, **res, "seconds": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    main()
