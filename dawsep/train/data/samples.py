"""Recorded-sample sets: zones, decoding sample files (onset-trimmed, cached int16) and content hashes.

A :class:`SampleSet` is a list of :class:`Zone` s, one audio file each with the keys and velocities
it serves; ``sampler`` renders parts with it. Its loaders: ``iowa`` (the Iowa Steinway), ``hydrogen``
(Hydrogen drum kits) and ``oneshot`` (loose one-shot drum samples). Files are read in place (a zip
member reads as ``archive.zip/member``; nothing is extracted or converted on disk), decoded once per
process and trimmed to their onset, so a note's onset lands exactly on ``round(start * SAMPLE_RATE)``.
A sample is identified by its decoded content (:func:`pcm_sha256`), never by its name.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf

from dawsep.errors import DawsepError
from dawsep.train.data.score import SAMPLE_RATE

__all__ = ["SamplerError", "Zone", "SampleSet", "pcm_sha256", "decoded_pcm"]

ONSET_TRIM_DB = -50.0      # leading samples below this (re the file's peak) are cut at load
TAIL_TRIM_DB = -70.0       # so are trailing ones; the kept tail then gets END_FADE_S of fade-out
END_FADE_S = 0.005
_PAD = 4                   # zero frames after every decoded sample (interpolation reads i+1)


class SamplerError(DawsepError):
    """A sample package or drum kit is missing, or one of its audio files cannot be read."""

    exit_code = 12


@dataclass(frozen=True)
class Zone:
    path: str            # audio file (a member of a zip reads as ``archive.zip/member``)
    root_pitch: float    # MIDI pitch the file sounds at unshifted (drums: the GM key, minus layer pitch)
    lo_key: int
    hi_key: int          # MIDI keys this zone serves
    lo_vel: int
    hi_vel: int          # 1..127 inclusive
    gain_db: float = 0.0
    choke_group: int = -1  # drums: a new hit in the same group cuts ringing ones (hi-hats)

    @property
    def single_layer(self) -> bool:
        return self.lo_vel <= 1 and self.hi_vel >= 127


@dataclass
class SampleSet:
    name: str            # e.g. "iowa-steinway", "hydrogen:BJA_Pacific"
    family: str          # "piano" | "drums"
    zones: list[Zone]
    drums: bool
    _lookup: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def audio(self, zone: Zone) -> np.ndarray:
        """``(2, n)`` float32 at SAMPLE_RATE: stereo, onset- and tail-trimmed (decoded once per process)."""
        pcm, n, scale = decoded_pcm(zone.path)
        return (pcm[:n].T * np.float32(scale)).astype(np.float32)

    def sample_hash(self, zone: Zone) -> str:
        """sha256 hex of the file's decoded int16 PCM (content, not name; cached per process)."""
        return pcm_sha256(zone.path)

    def zones_for(self, pitch: int, velocity: int, shift_semitones: int = 0) -> list[Zone]:
        """Zones that may play ``pitch`` at ``velocity``; melodic sets look up ``pitch + shift``
        (clamped to the keys served); a velocity outside every layer takes the nearest layer."""
        key = int(pitch) if self.drums else int(pitch) + int(shift_semitones)
        vel = min(127, max(1, int(round(velocity))))
        hit = self._lookup.get((key, vel))
        if hit is None:
            k = key
            if not self.drums and self.zones:
                k = min(max(k, min(z.lo_key for z in self.zones)), max(z.hi_key for z in self.zones))
            by_key = [z for z in self.zones if z.lo_key <= k <= z.hi_key]
            dist = [max(z.lo_vel - vel, vel - z.hi_vel, 0) for z in by_key]
            hit = self._lookup[(key, vel)] = [z for z, d in zip(by_key, dist) if d == min(dist)]
        return list(hit)


# --------------------------------------------------------------------------- decoding and hashing

_AUDIO: dict[str, tuple[np.ndarray, int]] = {}
_HASH: dict[str, str] = {}


def _split_zip(path: str) -> tuple[str, str] | None:
    """``/x/a.zip/member`` -> (``/x/a.zip``, ``member``) when that path is not a plain file."""
    if os.path.isfile(path):
        return None
    m = re.match(r"(.+?\.zip)/(.+)$", path, re.IGNORECASE)
    return (m.group(1), m.group(2)) if m and os.path.isfile(m.group(1)) else None


def _open_sound(path: str) -> sf.SoundFile:
    try:
        z = _split_zip(path)
        if z is not None:
            with zipfile.ZipFile(z[0]) as zf:
                return sf.SoundFile(io.BytesIO(zf.read(z[1])))
        return sf.SoundFile(path)
    except (OSError, RuntimeError, KeyError, zipfile.BadZipFile, sf.LibsndfileError) as e:
        raise SamplerError(f"cannot read sample {path}: {e}") from e


def pcm_sha256(path: str) -> str:
    """sha256 hex of a sample's decoded int16 PCM (interleaved frames, little-endian): the same
    recording under another name or container gives the same hash."""
    h = _HASH.get(path)
    if h is None:
        with _open_sound(path) as f:
            pcm = f.read(dtype="int16", always_2d=True)
        h = _HASH[path] = hashlib.sha256(np.ascontiguousarray(pcm).astype("<i2").tobytes()).hexdigest()
    return h


def decoded_pcm(path: str) -> tuple[np.ndarray, int, float]:
    """``(pcm, n, scale)``: ``pcm`` is ``(n + _PAD, 2)`` int16 (times ``scale`` gives the signal),
    stereo at SAMPLE_RATE, with the leading samples below ONSET_TRIM_DB of the peak and a tail below
    TAIL_TRIM_DB removed, an END_FADE_S fade-out and zero padding. 16-bit 44.1-kHz files are kept
    bit-exact; others (24-bit, float, resampled) are requantised relative to their own peak.
    int16 halves the per-process cache (the 85 Iowa files: ~250 MB instead of ~500 MB)."""
    hit = _AUDIO.get(path)
    if hit is not None:
        return hit
    with _open_sound(path) as f:
        sr = f.samplerate
        exact = sr == SAMPLE_RATE and f.subtype in ("PCM_16", "PCM_S8", "PCM_U8")
        x = f.read(dtype="int16" if exact else "float32", always_2d=True)
    if exact and path not in _HASH:  # the same bytes pcm_sha256 would decode
        _HASH[path] = hashlib.sha256(np.ascontiguousarray(x).astype("<i2").tobytes()).hexdigest()
    if x.shape[1] == 1:
        x = np.repeat(x, 2, axis=1)
    elif x.shape[1] > 2:
        x = x[:, :2]
    if not exact and sr != SAMPLE_RATE and len(x):
        from dawsep.audio import resample  # windowed-sinc, zero delay: onsets stay put

        x = resample(x.T, sr, SAMPLE_RATE).T
    env = np.maximum(np.abs(x[:, 0].astype(np.float32)), np.abs(x[:, 1].astype(np.float32)))
    peak = float(env.max()) if len(env) else 0.0
    if peak > 0:
        above = np.flatnonzero(env > peak * 10 ** (ONSET_TRIM_DB / 20))
        tail = np.flatnonzero(env > peak * 10 ** (TAIL_TRIM_DB / 20))
        x = x[above[0]:tail[-1] + 1]
    else:
        x = x[:0]
    n = len(x)
    scale = 1 / 32768 if exact else (peak / 32767 if peak > 0 else 1.0)
    pcm = np.zeros((n + _PAD, 2), np.int16)
    pcm[:n] = x if exact else np.round(x / scale)
    k = min(n, int(END_FADE_S * SAMPLE_RATE))
    if k:
        pcm[n - k:n] = np.round(pcm[n - k:n] * np.linspace(1.0, 0.0, k)[:, None])
    pcm.setflags(write=False)
    hit = _AUDIO[path] = (pcm, n, scale)
    return hit
