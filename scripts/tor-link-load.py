#!/usr/bin/env python3
"""Load on a tor bridge's link layer, through a transport that passes bytes
unchanged (water-pt with the `plain` module).

Each connection does what a tor client's connection to its bridge does
first: TLS, VERSIONS, then tor's VERSIONS, CERTS, AUTH_CHALLENGE and NETINFO,
and our NETINFO (tor-spec section 4). That is the work a new client costs a
bridge's tor (the TLS handshake and its link handshake), so the rate of
completed handshakes is the bridge's connection rate.

  handshakes ADDR SECONDS WORKERS   completed link handshakes per second
  bulk ADDR SECONDS CONNECTIONS     MiB/s of PADDING cells into open links
                                    (tor reads, decrypts and drops each cell)

Prints one line: `handshakes N rate R/s` or `bulk BYTES rate R MiB/s`.
"""

import multiprocessing
import socket
import ssl
import struct
import sys
import time

# Link protocol 4 and later: 4-byte circuit ids; 514-byte fixed cells.
CELL_LEN = 514
VERSIONS = struct.pack(">HBH3H", 0, 7, 6, 3, 4, 5)
CMD_NETINFO = 8
CMD_PADDING = 0


def tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # A bridge's TLS certificate is self-signed and random; tor authenticates
    # it with the CERTS cell, which this load does not check.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed during the link handshake")
        buf += chunk
    return buf


def netinfo():
    # Time, the other side's address (IPv4 127.0.0.1), no addresses of ours.
    body = struct.pack(">IBB4sB", 0, 4, 4, socket.inet_aton("127.0.0.1"), 0)
    cell = struct.pack(">IB", 0, CMD_NETINFO) + body
    return cell + b"\0" * (CELL_LEN - len(cell))


def link_handshake(ctx, addr):
    raw = socket.create_connection(addr, timeout=30)
    s = ctx.wrap_socket(raw)
    s.sendall(VERSIONS)
    head = read_exact(s, 5)  # VERSIONS: 2-byte circuit id, command, length
    read_exact(s, struct.unpack(">H", head[3:5])[0])
    while True:
        circ_cmd = read_exact(s, 5)
        cmd = circ_cmd[4]
        if cmd >= 128:  # variable-length: CERTS, AUTH_CHALLENGE, VPADDING
            read_exact(s, struct.unpack(">H", read_exact(s, 2))[0])
        else:
            read_exact(s, CELL_LEN - 5)
            if cmd == CMD_NETINFO:
                break
    s.sendall(netinfo())
    return s


def run_workers(n, worker, args):
    """Runs worker(args) in n processes (threads would share one interpreter
    lock, and the load generator would measure itself) and returns the sum
    of their results."""
    with multiprocessing.Pool(n) as pool:
        try:
            return sum(pool.map(worker, [args] * n))
        except Exception as e:
            sys.exit(f"tor-link-load: a worker failed: {e!r}")


def handshake_worker(args):
    addr, deadline = args
    ctx = tls_context()
    done = 0
    while time.time() < deadline:
        link_handshake(ctx, addr).close()
        done += 1
    return done


def handshakes(addr, seconds, workers):
    start = time.time()
    deadline = start + seconds
    total = run_workers(workers, handshake_worker, (addr, deadline))
    elapsed = time.time() - start
    print(f"handshakes {total} rate {total / elapsed:.1f}/s")


def bulk_worker(args):
    addr, start, seconds = args
    s = link_handshake(tls_context(), addr)
    chunk = (struct.pack(">IB", 0, CMD_PADDING) + b"\0" * (CELL_LEN - 5)) * 128
    # Every link is open before the clock starts.
    while time.time() < start:
        time.sleep(0.01)
    sent = 0
    while time.time() < start + seconds:
        s.sendall(chunk)
        sent += len(chunk)
    s.close()
    return sent


def bulk(addr, seconds, connections):
    start = time.time() + 2
    total = run_workers(connections, bulk_worker, (addr, start, seconds))
    print(f"bulk {total} rate {total / seconds / (1 << 20):.1f} MiB/s")


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("handshakes", "bulk"):
        sys.exit(__doc__)
    host, port = sys.argv[2].rsplit(":", 1)
    addr = (host, int(port))
    seconds, n = float(sys.argv[3]), int(sys.argv[4])
    (handshakes if sys.argv[1] == "handshakes" else bulk)(addr, seconds, n)


if __name__ == "__main__":
    main()
