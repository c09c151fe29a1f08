"""The demo song shipped in ``demo/``: one generated arrangement with all five parts, rendered with the
held-out MuseScore General soundfont (so it is never training material), 16-bit FLAC."""
from __future__ import annotations

import os
import shutil
import tempfile

from dawsep.errors import DawsepError
from dawsep.train.data.render import Renderer
from dawsep.train.data.score import STEMS
from dawsep.train.data.song import SongSpec, render_song
from dawsep.train.data.soundfonts import heldout_soundfont

MAX_MIX_BYTES = 3_000_000
MAX_TOTAL_BYTES = 8_000_000


def make_demo(out: str, seconds: float = 30.0, seed: int = 2026) -> dict:
    """Write ``out/demo_song.flac`` and ``out/demo_song.reference/`` (stems, piano.mid, meta.json)."""
    font = heldout_soundfont()
    renderer = Renderer()
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dawsep-demo-") as tmp:
        # Prefer the full length: try many seeds at 30 s before accepting a shorter song.
        for dur in (seconds, seconds * 0.9, seconds * 0.8, seconds * 0.7):
            for index in range(24):
                spec = SongSpec("test", "demo", index, round(dur, 2), seed)
                song_dir = os.path.join(tmp, f"s{index}-{dur:.0f}")
                meta = render_song(spec, song_dir, renderer, test_font=font, bits=16)
                if set(meta["stems_present"]) != set(STEMS):
                    shutil.rmtree(song_dir)
                    continue
                sizes = {f: os.path.getsize(os.path.join(song_dir, f)) for f in os.listdir(song_dir)}
                ref_bytes = sum(sizes[f"{s}.flac"] for s in STEMS) + sizes["piano.mid"] + sizes["meta.json"]
                if sizes["mixture.flac"] <= MAX_MIX_BYTES and sizes["mixture.flac"] + ref_bytes <= MAX_TOTAL_BYTES:
                    _install(song_dir, out)
                    renderer.close()
                    return meta
                shutil.rmtree(song_dir)
        renderer.close()
    raise DawsepError("no demo seed produced a five-stem song within the size limits")


def _install(song_dir: str, out: str) -> None:
    ref = os.path.join(out, "demo_song.reference")
    shutil.rmtree(ref, ignore_errors=True)
    os.makedirs(ref)
    shutil.copyfile(os.path.join(song_dir, "mixture.flac"), os.path.join(out, "demo_song.flac"))
    for f in [f"{s}.flac" for s in STEMS] + ["piano.mid", "meta.json"]:
        shutil.copyfile(os.path.join(song_dir, f), os.path.join(ref, f))
