#!/usr/bin/env bash
# Builds the Debian package: the release binary, its manual pages and shell completions
# (generated from the binary itself), then `cargo deb` (metadata in crates/werk/Cargo.toml).
# Prints the path of the .deb. Needs cargo-deb (`cargo install cargo-deb`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p werk >&2
W=target/release/werk
OUT=target/packaging
rm -rf "$OUT"
mkdir -p "$OUT/man" "$OUT/completions"
"$W" man "$OUT/man"
gzip -9n "$OUT"/man/*.1
"$W" completions bash > "$OUT/completions/werk.bash"
"$W" completions zsh > "$OUT/completions/_werk"
"$W" completions fish > "$OUT/completions/werk.fish"
cargo deb -p werk --no-build --strip 2>&1 | tail -1
