"""A procedural piano: one more piano family, with the physics that make a piano sound like one.

- **Inharmonic partials**: a stiff string's n-th partial sits at ``n f0 sqrt(1 + B n^2)``; the
  inharmonicity ``B`` grows towards the treble (Fletcher).
- **Two-stage decay**: each partial decays fast at first (the vertical string polarisation couples
  strongly to the soundboard) then slowly (the horizontal one): ``a e^{-t/tau1} + (1-a) e^{-t/tau2}``,
  with shorter times for higher partials and higher keys.
- **Unison strings**: two or three strings per key, detuned by a few cents, so partials beat.
- **Hammer**: the strike position leaves a comb in the partial amplitudes, a harder (louder) blow is
  brighter, and a short filtered noise burst marks the attack.
- **Dampers and pedal**: a key-up damps the note within ``release_s`` unless the sustain pedal is
  down (then at the pedal-up); the top 1.5 octaves have no dampers. Under the pedal, undamped
  strings whose fundamentals coincide with a struck note's 2nd and 3rd partials ring quietly along
  (sympathetic resonance).

Each voice (a random "instrument", plain data in meta.json) caches one waveform per (key, velocity
layer) and plays notes from the cache, so a song costs about one cached waveform per distinct key.
"""
from __future__ import annotations

import numpy as np

from dawsep.train.data.score import SAMPLE_RATE, Note

VELOCITY_LAYERS = 6
_MAX_PARTIALS = 24
_TOP_DAMPED_KEY = 89  # F6: strings above have no dampers on a grand
_SYMPATHETIC = ((12, 2), (19, 3))  # (key offset, partial of the struck key it matches)


def random_voice(rng: np.random.Generator) -> dict:
    """Parameters of one procedural piano (plain data, recorded in meta.json)."""
    return {
        "inharmonicity_c4": float(np.exp(rng.uniform(np.log(1.5e-4), np.log(6e-4)))),
        "tau_fast_s": float(rng.uniform(0.25, 0.8)),      # prompt decay at C4
        "tau_slow_s": float(rng.uniform(2.5, 7.0)),       # aftersound at C4
        "prompt_share": float(rng.uniform(0.55, 0.85)),
        "partial_damping": float(rng.uniform(0.03, 0.12)),  # decay shortens with partial number
        "strike_position": float(rng.uniform(1 / 9, 1 / 7)),
        "tilt": float(rng.uniform(0.6, 1.3)),               # 1/n^tilt spectral envelope
        "brightness_hz": float(rng.uniform(2500, 7000)),    # cutoff of the hardest blow
        "unison_cents": float(rng.uniform(0.3, 2.5)),
        "hammer_noise": float(rng.uniform(0.005, 0.04)),
        "release_s": float(rng.uniform(0.08, 0.3)),
        "sympathetic_db": float(rng.uniform(-36, -24)),
        "stereo_width": float(rng.uniform(0.2, 0.9)),       # low keys left, high keys right
        "velocity_range_db": float(rng.uniform(28, 42)),
        "stretch_cents_per_octave": float(rng.uniform(0, 2.5)),  # stretched tuning away from A4
    }


def _inharmonicity(v: dict, pitch: int) -> float:
    return float(np.clip(v["inharmonicity_c4"] * 2 ** ((pitch - 60) / 12 * 0.85), 2e-5, 0.02))


def _length_s(v: dict, pitch: int) -> float:
    """Cached waveform length: until the slow decay of the fundamental is about -50 dB."""
    tau = v["tau_slow_s"] * 2 ** (-(pitch - 60) / 24)
    return float(np.clip(5.8 * tau, 0.8, 5.0))


def _f0(v: dict, pitch: int) -> float:
    cents = v["stretch_cents_per_octave"] * (pitch - 69) / 12 + v.get("tuning_cents", 0.0)
    return 440.0 * 2 ** ((pitch - 69) / 12 + cents / 1200)


def note_waveforms(v: dict, pitch: int, seed: int) -> np.ndarray:
    """(VELOCITY_LAYERS, 2, n) float32: the key struck at each layer's velocity, peak-normalised
    per key so that layer gains alone set loudness."""
    n = int(_length_s(v, pitch) * SAMPLE_RATE)
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    f0 = _f0(v, pitch)
    B = _inharmonicity(v, pitch)
    k = np.arange(1, _MAX_PARTIALS + 1, dtype=np.float64)
    fk = k * f0 * np.sqrt(1 + B * k * k)
    keep = fk < min(18000.0, SAMPLE_RATE / 2 - 1000)
    k, fk = k[keep], fk[keep]
    rng = np.random.default_rng(seed)
    key_scale = 2 ** (-(pitch - 60) / 24)
    tau1 = v["tau_fast_s"] * key_scale / (1 + v["partial_damping"] * (k - 1))
    tau2 = v["tau_slow_s"] * key_scale / (1 + v["partial_damping"] * (k - 1))
    a = v["prompt_share"]
    # Unison strings detuned by +-d/2 cents beat: their sum is the centre partial times a slow beat
    # envelope. Carriers come from block rotations (a (K, B) block of phasors times a (K, blocks)
    # phasor per block start: no per-sample cos) and envelopes are linear between block edges.
    strings = 3 if pitch >= 48 else 2 if pitch >= 34 else 1
    depth = 0.0 if strings == 1 else float(rng.uniform(0.3, 0.7))
    blk = 256
    nb = -(-n // blk)
    tau = np.arange(blk) / SAMPLE_RATE
    tb = np.arange(nb + 1) * blk / SAMPLE_RATE
    w = 2 * np.pi * fk[:, None]
    z = np.exp(1j * (w * tau[None, :] + rng.uniform(0, 2 * np.pi, len(k))[:, None])).astype(np.complex64)
    r = np.exp(1j * w * tb[None, :-1]).astype(np.complex64)
    carrier = (r[:, :, None] * z[:, None, :]).real
    beat_hz = fk * (2 ** (v["unison_cents"] / 1200) - 1)
    env_b = a * np.exp(-tb[None, :] / tau1[:, None]) + (1 - a) * np.exp(-tb[None, :] / tau2[:, None])
    env_b *= 1 - depth + depth * np.cos(np.pi * beat_hz[:, None] * tb[None, :] + rng.uniform(0, np.pi, len(k))[:, None])
    env_b[:, -1] = 0.0
    # The cached waveform ends (long bass notes under the pedal): fade out its last 0.3 s.
    fade_blocks = max(1, int(0.3 * SAMPLE_RATE / blk))
    env_b[:, -fade_blocks - 1:] *= np.linspace(1, 0, fade_blocks + 1)[None, :]
    ramp = (np.arange(blk) / blk).astype(np.float32)
    env_b = env_b.astype(np.float32)
    env = env_b[:, :-1, None] + (env_b[:, 1:] - env_b[:, :-1])[:, :, None] * ramp[None, None, :]
    partials = (carrier * env).reshape(len(k), nb * blk)[:, :n]
    comb = np.abs(np.sin(np.pi * k * v["strike_position"])) + 0.05
    base_amp = comb / k ** v["tilt"]
    out = np.zeros((VELOCITY_LAYERS, 2, n), np.float32)
    pan = np.clip(0.5 + v["stereo_width"] * (pitch - 64) / 88, 0.0, 1.0)
    gains = np.array([np.cos(pan * np.pi / 2), np.sin(pan * np.pi / 2)], np.float32)
    noise = rng.standard_normal(n).astype(np.float32)
    burst_n = int(0.02 * SAMPLE_RATE)
    for layer in range(VELOCITY_LAYERS):
        vel = (layer + 0.5) / VELOCITY_LAYERS
        cutoff = 300 + v["brightness_hz"] * vel ** 1.5  # a harder blow excites higher partials
        amp = base_amp / np.sqrt(1 + (fk / cutoff) ** 4)
        mono = (amp.astype(np.float32) @ partials).astype(np.float32)
        # The hammer's contact time: about 1 ms for a hard blow, 4 ms for a soft one (no click).
        att = int((0.004 - 0.003 * vel) * SAMPLE_RATE)
        mono[:att] *= (0.5 - 0.5 * np.cos(np.pi * np.arange(att) / att)).astype(np.float32)
        burst = noise[:burst_n] * np.exp(-np.arange(burst_n) / (0.003 * SAMPLE_RATE)).astype(np.float32)
        # The thump follows the blow: a one-pole low-pass whose cutoff rises with velocity.
        alpha = np.float32(1 - np.exp(-2 * np.pi * min(cutoff * 1.5, 16000) / SAMPLE_RATE))
        y, acc = np.empty_like(burst), np.float32(0)
        for i in range(burst_n):
            acc += alpha * (burst[i] - acc)
            y[i] = acc
        mono[:burst_n] += v["hammer_noise"] * vel * y / (np.abs(y).max() + 1e-9) * np.abs(mono[:burst_n * 4]).max()
        out[layer] = gains[:, None] * mono[None, :]
    peak = np.abs(out[-1]).max() + 1e-9
    return out / peak


def _sustain_at(pedal: list[tuple[float, int]], t: float) -> bool:
    down = False
    for tt, val in pedal:
        if tt > t:
            break
        down = val >= 64
    return down


def _pedal_up_after(pedal: list[tuple[float, int]], t: float) -> float:
    for tt, val in pedal:
        if tt > t and val < 64:
            return tt
    return float("inf")


def render_notes(notes: list[Note], n_samples: int, v: dict, seed: int,
                 pedal: list[tuple[float, int]] = ()) -> np.ndarray:
    """(2, n_samples) float32: ``notes`` (labels unchanged: onset at round(start*SR)) played by voice ``v``.

    ``pedal``: sustain pedal events (time_s, CC64 value), sorted by time.
    """
    pedal = sorted(pedal)
    out = np.zeros((2, n_samples), np.float32)
    cache: dict[int, np.ndarray] = {}

    def wave(p: int) -> np.ndarray:
        if p not in cache:
            cache[p] = note_waveforms(v, p, seed * 131 + p)
        return cache[p]

    rel = max(1, int(v["release_s"] * SAMPLE_RATE))
    by_key = {}
    for n in sorted(notes, key=lambda n: n.start):
        by_key.setdefault(n.pitch, []).append(n)

    def place(w: np.ndarray, i0: int, stop: int | None, gain: float) -> None:
        """Add ``w`` (2, L) at ``i0``; damp it from ``stop`` (a sample index) over the release."""
        length = min(w.shape[1], n_samples - i0)
        if length <= 0:
            return
        seg = w[:, :length] * np.float32(gain)
        if stop is not None and stop - i0 < length:
            s = max(0, stop - i0)
            fade_len = min(length - s, rel * 6)
            fade = np.exp(-np.arange(fade_len) / (rel / 6.9)).astype(np.float32)  # -60 dB at release_s
            seg = seg.copy()
            seg[:, s:s + fade_len] *= fade
            seg[:, s + fade_len:] = 0
        out[:, i0:i0 + length] += seg

    for p, key_notes in by_key.items():
        for j, n in enumerate(key_notes):
            i0 = int(round(n.start * SAMPLE_RATE))
            if i0 >= n_samples:
                continue
            layer = min(VELOCITY_LAYERS - 1, int(n.velocity / 128 * VELOCITY_LAYERS))
            gain = 10 ** (v["velocity_range_db"] * (n.velocity / 127 - 1) / 20)
            end = n.end
            if _sustain_at(pedal, n.end):
                end = _pedal_up_after(pedal, n.end)
            stop = None if p >= _TOP_DAMPED_KEY else int(round(end * SAMPLE_RATE)) if end != float("inf") else None
            if j + 1 < len(key_notes):  # a re-strike damps the ringing string
                nxt = int(round(key_notes[j + 1].start * SAMPLE_RATE))
                stop = nxt if stop is None else min(stop, nxt)
            place(wave(p)[layer], i0, stop, gain)
            if _sustain_at(pedal, n.start):
                up = _pedal_up_after(pedal, n.start)
                s_stop = None if up == float("inf") else int(round(up * SAMPLE_RATE))
                for off, _partial in _SYMPATHETIC:
                    q = p + off
                    if q > 108:
                        continue
                    g = gain * 10 ** (v["sympathetic_db"] / 20)
                    place(wave(q)[0], i0, s_stop, g)
    return out
