#!/usr/bin/env bash
# A loopback demo: bytes travel
#   demo client -> water-pt client -> [WATM plain] -> water-pt server -> [WATM plain] -> echo server
# and back, using the module built into the binary. Everything stays on
# 127.0.0.1 and every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/water-pt
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# The address a process logs in its "listening on ADDR" line.
addr_of() {
  local log=$1
  for _ in $(seq 1 200); do
    if grep -q "listening on " "$log"; then
      grep -o "listening on [0-9.:]*" "$log" | head -n1 | cut -d' ' -f3
      return
    fi
    sleep 0.05
  done
  echo "no listening line in $log" >&2
  cat "$log" >&2
  exit 1
}

python3 - "$tmp/echo.port" <<'PY' &
import socket, sys, threading
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
def serve(c):
    while (d := c.recv(65536)):
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
pids+=($!)
for _ in $(seq 1 200); do [ -s "$tmp/echo.port" ] && break; sleep 0.05; done
echo_addr="127.0.0.1:$(cat "$tmp/echo.port")"

RUST_LOG=info "$bin" server --listen 127.0.0.1:0 --forward "$echo_addr" 2>"$tmp/server.log" &
pids+=($!)
server_addr=$(addr_of "$tmp/server.log")
RUST_LOG=info "$bin" client --listen 127.0.0.1:0 --remote "$server_addr" 2>"$tmp/client.log" &
pids+=($!)
client_addr=$(addr_of "$tmp/client.log")

echo "echo server      $echo_addr"
echo "water-pt server  $server_addr  (built-in module: plain)"
echo "water-pt client  $client_addr  (built-in module: plain)"
python3 - "$client_addr" <<'PY'
import hashlib, os, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
c = socket.create_connection((host, int(port)))
msg = b"hello through WATER"
c.sendall(msg)
got = b""
while len(got) < len(msg):
    got += c.recv(4096)
print("sent    ", msg)
print("received", got)
assert got == msg
data = os.urandom(64 << 20)
t = time.time()
import threading
def send():
    c.sendall(data)
threading.Thread(target=send).start()
h = hashlib.sha256(); n = 0
while n < len(data):
    chunk = c.recv(1 << 20)
    h.update(chunk); n += len(chunk)
dt = time.time() - t
assert h.digest() == hashlib.sha256(data).digest()
print(f"64 MiB echoed intact in {dt:.2f} s ({64/dt:.0f} MiB/s each way) through both modules")
PY
echo "demo OK"
