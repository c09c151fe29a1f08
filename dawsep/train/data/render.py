"""FluidSynth through ctypes against Debian's libfluidsynth: every part of a song in one pass.

Why this shape:
- One synth per song, each part on its own MIDI channel and its own *audio group*, so one render
  pass yields a separate stereo buffer per part ("per-part renders in one fluidsynth process").
- A fresh synth per song: a reused synth carries voice state from earlier songs into later ones
  (measured: ~3e-4 differences after ``system_reset``), which would make audio depend on which
  songs a worker rendered before. Fresh synths are cheap because a long-lived *holder* synth per
  soundfont keeps FluidSynth's sample cache warm (``sfload`` then takes ~0.03 s instead of 0.4 s).
- Events are applied on FluidSynth's 64-sample block grid, so event times are quantised to it and
  the returned notes carry the quantised times: the labels are exactly what was rendered.
- No audio driver is ever created.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
from dataclasses import dataclass

import numpy as np

from dawsep.errors import DawsepError
from dawsep.train.data.score import SAMPLE_RATE, Note, Part

BLOCK = 64  # FLUID_BUFSIZE
N_GROUPS = 16
DRUM_CHANNEL = 9


class SynthError(DawsepError):
    """libfluidsynth is missing or a soundfont cannot be loaded."""

    exit_code = 10


_lib = None


def _load_lib():
    global _lib
    if _lib is not None:
        return _lib
    names = [os.environ.get("DAWSEP_LIBFLUIDSYNTH", ""), "libfluidsynth.so.3", ctypes.util.find_library("fluidsynth") or ""]
    err = None
    for name in [n for n in names if n]:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as e:  # try the next name
            err = e
    else:
        raise SynthError(f"libfluidsynth not found ({err}); install the Debian package 'fluidsynth'")
    P, I, D, S = ctypes.c_void_p, ctypes.c_int, ctypes.c_double, ctypes.c_char_p
    sigs = {
        "new_fluid_settings": ([], P), "delete_fluid_settings": ([P], None),
        "new_fluid_synth": ([P], P), "delete_fluid_synth": ([P], None),
        "fluid_settings_setnum": ([P, S, D], I), "fluid_settings_setint": ([P, S, I], I),
        "fluid_synth_sfload": ([P, S, I], I),
        "fluid_synth_program_select": ([P, I, I, I, I], I),
        "fluid_synth_noteon": ([P, I, I, I], I), "fluid_synth_noteoff": ([P, I, I], I),
        "fluid_synth_cc": ([P, I, I, I], I), "fluid_synth_pitch_bend": ([P, I, I], I),
        "fluid_synth_nwrite_float": ([P, I, P, P, P, P], I),
        "fluid_set_log_function": ([I, P, P], P),
    }
    for fn, (args, res) in sigs.items():
        f = getattr(lib, fn)
        f.argtypes, f.restype = args, res
    for level in range(1, 5):  # ERR, WARN, INFO, DBG: a missing preset is handled, not logged
        lib.fluid_set_log_function(level, None, None)
    _lib = lib
    return lib


def _new_synth(lib, groups: int):
    s = lib.new_fluid_settings()
    lib.fluid_settings_setnum(s, b"synth.sample-rate", float(SAMPLE_RATE))
    lib.fluid_settings_setint(s, b"synth.reverb.active", 0)  # effects come from pedalboard, drawn at random
    lib.fluid_settings_setint(s, b"synth.chorus.active", 0)
    lib.fluid_settings_setint(s, b"synth.polyphony", 1024)  # never steal voices across parts
    lib.fluid_settings_setint(s, b"synth.audio-channels", groups)
    lib.fluid_settings_setint(s, b"synth.audio-groups", groups)
    lib.fluid_settings_setint(s, b"synth.cpu-cores", 1)
    syn = lib.new_fluid_synth(s)
    if not syn:
        lib.delete_fluid_settings(s)
        raise SynthError("new_fluid_synth failed")
    return s, syn


@dataclass
class RenderedPart:
    part: Part
    channel: int
    program: int  # the program actually selected (after fallback)
    bank: int
    audio: np.ndarray  # (2, N) float32


class Renderer:
    """Renders :class:`Part` lists; keep one per process (it holds the sample caches)."""

    def __init__(self):
        self.lib = _load_lib()
        self._holders: dict[str, tuple] = {}

    def _warm(self, path: str) -> None:
        if path in self._holders:
            return
        s, syn = _new_synth(self.lib, 1)
        if self.lib.fluid_synth_sfload(syn, path.encode(), 0) < 0:
            self.lib.delete_fluid_synth(syn)
            self.lib.delete_fluid_settings(s)
            raise SynthError(f"cannot load soundfont {path}")
        self._holders[path] = (s, syn)

    def close(self) -> None:
        for s, syn in self._holders.values():
            self.lib.delete_fluid_synth(syn)
            self.lib.delete_fluid_settings(s)
        self._holders.clear()

    def render(self, parts: list[tuple[Part, str]], duration: float, tuning_cents: list[float] | None = None,
               pans: list[int] | None = None) -> list[RenderedPart]:
        """Render each (part, soundfont path) to its own stereo buffer of ``round(duration*SR)`` samples."""
        lib = self.lib
        n_out = int(round(duration * SAMPLE_RATE))
        n_blocks = math.ceil(n_out / BLOCK) + 1
        melodic = [c for c in range(16) if c != DRUM_CHANNEL]
        chans, used = [], 0
        for part, _ in parts:
            if part.drums:
                chans.append(DRUM_CHANNEL)
            else:
                if used >= len(melodic):
                    raise SynthError("more than 15 melodic parts in one song")
                chans.append(melodic[used])
                used += 1
        if len([c for c in chans if c == DRUM_CHANNEL]) > 1:
            raise SynthError("more than one drum part in one song")
        paths = sorted({os.path.realpath(p) for _, p in parts})
        for p in paths:
            self._warm(p)
        settings, syn = _new_synth(lib, N_GROUPS)
        try:
            sfids = {p: lib.fluid_synth_sfload(syn, p.encode(), 0) for p in paths}
            results = []
            events = []  # (block, order, kind, chan, a, b)
            for i, ((part, path), ch) in enumerate(zip(parts, chans)):
                sfid = sfids[os.path.realpath(path)]
                bank = 128 if part.drums else 0
                program = self._select(syn, ch, sfid, bank, part.program, part.drums)
                # Tuning (pitch bend, default range +-2 semitones) and pan before the first note.
                cents = tuning_cents[i] if tuning_cents else 0.0
                lib.fluid_synth_pitch_bend(syn, ch, int(np.clip(8192 + cents / 200.0 * 8192, 0, 16383)))
                lib.fluid_synth_cc(syn, ch, 10, int(pans[i]) if pans else 64)
                lib.fluid_synth_cc(syn, ch, 7, 100)
                kept = []
                for n in part.notes:
                    b0 = int(round(n.start * SAMPLE_RATE / BLOCK))
                    b1 = int(round(n.end * SAMPLE_RATE / BLOCK))
                    last = n_out // BLOCK  # labels never run past the audio
                    if b0 >= last:
                        continue
                    b1 = min(max(b1, b0 + 1), last)
                    events.append((b0, 2, 1, ch, n.pitch, n.velocity))
                    events.append((b1, 0, 0, ch, n.pitch, 0))
                    kept.append(Note(n.pitch, b0 * BLOCK / SAMPLE_RATE, b1 * BLOCK / SAMPLE_RATE, n.velocity))
                cc_kept = []
                for t, ctl, val in part.cc:
                    b = int(np.clip(round(t * SAMPLE_RATE / BLOCK), 0, n_blocks - 1))
                    events.append((b, 1, 2, ch, ctl, val))
                    cc_kept.append((b * BLOCK / SAMPLE_RATE, ctl, val))
                rp = Part(part.stem, part.role, program, kept, cc_kept, part.drums)
                results.append(RenderedPart(rp, ch, program, bank, np.zeros((2, n_blocks * BLOCK), np.float32)))
            # Same-block ordering: note-offs, then controllers, then note-ons (a re-struck key is
            # released before it sounds again). Ties broken by channel/pitch for determinism.
            events.sort()
            group_bufs = [np.zeros((2, n_blocks * BLOCK), np.float32) for _ in range(N_GROUPS)]
            for r in results:
                group_bufs[r.channel] = r.audio
            left = (ctypes.c_void_p * N_GROUPS)()
            right = (ctypes.c_void_p * N_GROUPS)()
            pos = 0

            def write_to(block: int) -> None:
                nonlocal pos
                if block <= pos:
                    return
                for g in range(N_GROUPS):
                    left[g] = group_bufs[g].ctypes.data + 4 * pos * BLOCK
                    right[g] = group_bufs[g][1].ctypes.data + 4 * pos * BLOCK
                lib.fluid_synth_nwrite_float(syn, (block - pos) * BLOCK, left, right, None, None)
                pos = block

            for b, _, kind, ch, a, v in events:
                write_to(b)
                if kind == 1:
                    lib.fluid_synth_noteon(syn, ch, a, v)
                elif kind == 0:
                    lib.fluid_synth_noteoff(syn, ch, a)
                else:
                    lib.fluid_synth_cc(syn, ch, a, v)
            write_to(n_blocks)
            for r in results:
                r.audio = np.ascontiguousarray(r.audio[:, :n_out])
            return results
        finally:
            lib.delete_fluid_synth(syn)
            lib.delete_fluid_settings(settings)

    def _select(self, syn, ch: int, sfid: int, bank: int, program: int, drums: bool) -> int:
        tries = [program]
        if drums:
            tries += [0]
        else:
            tries += [program - program % 8, 0]  # same family's first program, then the grand piano
        for p in tries:
            if self.lib.fluid_synth_program_select(syn, ch, sfid, bank, p) == 0:
                return p
        raise SynthError(f"soundfont {sfid} has neither program {program} nor a fallback (bank {bank})")
