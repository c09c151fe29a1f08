"""make daw-test, step 2: put a song on the session's track at timeline sample 0 and make the
session range the song, by editing the saved session file (Ardour's Lua API has no headless
import). The song goes into the session's audio folder as one float WAV per channel, as
Ardour's own import would store it.

    python scripts/daw/place_audio.py SESSION_DIR SESSION_NAME SONG
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import soundfile as sf


def place(session_dir: Path, name: str, song: Path) -> int:
    """Returns the song's length in samples."""
    path = session_dir / f"{name}.ardour"
    tree = ET.parse(path)
    root = tree.getroot()
    audio, rate = sf.read(song, dtype="float32", always_2d=True)
    if int(root.get("sample-rate")) != rate:
        raise SystemExit(f"{song} is at {rate} Hz, the session at {root.get('sample-rate')} Hz")
    n = audio.shape[0]
    next_id = int(root.get("id-counter"))

    def new_id() -> str:
        nonlocal next_id
        next_id += 1
        return str(next_id)

    files = session_dir / "interchange" / name / "audiofiles"
    sources = root.find("Sources")
    src_ids = []
    for ch, tag in enumerate(("L", "R")[:audio.shape[1]] if audio.shape[1] == 2 else ("M",)):
        fname = f"song-{tag}.wav"
        sf.write(files / fname, audio[:, ch], rate, subtype="FLOAT")
        src_ids.append(new_id())
        ET.SubElement(sources, "Source", {"name": fname, "type": "audio", "flags": "", "id": src_ids[-1],
                                          "captured-for": "", "channel": "0", "origin": "", "gain": "1"})

    def region(whole: bool) -> dict:
        attrs = {"name": "song", "id": new_id(), "type": "audio", "start": "0", "length": str(n),
                 "position": "0", "muted": "0", "opaque": "1", "locked": "0", "video-locked": "0",
                 "automatic": "0", "whole-file": "1" if whole else "0", "import": "0", "external": "0",
                 "sync-marked": "0", "left-of-split": "0", "right-of-split": "0", "hidden": "0",
                 "position-locked": "0", "valid-transients": "0", "sync-position": "0", "ancestral-start": "0",
                 "ancestral-length": "0", "stretch": "1", "shift": "1", "layering-index": "0",
                 "envelope-active": "0", "default-fade-in": "0", "default-fade-out": "0", "fade-in-active": "0",
                 "fade-out-active": "0", "scale-amplitude": "1", "channels": str(len(src_ids))}
        for i, s in enumerate(src_ids):
            attrs[f"source-{i}"] = attrs[f"master-source-{i}"] = s
        return attrs

    ET.SubElement(root.find("Regions"), "Region", region(True))
    track = next(r for r in root.find("Routes") if r.get("name") == "song")
    playlist = next(p for p in root.find("Playlists") if p.get("id") == track.get("audio-playlist"))
    ET.SubElement(playlist, "Region", region(False))
    ET.SubElement(root.find("Locations"), "Location", {
        "id": new_id(), "name": "session", "start": "0", "end": str(n), "flags": "IsSessionRange",
        "locked": "0", "timestamp": "0", "cue": "0"})
    root.set("id-counter", str(next_id + 1))
    tree.write(path, encoding="UTF-8", xml_declaration=True)
    return n


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    print(f"daw-test: {place(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))} samples placed at 0")
