#!/usr/bin/env bash
# Fetches DataFusion 55.2.0's sqllogictest corpus (the test_files of the
# datafusion-sqllogictest crate, from crates.io) into target/slt-corpus.
set -euo pipefail
version=55.2.0
dest="${1:-target/slt-corpus}"
if [ -d "$dest/test_files" ]; then
  echo "$dest/test_files"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -sSfL -o "$tmp/crate.tar.gz" \
  "https://static.crates.io/crates/datafusion-sqllogictest/datafusion-sqllogictest-$version.crate"
tar xzf "$tmp/crate.tar.gz" -C "$tmp"
mkdir -p "$dest"
mv "$tmp/datafusion-sqllogictest-$version"/* "$dest/"
echo "$dest/test_files"
