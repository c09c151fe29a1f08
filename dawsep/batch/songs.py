"""Songs of a batch: finding the input files (links, hidden and special files, unreadable folders)
and giving each its own output folder (safe names, colliding names, folders kept across runs).
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dawsep.errors import DawsepError, OutputPathError


@dataclass(frozen=True)
class Song:
    """One input file. ``rel`` is its output folder relative to OUT (POSIX, no extension)."""

    path: str
    rel: str



#: Endings of the files dawsep writes (stems, MIDI, plots, note lists, the manifest, the ledger,
#: temporary files): a song's folder never ends like one, so no output can collide with a folder.
OUTPUT_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".mid", ".midi",
                             ".png", ".json", ".csv", ".sqlite", ".part", ".tmp"})


@dataclass
class Inputs:
    """What :func:`find_inputs` found under an input path."""

    files: list[tuple[str, str]] = field(default_factory=list)  # (resolved path, path relative to IN)
    ignored: list[str] = field(default_factory=list)  # non-audio files
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (entry relative to IN, why it was not read)


def find_inputs(input_path: str | Path, out_dir: str | Path, extensions: frozenset[str]) -> Inputs:
    """Audio files under ``input_path`` (recursive, sorted), the non-audio files ignored, and
    the entries that look like audio but are not read, each with the reason: broken links and
    link loops, links to folders (not followed), folders named like audio files, hidden files,
    special files, unreadable folders. The output folder is never searched. A single file is
    taken as it is (its format is checked when it is read). Never raises for one bad entry.
    """
    root = Path(input_path).expanduser()
    out = Path(out_dir).expanduser().resolve()
    if not root.exists():
        raise DawsepError(f"{root}: no such file or folder")
    found = Inputs()
    if not root.is_dir():
        why = _not_a_song(root)
        if why:
            found.excluded.append((root.name, why))
        else:
            found.files.append((str(root.resolve()), root.name))
        return found

    def rel(p: str | Path) -> str:
        return Path(p).relative_to(root).as_posix()

    def unreadable(exc: OSError) -> None:
        found.excluded.append((rel(exc.filename), f"folder cannot be read ({exc.strerror})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        d = Path(dirpath)
        keep = []
        for n in sorted(dirnames):
            sub = d / n
            if n.startswith("."):
                continue  # .git, .dawsep, ...
            if os.path.islink(sub):
                found.excluded.append((rel(sub), "a symbolic link to a folder (not followed; "
                                                 "pass it as an input of its own to process it)"))
            elif resolves_to(sub, out):
                continue  # the output folder inside the input: its stems are no songs
            elif Path(n).suffix.lower() in extensions:
                found.excluded.append((rel(sub), "a folder named like an audio file (not searched; "
                                                 "rename it or pass it as an input of its own)"))
            else:
                keep.append(n)
        dirnames[:] = keep
        for name in sorted(filenames):
            f = d / name
            audio_like = name.lower().endswith(tuple(extensions))
            if name.startswith("."):
                if audio_like:
                    found.excluded.append((rel(f), "a hidden file (its name starts with a dot)"))
                continue
            if not audio_like:
                found.ignored.append(rel(f))
                continue
            why = _not_a_song(f)
            if why:
                found.excluded.append((rel(f), why))
            else:
                found.files.append((str(f.resolve()), rel(f)))
    return found


def resolves_to(path: Path, target: Path) -> bool:
    """Whether ``path`` resolves to ``target`` (False when it cannot be resolved)."""
    try:
        return path.resolve() == target
    except (OSError, RuntimeError):
        return False


def _not_a_song(f: Path) -> str | None:
    """Why the audio-named entry ``f`` cannot be read as a song, or None."""
    try:
        st = os.stat(f)  # follows links
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop"
        if exc.errno == errno.ENOENT and os.path.islink(f):
            return "a broken symbolic link (its target does not exist)"
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return "a folder named like an audio file (not searched)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a pipe, socket or device)"
    try:
        Path(f).resolve(strict=True)
    except (OSError, RuntimeError):
        return "a symbolic link that cannot be resolved"
    return None


def folder_part(name: str) -> str:
    """One path component as a song folder name: never hidden, never ending like a file dawsep
    writes (``manifest.json.wav`` -> ``manifest_json``, ``.dawsep.wav`` -> ``_dawsep``)."""
    name = name.strip().replace("\\", "_").replace("/", "_").replace("\0", "_")
    if name in ("", ".", ".."):
        return "song"
    if name.startswith("."):
        name = "_" + name[1:]
    base, dot, ext = name.rpartition(".")
    if dot and base and f".{ext.lower()}" in OUTPUT_SUFFIXES:
        name = f"{base}_{ext}"
    return name


def _folder_for(rel_path: str) -> tuple[str, str]:
    """``album/x.flac.wav`` -> (``album/x_flac``, ``wav``): the song folder, each component made
    safe, and the extension."""
    p = PurePosixPath(rel_path)
    parts = [folder_part(c) for c in p.parent.parts] + [folder_part(p.stem if p.suffix else p.name)]
    return "/".join(parts), p.suffix[1:]


def _valid_folder(rel: str) -> bool:
    parts = rel.split("/")
    return bool(rel) and all(p and folder_part(p) == p for p in parts)


def assign_folders(files: list[tuple[str, str]], previous: dict[str, str] | None = None) -> list[Song]:
    """Give every input file its own song folder (relative to OUT), in the order of ``files``.

    A folder is the input's path relative to IN without its extension (each component made
    safe by :func:`folder_part`). Inputs that would share one (``song.wav``, ``song.flac``)
    get their extension appended (``song_wav``, ``song_flac``), then a number while the name is
    still taken (``song_wav_2`` when a ``song_wav.mp3`` holds ``song_wav``). ``previous``
    (input path -> folder, from the ledger) keeps the folder a song had in earlier runs, so
    adding files never moves a song that is already done.
    """
    previous = previous or {}
    taken: dict[str, str] = {}
    chosen: dict[str, str] = {}
    claims: dict[str, list[str]] = {}
    for path, _ in files:
        old = previous.get(path)
        if old is not None and _valid_folder(old):
            claims.setdefault(old, []).append(path)
    for folder, paths in claims.items():
        if len(paths) == 1:  # two inputs once shared a folder (an old dawsep): neither keeps it
            taken[folder] = chosen[paths[0]] = folder
    rest = [(path, *_folder_for(r)) for path, r in files if path not in chosen]
    counts: dict[str, int] = {}
    for _, folder, _ in rest:
        counts[folder] = counts.get(folder, 0) + 1
    for path, folder, _ in rest:
        if counts[folder] == 1 and folder not in taken:
            taken[folder] = chosen[path] = folder
    for path, folder, ext in rest:
        if path in chosen:
            continue
        base = f"{folder}_{folder_part(ext)}" if ext else folder
        name, n = base, 2
        while name in taken:
            name, n = f"{base}_{n}", n + 1
        taken[name] = chosen[path] = name
    return [Song(path, chosen[path]) for path, _ in files]


def discover(input_path: str | Path, out_dir: str | Path, extensions: frozenset[str]) -> tuple[list[Song], list[str]]:
    """Songs under ``input_path`` with their folders (:func:`find_inputs` + :func:`assign_folders`
    without a ledger), and the non-audio files ignored."""
    found = find_inputs(input_path, out_dir, extensions)
    return assign_folders(found.files), found.ignored


def inside(out_dir: Path, *parts: str) -> Path:
    """``out_dir / parts`` resolved, refusing anything that would leave ``out_dir``."""
    base = out_dir.resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        raise OutputPathError(f"output path {path} would leave the output folder {base}")
    return path
