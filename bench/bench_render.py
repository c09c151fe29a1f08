"""`dawsep render` speed per shipped preset on 2 cores, and peak memory on a 60-minute file."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 44100


def synth_song(path: Path, seconds: float, seed: int = 0, block_s: float = 10.0) -> None:
    """A busy stereo test signal (chords with envelopes, a kick-like thump, noise), written in
    blocks so an hour-long file never sits in memory."""
    rng = np.random.default_rng(seed)
    with sf.SoundFile(path, "w", SR, 2, subtype="PCM_16", format="FLAC") as f:
        done = 0
        total = int(seconds * SR)
        while done < total:
            n = min(int(block_s * SR), total - done)
            t = (done + np.arange(n)) / SR
            beat = (t * 2.0) % 1.0  # 120 bpm
            env = np.exp(-6 * beat)
            chord = sum(np.sin(2 * np.pi * f0 * t) for f0 in (220.0, 277.2, 329.6, 440.0)) / 4
            kick = np.sin(2 * np.pi * 55 * t) * np.exp(-25 * beat)
            noise = rng.standard_normal(n) * 0.02 * np.exp(-40 * ((t * 4) % 1.0))
            mono = 0.35 * chord * env + 0.4 * kick + noise
            x = np.stack([mono, np.roll(mono, 11)], axis=1) * 0.8
            f.write(x.astype(np.float32))
            done += n


def dawsep_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "dawsep"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dawsep.cli"]


def timed(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (MB) of one command, measured in a fresh wrapper process."""
    wrapper = ("import resource, subprocess, sys, time, json; t=time.perf_counter(); "
               "r=subprocess.run(sys.argv[1:]); "
               "print(json.dumps([time.perf_counter()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode]))")
    res = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    wall, rss_kb, rc = json.loads(res.stdout.strip().splitlines()[-1])
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({rc}): {res.stderr[-2000:]}")
    return wall, rss_kb // 1024


def _length(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def memory_growth(long_s: float, long_rss: int, short_s: float, short_rss: int, tolerance: float = 0.15) -> str:
    """What two runs of one command on files of two lengths say about memory (peak RSS in MB):
    it did not grow with length when the longer file's peak is within ``tolerance`` of the
    shorter's."""
    ratio = long_rss / max(short_rss, 1)
    both = (f"peak RSS {long_rss} MB for the {_length(long_s)} file against {short_rss} MB for the "
            f"{_length(short_s)} one")
    if ratio <= 1 + tolerance:
        return f"memory did not grow with length: {both}"
    return f"memory grew with length: {both} ({ratio:.1f}x)"


def chain_only_presets(folder: Path) -> dict[str, Path]:
    """Each shipped preset without its [separate] section: the effect chain alone, as when
    rendering stems that are already separated (separation speed is the separation section's)."""
    import re
    from importlib import resources

    from dawsep.presets import list_presets

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in list_presets():
        text = resources.files("dawsep._presets").joinpath(f"{name}.toml").read_text()
        path = folder / f"{name}.toml"
        path.write_text(re.sub(r"(?ms)^\[separate\]\n.*?(?=^\[)", "", text))
        out[name] = path
    return out


def run(quick: bool = False) -> str:
    from dawsep.presets import load_preset

    song_s = 20.0 if quick else 60.0
    copies = 2 if quick else 4
    hour_s = 300.0 if quick else 3600.0
    lines = ["## Render (`dawsep render`)", ""]
    with tempfile.TemporaryDirectory(prefix="dawsep-bench-") as tmp:
        tmp = Path(tmp)
        songs = tmp / "songs"
        songs.mkdir()
        for i in range(copies):
            synth_song(songs / f"song{i}.flac", song_s, seed=i)
        lines += [f"{copies} synthetic stereo 44.1 kHz songs of {song_s:.0f} s each ({copies * song_s / 60:.0f} min), "
                  "FLAC 24-bit out, rendered through each shipped preset's effect chain (its `[separate]` step left out: "
                  "this is the cost of the effects on stems you already have). Real-time factor = audio seconds / wall seconds "
                  "(higher is faster), including process start-up, decoding and encoding.", "",
                  "| preset | chain steps | RTF, `--jobs 2` (2 cores) | RTF, `--jobs 1` (1 song) |", "|---|---|---|---|"]
        presets = chain_only_presets(tmp / "presets")
        short_rss = {}
        for name, preset in presets.items():
            steps = len(load_preset(str(preset)).chain)
            wall2, _ = timed([*dawsep_cmd(), "render", str(songs), "-o", str(tmp / f"o2-{name}"), "-p", str(preset),
                              "-j", "2", "-q"])
            wall1, short_rss[name] = timed([*dawsep_cmd(), "render", str(songs / "song0.flac"), "-o", str(tmp / f"o1-{name}"),
                              "-p", str(preset), "-q"])
            lines.append(f"| {name} | {steps} | {copies * song_s / wall2:.0f}x | {song_s / wall1:.0f}x |")
        cmd_doc = "dawsep render SONGS -o OUT -p PRESET -j 2 -q"
        lines += ["", f"Command: `{cmd_doc}` (and `-j 1` on one song), timed by `bench/bench_render.py`.", ""]

        hour = tmp / "hour.flac"
        synth_song(hour, hour_s, seed=9)
        size_mb = hour.stat().st_size / 1e6
        wall, rss = timed([*dawsep_cmd(), "render", str(hour), "-o", str(tmp / "ohour"), "-p", str(presets["piano"]),
                           "-q"])
        out_frames = sf.info(str(next((tmp / "ohour" / "hour").glob("*.flac")))).frames
        assert out_frames == int(hour_s * SR), out_frames
        lines += ["### Long files",
                  "",
                  f"A {hour_s / 60:.0f}-minute stereo 44.1 kHz file ({size_mb:.0f} MB FLAC, "
                  f"{hour_s * SR * 2 * 4 / 1e6:.0f} MB as float32) through the piano preset's effect chain: "
                  f"**peak RSS {rss} MB**, {wall:.0f} s wall ({hour_s / wall:.0f}x real time); "
                  f"{memory_growth(hour_s, rss, song_s, short_rss['piano'])} (the `--jobs 1` run above). "
                  f"Command: `dawsep render hour.flac -o OUT -p piano`, peak RSS from `getrusage(RUSAGE_CHILDREN)`.",
                  ""]
    return "\n".join(lines)
