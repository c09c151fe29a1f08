# Every target creates or updates .venv from nothing; see README.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EXTRAS ?= test,train,dist,live
comma  := ,
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
JOBS   ?= 2

.PHONY: demo test bench bench-extras data sysdeps install clean plugin

sysdeps:
	@scripts/sysdeps.sh

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

install: sysdeps $(STAMP)

demo: install
	$(BIN)/dawsep separate demo/demo_song.flac -o demo-out/stems
	$(BIN)/dawsep separate demo/demo_song.flac -o demo-out/piano --preset piano --plot
	$(BIN)/python scripts/demo_score.py demo-out/stems/demo_song demo/demo_song.reference demo-out/piano/demo_song/piano.mid
	@echo "demo: stems in demo-out/stems/demo_song/, the piano preset's stem, piano.mid and piano.png in demo-out/piano/demo_song/"

test: install plugin
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The VST3 plugin (docs/plugin.md): JUCE from Debian, the bridge built against this venv's Python.
# Rebuilt only when plugin/ changes (or an output is missing).
PLUGIN_OUT := build/dawsep.vst3/Contents/x86_64-linux/dawsep.so build/dawsep-vst3-host
plugin: $(PLUGIN_OUT)

$(PLUGIN_OUT) &: $(shell find plugin -type f) | $(STAMP)
	@scripts/plugin-deps.sh
	cmake -S plugin -B build/plugin -DCMAKE_BUILD_TYPE=Release -DDAWSEP_PYTHON=$(abspath $(BIN)/python) -DDAWSEP_OUT_DIR=$(abspath build)
	cmake --build build/plugin -j$(JOBS)
	@touch $(PLUGIN_OUT)

bench: install bench-extras
	$(BIN)/python -m bench.run --out docs/BENCHMARKS.md

bench-extras: install
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS),bench]"
	$(BIN)/python -m pip install -q --no-deps "basic-pitch==0.4.0"

data: install
	$(BIN)/dawsep-train data synth --out $${DAWSEP_DATA:-$$HOME/.cache/dawsep/data} --hours $${HOURS:-10} --piano-hours $${PIANO_HOURS:-5} --seed $${SEED:-0} --jobs $(JOBS)

clean:
	rm -rf $(VENV) build *.egg-info demo-out
