#!/bin/sh
# Installs the build dependencies if they are missing (asking nothing),
# builds clamsentry and runs it in the foreground on the demo configuration:
# Unix socket /tmp/clamsentry-demo.sock, TCP 127.0.0.1:3311, signatures that
# detect the EICAR test string and every file of Debian's clamav-testfiles.
#
# The signatures are copied to a fresh directory under /tmp first: when run
# as root, the scanning worker runs as "nobody" and could not read them
# inside a checkout under /root.
set -eu
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh build
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release
dir=$(mktemp -d /tmp/clamsentry-demo.XXXXXX)
cp demo/db/* "$dir/"
chmod 755 "$dir"
chmod 644 "$dir"/*
sed "s|^directory = .*|directory = \"$dir\"|" demo/clamsentry.toml > "$dir/clamsentry.toml"
echo "clamsentry demo: signatures and configuration in $dir; Ctrl-C stops it"
exec target/release/clamsentry --config "$dir/clamsentry.toml"
