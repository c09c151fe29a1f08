"""Presets: shipped ones load and build; every kind of mistake names file, key and what is allowed."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dawsep.chain import BuiltinStep, VST3Step
from dawsep.errors import PresetError
from dawsep.presets import STEMS, list_presets, load_preset


def test_shipped_presets_cover_every_stem_and_build():
    names = list_presets()
    assert set(STEMS) <= set(names)
    for name in names:
        preset = load_preset(name)
        assert preset.name == name and preset.description
        assert preset.separate is not None and preset.separate.stem == name
        full = preset.build_chain()  # led by the packaged separator
        assert full.model_sample_rates == {44100} and full.descriptions[0].startswith("model:separate(stem=")
        chain = dataclasses.replace(preset, separate=None).build_chain()  # the effects alone
        assert len(chain) >= 3 and len(full) == len(chain) + 1
        # a musically reasonable chain: a sine in the instrument's range passes at a sane level
        t = np.arange(44100) / 44100
        x = np.tile((0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), (2, 1))
        y = chain(x, 44100)
        level_db = 20 * np.log10(np.sqrt(np.mean(y[:, 22050:] ** 2)) / np.sqrt(np.mean(x[:, 22050:] ** 2)))
        assert -6.0 < level_db < 6.0, (name, level_db)
        assert np.max(np.abs(y)) <= 10 ** (-0.9 / 20)  # every shipped chain ends in a -1 dB limiter


def test_piano_preset_has_transcription_settings():
    p = load_preset("piano")
    assert p.transcribe is not None and 0 < p.transcribe.onset_threshold < 1 and p.transcribe.pedal


def test_user_preset_by_path_with_relative_vst3(tmp_path, monkeypatch):
    f = tmp_path / "mine.toml"
    f.write_text('name = "mine"\n[[chain]]\nplugin = "Gain"\ngain_db = -3\n'
                 '[[chain]]\nvst3 = "plugins/Comp.vst3"\nparameters = { threshold_db = -20.0 }\n'
                 '[output]\nformat = "wav"\nbit_depth = 16\n')
    p = load_preset(str(f))
    assert p.chain[0] == BuiltinStep("Gain", {"gain_db": -3.0})
    # a relative VST3 is looked up in the standard VST3 folders when loaded, never next to the preset
    assert isinstance(p.chain[1], VST3Step) and p.chain[1].path == "plugins/Comp.vst3"
    assert p.output.format == "wav" and p.output.bit_depth == 16
    assert p.stem == "other" and p.sha256
    monkeypatch.delenv("VST3_PATH", raising=False)
    with pytest.raises(PresetError, match=r"mine.toml \[chain\[1\]\]: .*VST3 plugin not found in the standard VST3 folders"):
        p.build_chain()


BAD = [
    ('bogus = 1', "bogus", "unknown key; allowed: chain, description"),
    ('[[chain]]\nplugin = "Flanger"', "chain[0].plugin", "unknown plugin 'Flanger'; built-ins are: .*Compressor"),
    ('[[chain]]\nplugin = "Gain"\ngain = 1.0', "chain[0].gain", "no parameter 'gain'; allowed: gain_db"),
    ('[[chain]]\nplugin = "Compressor"\nratio = 0.5', "chain[0].ratio", r"out of range; expected a number in \[1, 100\]"),
    ('[[chain]]\nplugin = "Compressor"\nratio = "4"', "chain[0].ratio", "expected a number"),
    ('[[chain]]\nplugin = "HighpassFilter"\nslope_db_per_octave = 10', "chain[0].slope_db_per_octave", "one of 6, 12, 18, 24"),
    ('[[chain]]\ngain_db = 1.0', "chain[0]", "exactly one of: plugin"),
    ('[[chain]]\nvst3 = "x.so"', "chain[0].vst3", "not a .vst3 bundle"),
    ('[[chain]]\nvst3 = "x.vst3"\nparameters = { a = [1] }', "chain[0].parameters.a", "a number or a named value"),
    ('[separate]\nstem = "vocals"', "separate.stem", "'vocals' is not a stem; expected one of piano, bass, drums, guitar, other"),
    ('[separate]\nmodel = "default"', "separate.stem", "missing"),
    ('[transcribe]\nonset_threshold = 1.5', "transcribe.onset_threshold", r"out of range; expected a number in \[0, 1\]"),
    ('[transcribe]\npedal = "yes"', "transcribe.pedal", "expected true or false"),
    ('[transcribe]\nthreshold = 0.5', "transcribe.threshold", "unknown key; allowed: frame_threshold"),
    ('[output]\nformat = "aac"', "output.format", "'aac' is not supported; expected one of wav, flac, ogg, mp3"),
    ('[output]\nformat = "flac"\nbit_depth = 32', "output.bit_depth", r"32 is not allowed for flac; expected one of \(16, 24\)"),
    ('[output]\nformat = "mp3"\nbit_depth = 16', "output.bit_depth", "mp3 has no bit depth setting"),
    ('chain = "Gain"', "chain", r"expected an array of tables"),
    ('name = 3', "name", "expected a string"),
    ('[[chain]\nplugin = "Gain"', None, "not valid TOML"),
]


@pytest.mark.parametrize("text,key,message", BAD)
def test_bad_presets_name_file_key_and_allowed(tmp_path, text, key, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(PresetError) as info:
        load_preset(str(f))
    err = info.value
    assert err.source == str(f)
    assert err.key == key
    assert str(err).startswith(f"{f}" + (f" [{key}]" if key else ""))
    import re
    assert re.search(message, err.message), err.message


def test_unknown_preset_name_lists_shipped():
    with pytest.raises(PresetError, match="no such preset; shipped presets: bass, drums"):
        load_preset("accordion")


def test_unreadable_preset_file(tmp_path):
    with pytest.raises(PresetError, match="cannot read preset"):
        load_preset(str(tmp_path / "missing.toml"))


def test_presets_are_data_not_code(tmp_path):
    # TOML has no way to run code; a Python-looking value stays a string and fails validation
    f = tmp_path / "evil.toml"
    f.write_text('[[chain]]\nplugin = "Gain"\ngain_db = "__import__(\'os\').system(\'touch pwned\')"\n')
    with pytest.raises(PresetError, match="expected a number"):
        load_preset(str(f))
    assert not (tmp_path / "pwned").exists()


def test_preset_is_frozen():
    p = load_preset("bass")
    with pytest.raises(Exception):
        p.name = "x"  # type: ignore[misc]
