# Helpers for the scripts that run real processes on loopback; sourced, not run.

# free_port: a TCP port on 127.0.0.1 that is free now, taken at random below
# Linux's ephemeral range (32768 and up). A port the kernel handed out for
# "port 0" is closed again before the program that needs it binds it, and in
# that window the kernel may hand the same port to another test's connection.
free_port() {
  python3 -c '
import random, socket
for _ in range(1000):
    port = random.randrange(20000, 32768)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(port)
    break
else:
    raise SystemExit("no free port")
'
}

# wait_for FILE PATTERN WHAT [PID...]: polls FILE for PATTERN (a grep regex)
# for up to $timeout_s seconds (default 60); fails at once when one of the
# PIDs has exited, since what it would have written will not come.
wait_for() {
  local file=$1 pattern=$2 what=$3 p
  shift 3
  local deadline=$((SECONDS + ${timeout_s:-60}))
  while [ $SECONDS -lt $deadline ]; do
    grep -q -- "$pattern" "$file" 2>/dev/null && return 0
    for p in "$@"; do
      kill -0 "$p" 2>/dev/null || { echo "$(basename "$0"): a process exited while waiting for $what" >&2; return 1; }
    done
    sleep 0.1
  done
  echo "$(basename "$0"): timed out waiting for $what (no \"$pattern\" in $file)" >&2
  return 1
}
