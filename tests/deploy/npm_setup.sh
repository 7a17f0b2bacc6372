#!/usr/bin/env bash
# Installs the pinned npm tools of the deploy checks (package-lock.json) into
# NODE_DIR, outside the source tree. Skips npm when NODE_DIR already holds
# exactly this lock file's install.
# Usage: npm_setup.sh SOURCE_DIR NODE_DIR
set -euo pipefail
src=$1
dir=$2
mkdir -p "$dir"
if [ -d "$dir/node_modules" ] && cmp -s "$src/package-lock.json" "$dir/package-lock.json" \
   && cmp -s "$src/package-lock.json" "$dir/.installed-lock"; then
  echo "npm_setup: $dir is up to date"
  exit 0
fi
cp "$src/package.json" "$src/package-lock.json" "$dir/"
cd "$dir"
npm ci --no-audit --no-fund --loglevel=error
cp package-lock.json .installed-lock
for tool in tsc buf dockerfile-utils; do
  [ -x "node_modules/.bin/$tool" ] || { echo "npm_setup: $tool missing after npm ci"; exit 1; }
done
echo "npm_setup: installed $(ls node_modules | wc -l) packages into $dir"
