#!/usr/bin/env bash
# Debian packages the tests and the data generator need: a real VST3 plugin for the chain tests
# (zam-plugins), fluidsynth and the soundfonts (MuseScore General only for the held-out test split).
# Installs only what is missing; a no-op on a prepared machine. Other scripts pass their own
# package list as arguments (scripts/plugin-deps.sh).
set -euo pipefail
pkgs=("$@")
((${#pkgs[@]})) || pkgs=(zam-plugins fluidsynth fluid-soundfont-gm timgm6mb-soundfont musescore-general-soundfont-small)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
echo "sysdeps: installing ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
