"""The README as a newcomer meets it (issue 17, item 13): every Python snippet runs as written, and
`make demo` installs the runtime only (no torch, Ray or pyo)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def python_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.fixture
def newcomer(tmp_path, monkeypatch):
    """A working folder with what the snippets name: ``song.flac`` (8 s of the demo song), a folder
    of songs and a folder of stems."""
    demo = ROOT / "demo"
    x, sr = sf.read(demo / "demo_song.flac", frames=8 * 44100, dtype="float32")
    sf.write(tmp_path / "song.flac", x, sr)
    (tmp_path / "songs").mkdir()
    shutil.copy(tmp_path / "song.flac", tmp_path / "songs" / "song.flac")
    (tmp_path / "stems" / "song").mkdir(parents=True)
    b, _ = sf.read(demo / "demo_song.reference" / "bass.flac", frames=8 * 44100, dtype="float32")
    sf.write(tmp_path / "stems" / "song" / "bass.flac", b, sr)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_has_python_snippets():
    assert len(python_snippets()) >= 2


@pytest.mark.slow
def test_every_python_snippet_in_the_readme_runs_as_written(newcomer):
    if not Path("/usr/lib/vst3/ZamCompX2.vst3").exists():
        pytest.skip("the README's VST3 example needs zam-plugins (make sysdeps)")
    for i, code in enumerate(python_snippets()):
        # each snippet in a fresh interpreter, in order, in the same folder: as a newcomer pastes them
        res = subprocess.run([sys.executable, "-c", code], cwd=newcomer, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"README snippet {i + 1} failed:\n{code}\n{res.stderr[-3000:]}"
    assert (newcomer / "piano.mid").exists() and (newcomer / "out.flac").exists()


# ------------------------------------------------------------------ make demo installs the runtime only


def _make_dry_run(target: str) -> str:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    # -B: as from a clean clone (every stamp out of date); -n: print, run nothing
    return subprocess.run([make, "-nB", target], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def _requirements(dist: str, extras: frozenset[str] = frozenset()) -> set[str]:
    """The names ``dist`` requires (with ``extras``), from its installed metadata."""
    from packaging.requirements import Requirement

    out = set()
    for line in metadata.requires(dist) or []:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
            out.add(req.name.lower().replace("_", "-"))
    return out


def _closure(dist: str, extras: frozenset[str] = frozenset()) -> set[str]:
    todo, seen = [(dist, extras)], set()
    while todo:
        name, ex = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [(r, frozenset()) for r in _requirements(name, ex)]
        except metadata.PackageNotFoundError:  # not installed here (an optional platform dependency)
            continue
    return seen


def test_make_demo_installs_the_runtime_only():
    text = _make_dry_run("demo")
    installs = [l for l in text.splitlines() if "pip install" in l]
    assert installs, text
    for line in installs:
        assert re.search(r"pip install( -q)? -e \.(\s|$)", line), line  # no extras
    assert "sysdeps" not in text and "apt" not in text
    runtime = _closure("dawsep")
    assert not {"torch", "ray", "pyo"} & runtime, sorted(runtime)
    # and `make test` still installs what the tests need
    test = _make_dry_run("test")
    assert re.search(r"pip install -q -e \"?\.\[test,train,dist,live\]", test), test
