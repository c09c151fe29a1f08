"""TiMidity++ playing the Freepats patches: one part per run, sample-exact, with measured corrections.

A lo-fi timbre source of corpus v2 (``freepats``; what the patch set holds is read by the module
``freepats``). Each part is one headless ``timidity`` run on a one-part MIDI file with one tick per
sample (as :func:`score.write_label_midi`), so event times are sample-exact.

What is played is pinned, whatever the machine's TiMidity setup:

- The patches come from :data:`freepats.FREEPATS_CFG`, passed with ``-c``. TiMidity always reads
  ``/etc/timidity/timidity.cfg`` first (Debian points it at FluidR3_GM.sf2); an explicit patch
  entry of a later config wins over every soundfont, so only programs and drum keys that
  ``freepats.cfg`` itself defines are ever sent (:func:`freepats.played_program` picks the nearest
  defined program of the same GM family; drum keys it lacks are not played). ``$HOME`` is a temporary
  folder, so no ``~/.timidity.cfg`` is read. Rendering with an empty system config gives the same
  bytes (checked when this was written).
- Reverb, chorus and delay are off (effects are drawn by ``production``), noise shaping is off,
  the output is 24-bit stereo WAV at 44.1 kHz, and the initial silence is kept.
- Onsets: a note-on at tick t starts sounding at sample t (measured over 30-s parts: no offset,
  no drift; :data:`LATENCY_SAMPLES` is 0 and is removed if that ever changes). Melodic notes
  start on their label sample; a drum note is sent early by the time its patch takes to reach its
  hit beyond 1 ms (:func:`drum_hit_delay`, measured: 49 of the 56 patches within 1 ms; the cabasa
  5 ms, the cowbell 12.7 ms after a faint click, the snap 51 ms), so hits land within 1 ms of the
  label too (the part is rendered with that much pre-roll).
- Tuning: the Freepats piano recordings are up to 11 cents off the root pitch their headers state
  (electric grand up to 16). For the piano family (:data:`TUNED_PROGRAMS`, what the piano stem
  plays and its labels describe) every sample is measured once (rendered at a key it serves,
  first-partial pitch by :func:`pitch.measure_pitch`) and corrected with TiMidity's per-sample
  ``tune=``: the grand piano is then within 1 cent over the keyboard. Other families keep their
  recorded tuning (bass and guitar within ~5 cents). Measurements are cached on disk by patch content.

The seed picks TiMidity's resampler, Gauss (its default) or linear interpolation: a small,
deterministic change of colour per part (its cubic-spline and Lagrange options render bit-identically
to linear here). The same input renders bit-identically.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache

import mido
import numpy as np
import soundfile as sf

from dawsep.train.data.freepats import (
    PACKAGES, FreepatsConfig, TimidityError, file_sha256, freepats_config, pat_zones, played_program,
)
from dawsep.train.data.pitch import measure_pitch
from dawsep.train.data.score import LABEL_TEMPO, LABEL_TPB, SAMPLE_RATE, Note

__all__ = ["render_part_timidity", "patch_tuning", "drum_hit_delay", "LATENCY_SAMPLES", "TUNED_PROGRAMS"]

TIMIDITY_BIN = "timidity"
#: TiMidity's output delay: a note-on at tick t first sounds at sample t + LATENCY_SAMPLES (measured).
LATENCY_SAMPLES = 0
#: Resamplers the seed chooses from (TiMidity's ``-EFresamp``): Gauss-like, linear.
RESAMPLERS = ("g", "l")
#: Programs whose samples are measured and tuned to equal temperament (GM piano family).
TUNED_PROGRAMS = tuple(range(8))
DRUM_CHANNEL = 9
#: Channel volume (CC7) every part starts with: the FluidSynth renderer's value.
CHANNEL_VOLUME = 100
POLYPHONY = 256
#: TiMidity's amplification (-A, percent; its default is 70). Its output is fixed-point and clips at
#: full scale: 25 puts a single forte piano note near FluidSynth's level (peak ~0.07) and leaves ~10 dB
#: of headroom for a dense pedalled part (peak ~0.3); a render that clips anyway is redone at half
#: the amplification and scaled back up.
AMPLIFICATION = 25
_CLIP = 1.0 - 2.0 ** -22
_TAIL_TICKS = SAMPLE_RATE // 10  # end of track this far after the last sample kept
_TIMEOUT_S = 600.0
_MEASURE_CACHE_VERSION = 1
#: A drum patch's hit: its first sample above this level re its peak (as the onset tests measure).
HIT_DB = -30.0
#: A drum note is sent early by its patch's hit delay beyond this (most patches hit within it, and
#: their first sound stays on the label sample).
HIT_ALLOWANCE_SAMPLES = SAMPLE_RATE // 1000


# --------------------------------------------------------------------------- measured corrections
#
# Two facts about the patches are measured once by rendering them, and cached on disk by patch content
# (``~/.cache/dawsep/hashes/freepats-*.json``; DAWSEP_HASH_CACHE overrides the folder): the tuning of
# every sample of the piano-family patches, and how long each drum patch takes to reach its hit.

def _cached(kind: str, digest: str, measure) -> list:
    from dawsep.train.data.sf2 import hash_cache_dir, write_json_atomic

    cache = os.path.join(hash_cache_dir(), f"freepats-{kind}-{digest[:16]}.json")
    try:
        with open(cache) as fh:
            data = json.load(fh)
        if data.get("version") == _MEASURE_CACHE_VERSION and data.get("sha256") == digest:
            return data["value"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    value = measure()
    try:
        write_json_atomic(cache, {"version": _MEASURE_CACHE_VERSION, "sha256": digest, "value": value})
    except OSError:
        pass
    return value


def patch_tuning(program: int) -> tuple[float, ...]:
    """Measured deviation (cents) of each sample of a Freepats program's patch from the pitch its
    header states (0.0 for samples no key plays)."""
    path = freepats_config().programs[int(program)]
    return _patch_tuning(path, file_sha256(path))


@lru_cache(maxsize=32)
def _patch_tuning(path: str, digest: str) -> tuple[float, ...]:
    return tuple(float(c) for c in _cached("tuning", digest, lambda: _measure_tuning(path)))


def _probe_keys(zones: list[tuple[float, float, float]]) -> list[int | None]:
    """A MIDI key (21..108 where possible) played by each sample (None: no key reaches it), nearest
    its root."""
    keys: list[int | None] = []
    for i, (lo, hi, root) in enumerate(zones):
        mine = [k for k in range(0, 128)
                if lo <= k <= hi and not any(z[0] <= k <= z[1] for z in zones[:i])]
        on_keyboard = [k for k in mine if 21 <= k <= 108] or mine
        keys.append(min(on_keyboard, key=lambda k: (abs(k - root), k)) if on_keyboard else None)
    return keys


def _measure_tuning(path: str) -> list[float]:
    """Render each sample of the patch once (untuned, at a key it serves, 2.6 s) and measure the
    first-partial pitch."""
    keys = _probe_keys(pat_zones(path))
    slot = 3.5
    notes = [Note(k, i * slot, i * slot + 2.6, 100) for i, k in enumerate(keys) if k is not None]
    cents = [0.0] * len(keys)
    if notes:
        n = int(round(len(keys) * slot * SAMPLE_RATE))
        y = _render(_Job(notes, [], 0, False, n, config=f"bank 0\n0 {path}\n")).mean(axis=0)
        for i, k in enumerate(keys):
            if k is not None:
                seg = y[int(i * slot * SAMPLE_RATE):int((i * slot + 3.0) * SAMPLE_RATE)]
                cents[i] = round(100 * (measure_pitch(seg, SAMPLE_RATE, k) - k), 2)
    return cents


def _tuning_cfg(program: int, cfg: FreepatsConfig) -> str:
    """Config lines redefining ``program`` with per-sample ``tune=`` corrections ('' if none)."""
    if program not in TUNED_PROGRAMS or any(o.startswith("tune=") for o in cfg.options.get(program, ())):
        return ""
    cents = patch_tuning(program)
    if not any(cents):
        return ""
    tune = ",".join(f"{-c / 100:.4f}" for c in cents)
    return f"bank 0\n{program} {cfg.programs[program]} {' '.join(cfg.options[program])} tune={tune}\n"


def drum_hit_delay(key: int) -> int:
    """Samples from a Freepats drum note-on to its hit (first sample above HIT_DB re the peak); a
    drum note is sent early by the part beyond :data:`HIT_ALLOWANCE_SAMPLES`. Most patches: 0.1-1 ms;
    the cabasa (69) 5 ms; the cowbell (56) starts with a faint click 12.7 ms before its hit."""
    path = freepats_config().drums[int(key)]
    return _drum_hit_delay(int(key), path, file_sha256(path))


@lru_cache(maxsize=256)
def _drum_hit_delay(key: int, path: str, digest: str) -> int:
    return int(_cached(f"hit-{key}", digest, lambda: _measure_hit(key)))


def _measure_hit(key: int) -> int:
    s0 = SAMPLE_RATE // 20
    y = _render(_Job([Note(key, s0 / SAMPLE_RATE, 0.2, 100)], [], 0, True, SAMPLE_RATE))
    env = np.abs(y).max(axis=0)
    if not env.max() > 0:
        return 0
    return max(0, int(np.argmax(env > env.max() * 10 ** (HIT_DB / 20))) - s0)


# --------------------------------------------------------------------------- rendering

def _timidity() -> str:
    exe = shutil.which(TIMIDITY_BIN)
    if exe is None:
        raise TimidityError(f"`{TIMIDITY_BIN}` not found; install the Debian packages {PACKAGES} (make data does)")
    return exe


@dataclass(frozen=True)
class _Job:
    """One timidity run: a part on one channel, and what to pass with it."""

    notes: list[Note]
    cc: list[tuple[float, int, int]]
    program: int                      # a program freepats.cfg (or ``config``) defines; 0 for drums
    drums: bool
    n_samples: int
    config: str = ""                  # extra config lines (tuning, a patch under measurement)
    resampler: str = RESAMPLERS[0]
    tuning_cents: float = 0.0
    pan: int = 64
    early: tuple[tuple[int, int], ...] = ()  # (drum key, samples its note-on is sent early)


def _write_midi(path: str, job: _Job, preroll: int, drum_keys: frozenset[int]) -> None:
    """One track, one channel, one tick per sample, every event ``preroll`` ticks late (drum notes
    less their ``early`` samples): notes, controllers, tuning by pitch bend."""
    ch = DRUM_CHANNEL if job.drums else 0
    end = job.n_samples + preroll + LATENCY_SAMPLES
    mid = mido.MidiFile(ticks_per_beat=LABEL_TPB)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=LABEL_TEMPO, time=0))
    track.append(mido.Message("program_change", program=job.program, channel=ch, time=0))
    track.append(mido.Message("control_change", control=7, value=CHANNEL_VOLUME, channel=ch, time=0))
    track.append(mido.Message("control_change", control=10, value=int(np.clip(job.pan, 0, 127)), channel=ch, time=0))
    if not job.drums and job.tuning_cents:  # TiMidity's default bend range is +-2 semitones, as FluidSynth's
        bend = int(np.clip(round(job.tuning_cents / 200.0 * 8192), -8192, 8191))
        track.append(mido.Message("pitchwheel", pitch=bend, channel=ch, time=0))
    early = dict(job.early)
    events = []  # (tick, order, number, message): note-offs, then controllers, then note-ons at one tick
    for n in job.notes:
        key = int(n.pitch)
        if job.drums and key not in drum_keys:
            continue
        s0 = round(n.start * SAMPLE_RATE)
        if s0 < 0 or s0 >= job.n_samples:
            continue
        t0 = s0 + preroll - early.get(key, 0)
        t1 = min(max(t0 + 1, round(n.end * SAMPLE_RATE) + preroll - early.get(key, 0)), end)
        vel = int(min(127, max(1, round(n.velocity))))
        events.append((t0, 2, key, mido.Message("note_on", note=key, velocity=vel, channel=ch)))
        events.append((t1, 0, key, mido.Message("note_off", note=key, velocity=0, channel=ch)))
    for t, ctl, val in job.cc:
        tick = int(np.clip(round(t * SAMPLE_RATE), 0, job.n_samples)) + preroll
        events.append((tick, 1, int(ctl), mido.Message("control_change", control=int(ctl),
                                                       value=int(np.clip(val, 0, 127)), channel=ch)))
    events.sort(key=lambda e: e[:3])
    now = 0
    for tick, _, _, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=max(0, end + _TAIL_TICKS - now)))
    mid.save(path)


def _render(job: _Job) -> np.ndarray:
    """``(2, n_samples)`` float32 at the level of :data:`AMPLIFICATION`, never clipped (a clipped
    render is redone at a lower amplification and scaled up)."""
    amplification = AMPLIFICATION
    while True:
        y = _render_once(job, amplification)
        if amplification <= 1 or not (np.abs(y) >= _CLIP).any():
            return y if amplification == AMPLIFICATION else y * np.float32(AMPLIFICATION / amplification)
        amplification = max(1, amplification // 2)


def _render_once(job: _Job, amplification: int) -> np.ndarray:
    cfg = freepats_config()
    exe = _timidity()
    preroll = max((d for _, d in job.early), default=0)
    with tempfile.TemporaryDirectory(prefix="dawsep-timidity-") as tmp:
        mid, wav = os.path.join(tmp, "part.mid"), os.path.join(tmp, "part.wav")
        configs = ["-c", cfg.path]
        if job.config:
            with open(os.path.join(tmp, "part.cfg"), "w") as fh:
                fh.write(job.config)
            configs += ["-c", os.path.join(tmp, "part.cfg")]
        _write_midi(mid, job, preroll, frozenset(cfg.drums))
        cmd = [exe, *configs, "-idq", "--preserve-silence", "-s", str(SAMPLE_RATE), "-Ow2Ssl", "-o", wav,
               "-EFreverb=d", "-EFchorus=d", "-EFdelay=d", "-EFns=0", f"-EFresamp={job.resampler}",
               "-p", str(POLYPHONY), "--no-polyphony-reduction", "-K", "0", "-T", "100", "-A", str(amplification), mid]
        try:  # $HOME: no ~/.timidity.cfg
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, env={**os.environ, "HOME": tmp},
                                  timeout=_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise TimidityError(f"timidity failed: {e}") from e
        if proc.returncode != 0 or not os.path.isfile(wav):
            msg = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()[-500:]
            raise TimidityError(f"timidity exited with {proc.returncode}: {msg}")
        try:
            y, sr = sf.read(wav, dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as e:
            raise TimidityError(f"cannot read timidity's output {wav}: {e}") from e
    if sr != SAMPLE_RATE:
        raise TimidityError(f"timidity wrote {sr} Hz, not {SAMPLE_RATE}")
    out = np.zeros((2, job.n_samples), np.float32)
    skip = preroll + LATENCY_SAMPLES
    y = y[skip:skip + job.n_samples].T
    out[:, :y.shape[1]] = y[:2]
    return out


def render_part_timidity(notes: list[Note], cc: list[tuple[float, int, int]], program: int, drums: bool,
                         n_samples: int, seed: int, tuning_cents: float = 0.0, pan: int = 64) -> np.ndarray:
    """Play one part with TiMidity++ and the Freepats patches: ``(2, n_samples)`` float32 at 44.1 kHz.

    ``notes``: in seconds; a note sounds from sample ``round(start * 44100)`` (drums: their hit
    does). ``cc``: (time s, controller, value), e.g. the sustain pedal (64). ``program``: the GM
    program requested (:func:`played_program` says which plays it; ignored for drums, which use
    Freepats' one drum set, where keys it lacks are silent). ``seed``: picks the resampler.
    ``tuning_cents``: the part's detune, by pitch bend (melodic parts only). ``pan``: CC10 (64 = centre).
    """
    n_samples = int(n_samples)
    if n_samples <= 0 or not notes:
        return np.zeros((2, max(n_samples, 0)), np.float32)
    cfg = freepats_config()
    resampler = RESAMPLERS[int(np.random.default_rng([int(seed), 5]).integers(len(RESAMPLERS)))]
    if drums:
        keys = sorted({int(n.pitch) for n in notes} & set(cfg.drums))
        return _render(_Job(notes, cc, 0, True, n_samples, "", resampler, 0.0, pan,
                            tuple((k, max(0, drum_hit_delay(k) - HIT_ALLOWANCE_SAMPLES)) for k in keys)))
    played = played_program(program, cfg)
    return _render(_Job(notes, cc, played, False, n_samples, _tuning_cfg(played, cfg), resampler, tuning_cents, pan))
