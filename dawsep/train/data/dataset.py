"""PyTorch datasets over a rendered corpus, with training-time augmentation.

- :class:`SeparationDataset`: random excerpts, Demucs-style remixing of stems across songs,
  per-stem gain, channel swap and polarity flip; the mixture is always the sum of the returned
  stems, so the targets stay exact under every augmentation.
- :class:`TranscriptionDataset`: excerpts of the piano stem with frame labels (onset, frame,
  offset, velocity, pedal) from ``piano.mid``; conditions *clean*, *mix* (other stems, from the
  same or other songs, at random levels) and *residue* (a simulated masking separator's output:
  a noisy soft mask applied to the mix, leaving leakage and artefacts). Nothing here moves notes
  in time or pitch, so the labels follow the audio exactly (the excerpt start is the only shift).

Every item is a pure function of (seed, epoch, index): workers and reruns agree.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from dawsep.train.data import cache as stem_cache, heldout
from dawsep.train.data.corpus import iter_songs
from dawsep.train.data.score import PIANO_MIN, SAMPLE_RATE, STEMS, read_label_midi
from dawsep.train.data.separated import SEPARATED_STEM, has_separated

N_KEYS = 88


@dataclass
class SongRef:
    path: str
    meta: dict
    samples: int
    _labels: tuple | None = None

    def has(self, stem: str) -> bool:
        return stem in self.meta.get("stems_present", STEMS)

    def labels(self) -> tuple[np.ndarray, np.ndarray]:
        if self._labels is None:
            self._labels = read_label_midi(os.path.join(self.path, "piano.mid"))
        return self._labels


def load_songs(root: str, split: str, kinds: tuple[str, ...] | None = None) -> list[SongRef]:
    """Complete songs of a split; refuses held-out material in train/valid (HeldOutError)."""
    out = []
    for path, meta in iter_songs(root, split):
        heldout.check_meta(split, meta)
        if kinds is None or meta["kind"] in kinds:
            out.append(SongRef(path, meta, int(meta["samples"])))
    return out


def read_excerpt(song: SongRef, stem: str, start: int, frames: int, cache: bool = True) -> np.ndarray:
    """(2, frames) float32; silent stems are not read; short songs are zero-padded.

    With ``cache`` the samples come from the stem's int16 cache (:mod:`dawsep.train.data.cache`,
    built on first use; equal to the FLAC within int16 rounding), else from the FLAC.
    """
    out = np.zeros((2, frames), np.float32)
    if stem not in ("mixture", SEPARATED_STEM) and not song.has(stem):
        return out
    start = max(0, start)
    if start >= song.samples:
        return out
    if cache:
        got = stem_cache.read(song.path, stem, start, frames, song.samples)
        if got is not None:
            return got
    x, _ = sf.read(os.path.join(song.path, f"{stem}.flac"), start=start, frames=frames, dtype="float32", always_2d=True)
    out[:, : len(x)] = x.T[:2]
    return out


class _Base(Dataset):
    def __init__(self, seed: int, length: int | None):
        self.seed, self.epoch, self._length = int(seed), 0, length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])


class SeparationDataset(_Base):
    """Items: ``{"mix": (2, T), "stems": (5, 2, T)}`` float32, stems in ``score.STEMS`` order."""

    def __init__(self, root: str, split: str = "train", segment_seconds: float = 6.0, length: int | None = None,
                 augment: bool | None = None, remix_p: float = 0.5, gain_db: tuple[float, float] = (-6.0, 3.0),
                 swap_p: float = 0.5, flip_p: float = 0.5, kinds: tuple[str, ...] = ("gen", "m21"),
                 seed: int = 0, return_info: bool = False, cache: bool = True):
        super().__init__(seed, length)
        self.cache = cache
        self.songs = load_songs(root, split, kinds)
        if not self.songs:
            raise FileNotFoundError(f"no complete songs of kinds {kinds} in {os.path.join(root, split)}")
        self.segment = int(round(segment_seconds * SAMPLE_RATE))
        self.augment = split == "train" if augment is None else augment
        self.remix_p, self.gain_db, self.swap_p, self.flip_p = remix_p, gain_db, swap_p, flip_p
        self.return_info = return_info
        # Without augmentation: fixed, non-overlapping excerpts tiling every song.
        self._tiles = [(si, k * self.segment) for si, s in enumerate(self.songs)
                       for k in range(max(1, s.samples // self.segment))]

    def __len__(self) -> int:
        return self._length or len(self._tiles)

    def _pick(self, rng) -> tuple[SongRef, int]:
        song = self.songs[int(rng.integers(len(self.songs)))]
        return song, int(rng.integers(0, max(1, song.samples - self.segment)))

    def __getitem__(self, index: int):
        rng = self._rng(index)
        info = {"sources": [], "gains_db": [], "swap": [], "flip": []}
        if not self.augment:
            si, start = self._tiles[index % len(self._tiles)]
            song = self.songs[si]
            stems = np.stack([read_excerpt(song, s, start, self.segment, self.cache) for s in STEMS])
            info["sources"] = [(song.meta["name"], start)] * len(STEMS)
        else:
            song, start = self._pick(rng)
            out = []
            for s in STEMS:
                src, st = (self._pick(rng) if rng.random() < self.remix_p else (song, start))
                x = read_excerpt(src, s, st, self.segment, self.cache)
                g = float(rng.uniform(*self.gain_db))
                swap, flip = bool(rng.random() < self.swap_p), bool(rng.random() < self.flip_p)
                x = x * np.float32(10 ** (g / 20))
                if swap:
                    x = x[::-1]
                if flip:
                    x = -x
                out.append(x)
                info["sources"].append((src.meta["name"], st))
                info["gains_db"].append(g)
                info["swap"].append(swap)
                info["flip"].append(flip)
            stems = np.stack(out)
        stems = np.ascontiguousarray(stems, dtype=np.float32)
        item = {"mix": torch.from_numpy(stems.sum(axis=0)), "stems": torch.from_numpy(stems)}
        if self.return_info:
            item["info"] = info
        return item


def frame_labels(notes: np.ndarray, pedal: np.ndarray, start_s: float, n_frames: int, hop_s: float,
                 pedal_extend: bool = True) -> dict[str, np.ndarray]:
    """Onset/frame/offset/velocity (frames x 88) and pedal (frames x 1) for an excerpt.

    Frame ``f`` covers ``[start_s + f*hop_s, start_s + (f+1)*hop_s)``. With ``pedal_extend`` a
    note sounds (``frame``/``offset``) until the pedal lifts or the key is struck again, as in
    Onsets and Frames; ``onset`` and ``velocity`` are always the key strike.
    """
    onset = np.zeros((n_frames, N_KEYS), np.float32)
    frame = np.zeros_like(onset)
    offset = np.zeros_like(onset)
    velocity = np.zeros_like(onset)
    ped = np.zeros((n_frames, 1), np.float32)
    downs = _pedal_intervals(pedal)
    end_s = start_s + n_frames * hop_s
    for (t0, t1) in downs:
        a, b = int(np.floor((t0 - start_s) / hop_s)), int(np.ceil((t1 - start_s) / hop_s))
        ped[max(0, a): max(0, min(n_frames, b))] = 1
    ends = notes[:, 1].copy() if len(notes) else np.zeros(0)
    if pedal_extend and len(notes):
        for i, (on, off, p, _) in enumerate(notes):
            for t0, t1 in downs:
                if t0 <= off < t1:
                    ends[i] = t1
                    break
            later = notes[(notes[:, 2] == p) & (notes[:, 0] > on)]
            if len(later):
                ends[i] = min(ends[i], later[:, 0].min())
    for (on, _, p, v), off in zip(notes, ends):
        if off <= start_s or on >= end_s:
            continue
        k = int(p) - PIANO_MIN
        if not 0 <= k < N_KEYS:
            continue
        f_on = int(np.floor((on - start_s) / hop_s))
        f_off = int(np.floor((off - start_s) / hop_s))
        if 0 <= f_on < n_frames:
            onset[f_on, k] = 1
            velocity[f_on, k] = v / 127.0
        frame[max(0, f_on): max(0, min(n_frames, f_off + 1)), k] = 1
        if 0 <= f_off < n_frames:
            offset[f_off, k] = 1
    return {"onset": onset, "frame": frame, "offset": offset, "velocity": velocity, "pedal": ped}


def _pedal_intervals(pedal: np.ndarray) -> list[tuple[float, float]]:
    out, down = [], None
    for t, v in pedal:
        if v >= 64 and down is None:
            down = t
        elif v < 64 and down is not None:
            out.append((down, t))
            down = None
    if down is not None:
        out.append((down, float("inf")))
    return out


class TranscriptionDataset(_Base):
    """Items: ``audio`` (T,) mono float32 and labels (F, 88) ``onset``/``frame``/``offset``/``velocity``
    plus ``pedal`` (F, 1); ``F = T // hop_samples``."""

    #: clean: the piano stem; mix: piano + accompaniment; residue: a simulated masking separator's
    #: output; separated: the shipped separator's actual piano output (``data separate-piano``);
    #: absent: the accompaniment alone with empty labels (the model wrote 2.3 false notes a minute
    #: on drums stems, having never heard an excerpt without piano)
    CONDITIONS = ("clean", "mix", "residue", "separated", "absent")

    def __init__(self, root: str, split: str = "train", segment_seconds: float = 5.0, length: int | None = None,
                 augment: bool | None = None, hop_samples: int = 441, sample_rate: int = SAMPLE_RATE,
                 conditions: dict[str, float] | None = None, other_level_db: tuple[float, float] = (-12.0, 6.0),
                 gain_db: tuple[float, float] = (-18.0, 0.0), remix_p: float = 0.5, pedal_extend: bool = True,
                 kinds: tuple[str, ...] = ("piano", "gen", "m21"), seed: int = 0, return_info: bool = False,
                 cache: bool = True):
        super().__init__(seed, length)
        self.cache = cache
        songs = load_songs(root, split, None)
        self.songs = [s for s in songs if s.meta["kind"] in kinds and s.meta.get("piano_notes", 0) > 0]
        self.accomp = [s for s in songs if s.meta["kind"] in ("gen", "m21")]
        if not self.songs:
            raise FileNotFoundError(f"no songs with piano notes in {os.path.join(root, split)}")
        self.sample_rate = int(sample_rate)
        self.hop = int(hop_samples)
        seg_out = int(round(segment_seconds * self.sample_rate)) // self.hop * self.hop
        self.segment_out = seg_out
        self.segment = int(round(seg_out * SAMPLE_RATE / self.sample_rate))
        self.augment = split == "train" if augment is None else augment
        self.conditions = conditions or ({"clean": 0.4, "mix": 0.3, "residue": 0.3} if self.augment else {"clean": 1.0})
        bad = set(self.conditions) - set(self.CONDITIONS)
        if bad:
            raise ValueError(f"unknown conditions {sorted(bad)}; allowed: {self.CONDITIONS}")
        self.other_level_db, self.gain_db, self.remix_p = other_level_db, gain_db, remix_p
        self.pedal_extend, self.return_info = pedal_extend, return_info
        self.sep_songs = [s for s in self.songs if has_separated(s.path)] if "separated" in self.conditions else []
        if "separated" in self.conditions and not self.sep_songs:
            raise FileNotFoundError(f"no separated piano in {os.path.join(root, split)}: run "
                                    f"`dawsep-train data separate-piano {root} --splits {split}`")
        # a separated-only set (validation) tiles the songs that have a separated piano
        self._tile_songs = self.sep_songs if set(self.conditions) == {"separated"} else self.songs
        self._tiles = [(si, k * self.segment) for si, s in enumerate(self._tile_songs)
                       for k in range(max(1, s.samples // self.segment))]

    def __len__(self) -> int:
        return self._length or len(self._tiles)

    def _others(self, rng, song: SongRef, start: int) -> np.ndarray:
        acc = np.zeros((2, self.segment), np.float32)
        for s in STEMS[1:]:
            if song.meta["kind"] != "piano" and rng.random() >= self.remix_p:
                src, st = song, start
            elif self.accomp:
                src = self.accomp[int(rng.integers(len(self.accomp)))]
                st = int(rng.integers(0, max(1, src.samples - self.segment)))
            else:
                continue
            gain = np.float32(10 ** (rng.uniform(*self.other_level_db) / 20))
            acc += read_excerpt(src, s, st, self.segment, self.cache) * gain
        return acc

    @staticmethod
    def _residue(rng, piano: np.ndarray, others: np.ndarray) -> np.ndarray:
        """What a masking separator leaves: a noisy, time-smoothed soft mask on the mix."""
        n_fft, hop = 2048, 512
        win = torch.hann_window(n_fft)
        mix = torch.from_numpy(piano + others)
        X = torch.stft(mix, n_fft, hop, window=win, return_complex=True)
        P = torch.stft(torch.from_numpy(piano), n_fft, hop, window=win, return_complex=True).abs()
        O = torch.stft(torch.from_numpy(others), n_fft, hop, window=win, return_complex=True).abs()
        a = float(rng.uniform(1.0, 2.0))
        mask = P ** a / (P ** a + O ** a + 1e-8)
        g = torch.Generator().manual_seed(int(rng.integers(2**31)))
        noise = torch.randn(mask.shape, generator=g) * float(rng.uniform(0.05, 0.25))
        noise = torch.nn.functional.avg_pool1d(noise.reshape(-1, 1, mask.shape[-1]), 5, 1, 2).reshape(mask.shape)
        leak = float(rng.uniform(0.0, 0.12))
        mask = (leak + (1 - leak) * mask + noise).clamp(0, 1)
        y = torch.istft(X * mask, n_fft, hop, window=win, length=piano.shape[-1])
        return y.numpy().astype(np.float32)

    def __getitem__(self, index: int):
        rng = self._rng(index)
        if not self.augment:
            si, start = self._tiles[index % len(self._tiles)]
            song = self._tile_songs[si]
        else:
            song = self.songs[int(rng.integers(len(self.songs)))]
            start = int(rng.integers(0, max(1, song.samples - self.segment)))
        piano = read_excerpt(song, "piano", start, self.segment, self.cache)
        names = list(self.conditions)
        p = np.array([self.conditions[n] for n in names], float)
        cond = names[int(rng.choice(len(names), p=p / p.sum()))]
        if cond == "clean":
            audio = piano
        elif cond == "separated":
            if not has_separated(song.path):  # a solo-piano song: take a mixture's piano instead
                song = self.sep_songs[int(rng.integers(len(self.sep_songs)))]
                start = int(rng.integers(0, max(1, song.samples - self.segment)))
            audio = read_excerpt(song, SEPARATED_STEM, start, self.segment, self.cache)
        else:
            others = self._others(rng, song, start)
            if cond == "mix":
                audio = piano + others
            elif cond == "absent":
                audio = others
            else:
                audio = self._residue(rng, piano, others)
        if self.augment and rng.random() < 0.25:
            mono = audio[int(rng.integers(2))]
        else:
            mono = audio.mean(axis=0)
        if self.augment:
            peak = float(np.abs(mono).max())
            if peak > 0:
                mono = mono * np.float32(10 ** (rng.uniform(*self.gain_db) / 20) * 0.9 / peak)
            if rng.random() < 0.5:
                mono = -mono
        if self.sample_rate != SAMPLE_RATE:
            # The runtime's resampler (dawsep.audio): what inference feeds the model, output sample n
            # exactly at input time n * 44100 / rate (labels stay aligned), and 3.6x cheaper than
            # pedalboard's StreamResampler here (measured: 6.5 vs 23 ms per 5-s excerpt).
            from dawsep.audio import resample

            y = resample(mono, SAMPLE_RATE, self.sample_rate)
            mono = np.zeros(self.segment_out, np.float32)
            mono[: min(len(y), self.segment_out)] = y[: self.segment_out]
        mono = np.ascontiguousarray(mono[: self.segment_out], dtype=np.float32)
        notes, pedal = song.labels()
        lab = frame_labels(notes, pedal, start / SAMPLE_RATE, self.segment_out // self.hop,
                           self.hop / self.sample_rate, self.pedal_extend)
        if cond == "absent":
            lab = {k: np.zeros_like(v) for k, v in lab.items()}
        item = {"audio": torch.from_numpy(mono), **{k: torch.from_numpy(v) for k, v in lab.items()}}
        if self.return_info:
            item["info"] = {"song": song.meta["name"], "start": start, "condition": cond}
        return item
