#!/usr/bin/env bash
# Build rfake's Debian package from this repository:
#   packaging/build-deb.sh [OUTDIR]          (default: target/debian)
# Writes OUTDIR/rfake_VERSION_ARCH.deb (and rfake-dbgsym_*.deb, the split-out
# debug information). Needs dpkg-dev, debhelper, the Build-Depends of
# packaging/debian/control, and cargo/rustc >= 1.85 in PATH (rustup).
# The source tree (tracked and untracked-but-not-ignored files) is copied to
# OUTDIR/rfake-VERSION with packaging/debian as its debian/; cargo builds into
# the repository's target/ (CARGO_TARGET_DIR), so a release build made
# before is reused for the dependencies.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-$repo/target/debian}")
cd "$repo"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
deb_version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
if [ "${deb_version%-*}" != "$version" ]; then
  echo "build-deb.sh: Cargo.toml says $version, packaging/debian/changelog $deb_version: add a changelog entry" >&2
  exit 1
fi
for tool in cargo rustc dpkg-buildpackage dh; do
  command -v "$tool" >/dev/null || { echo "build-deb.sh: $tool not found" >&2; exit 1; }
done

# The commit for `rfake --version`: the copy is no git checkout.
RFAKE_GIT_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  RFAKE_GIT_COMMIT="$RFAKE_GIT_COMMIT-dirty"
fi
export RFAKE_GIT_COMMIT
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}

src=$out/rfake-$version
rm -rf "$src"
mkdir -p "$src"
git ls-files -z --cached --others --exclude-standard \
  | tar --null -T - -cf - | tar -xf - -C "$src"
cp -r packaging/debian "$src/debian"
rm -f "$out"/rfake_*.deb "$out"/rfake-dbgsym_*.deb "$out"/rfake_*.buildinfo "$out"/rfake_*.changes
(cd "$src" && dpkg-buildpackage -b -us -uc)
rm -rf "$src"
ls "$out"/rfake_*.deb
