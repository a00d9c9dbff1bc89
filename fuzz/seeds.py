#!/usr/bin/env python3
"""Writes the committed seed corpus (fuzz/corpus/<target>/seed-*). Re-run after changing it.

The seeds are what tor and a WATM really send, so the fuzzer starts from the interesting parts
of each input space instead of having to discover magic bytes and framing."""
import hashlib
import hmac
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
CONFIG = "eyJyZW1vdGUiOiIxOTIuMC4yLjE6NDQzIiwia2V5IjoiMDEyMzQ1Njc4OWFiY2RlZiJ9" * 3


def tor_split(args):
    """tor's packing: first 255 bytes in the username, the rest (or a lone NUL) as password."""
    b = args.encode()
    user, rest = b[:255], b[255:]
    return user, (rest if rest else b"\0")


# socks_args: [u16 LE username length][username][password]
for name, args in [
    ("wasm", "water-wasm=plain.wasm"),
    ("pinned", "water-wasm=plain.wasm;water-sha256=" + SHA),
    ("long", "water-wasm=https://example.org/m.wasm;water-sha256=" + SHA + ";water-config=" + CONFIG),
    ("escaped", "water-config=e30;other=a\\;b\\\\c=d;water-sha256=" + SHA.upper()),
    ("foreign", "cert=ssH+9rP8dG2NLDN2XuFw63hIO/9MNNinLmxQDpVa+7kTOa9/m+tGWT1SmSYpQ9uTBGa6Hw;iat-mode=0"),
]:
    user, pw = tor_split(args)
    put("socks_args", name, struct.pack("<H", len(user)) + user + pw)


# socks_handshake: [chunk size][mode bits][what tor's client sends]
def userpass(user, pw):
    return bytes([1, len(user)]) + user + bytes([len(pw)]) + pw


CONNECT_V4 = bytes([5, 1, 0, 1, 192, 0, 2, 1, 0x01, 0xBB])
CONNECT_V6 = bytes([5, 1, 0, 4]) + bytes.fromhex("20010db8000000000000000000000001") + b"\x01\xbb"
CONNECT_DOMAIN = bytes([5, 1, 0, 3, 11]) + b"example.org" + b"\x01\xbb"
u, p = tor_split("water-wasm=plain.wasm;water-sha256=" + SHA)
put("socks_handshake", "tor-args", bytes([255, 5]) + bytes([5, 2, 0, 2]) + userpass(u, p) + CONNECT_V4)
u, p = tor_split("water-wasm=https://example.org/m.wasm;water-sha256=" + SHA + ";water-config=" + CONFIG)
put("socks_handshake", "tor-long-args", bytes([7, 5]) + bytes([5, 2, 0, 2]) + userpass(u, p) + CONNECT_V6)
put("socks_handshake", "no-auth", bytes([1, 4]) + bytes([5, 1, 0]) + CONNECT_DOMAIN)
put("socks_handshake", "bind", bytes([3, 0]) + bytes([5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80]))

# server_env: the environment tor gives a server-side managed proxy, and a client-side one.
put("server_env", "tor-server", b"""TOR_PT_MANAGED_TRANSPORT_VER=1
TOR_PT_STATE_LOCATION=/var/lib/tor/pt_state/
TOR_PT_EXIT_ON_STDIN_CLOSE=1
TOR_PT_SERVER_TRANSPORTS=water,obfs4
TOR_PT_SERVER_BINDADDR=water-0.0.0.0:9443,obfs4-[::]:9444
TOR_PT_SERVER_TRANSPORT_OPTIONS=water:water-wasm=plain.wasm;water:water-config=e30;obfs4:iat-mode=0;water:note=a\\:b\\;c\\\\d=e
TOR_PT_ORPORT=127.0.0.1:9001
TOR_PT_EXTENDED_SERVER_PORT=127.0.0.1:36789
TOR_PT_AUTH_COOKIE_FILE=/var/lib/tor/extended_orport_auth_cookie
TOR_PT_OUTBOUND_BIND_ADDRESS_V4=192.0.2.5
TOR_PT_OUTBOUND_BIND_ADDRESS_V6=[2001:db8::5]""")
put("server_env", "tor-client", b"""TOR_PT_MANAGED_TRANSPORT_VER=1
TOR_PT_STATE_LOCATION=/var/lib/tor/pt_state/
TOR_PT_CLIENT_TRANSPORTS=water
TOR_PT_PROXY=socks5://127.0.0.1:9050""")

# extor_client: flags | auth_len | auth types | server nonce | wrong hash | status | tor's commands
# The tor side of a real exchange: "\x01\x00" (SAFE_COOKIE only), the hashes, status 1, OKAY,
# then the first OR-protocol bytes (a VERSIONS cell) that must stay with the client.
nonce = bytes(range(32))
versions_cell = bytes.fromhex("0000070006000300040005")
okay = b"\x10\x00\x00\x00"
put("extor_client", "okay", bytes([1]) + struct.pack("<H", 2) + b"\x01\x00" + nonce + bytes(32) + b"\x01" + okay + versions_cell)
put("extor_client", "okay-v6", bytes([3]) + struct.pack("<H", 3) + b"\x02\x01\x00" + nonce + bytes(32) + b"\x01" + b"\x77\x77\x00\x02hi" + okay)
put("extor_client", "deny", bytes([1]) + struct.pack("<H", 2) + b"\x01\x00" + nonce + bytes(32) + b"\x01" + b"\x10\x01\x00\x00")
put("extor_client", "rejected", bytes([1]) + struct.pack("<H", 2) + b"\x01\x00" + nonce + bytes(32) + b"\x00")


# wasi_guest_memory: [u16 LE image length][image][48-byte records: op, a0..a10]
OPS = ["fd_write", "fd_read", "poll_oneoff", "path_open", "fd_prestat_dir_name", "fd_seek",
       "random_get", "water_dial", "fd_prestat_get", "fd_tell", "fd_filestat_get",
       "path_filestat_get", "fd_fdstat_get", "sock_send", "sock_recv", "fd_close",
       "clock_time_get", "sock_shutdown", "fd_fdstat_set_flags", "water_dial_fixed",
       "water_accept", "proc_exit"]


def rec(op, *args):
    args = list(args) + [0] * (11 - len(args))
    return struct.pack("<12I", OPS.index(op), *[a & 0xFFFFFFFF for a in args])


def wasi(image, records):
    return struct.pack("<H", len(image)) + image + b"".join(records)


img = bytearray(0x1000)
struct.pack_into("<II", img, 0x100, 0x200, 5)          # iovec -> "hello"
img[0x200:0x205] = b"hello"
struct.pack_into("<II", img, 0x110, 0x280, 64)         # iovec -> read buffer
img[0x500:0x508] = b"watm.cfg"
# poll subscriptions at 0x400: clock (relative 1 us), read on the caller, write on the network.
struct.pack_into("<QB7xIIQQH6x", img, 0x400, 1, 0, 1, 0, 1000, 0, 0)
struct.pack_into("<QB7xI28x", img, 0x430, 2, 1, 4)
struct.pack_into("<QB7xI28x", img, 0x460, 3, 2, 5)
# water_dial: network and address as iovec arrays.
struct.pack_into("<II", img, 0x900, 0x920, 3)
struct.pack_into("<II", img, 0x910, 0x930, 12)
img[0x920:0x923] = b"tcp"
img[0x930:0x93C] = b"water.fuzz:7"
put("wasi_guest_memory", "tour", wasi(bytes(img), [
    rec("fd_write", 4, 0x100, 1, 0x300),
    rec("fd_write", 2, 0x100, 1, 0x300),
    rec("poll_oneoff", 0x400, 0x800, 3, 0x300),
    rec("fd_read", 4, 0x110, 1, 0x300),
    rec("sock_recv", 5, 0x110, 1, 0, 0x300, 0x304),
    rec("sock_send", 5, 0x100, 1, 0, 0x300),
    rec("path_open", 3, 0, 0x500, 8, 0, 0, 0, 0, 0, 0x300),
    rec("fd_prestat_get", 3, 0x600),
    rec("fd_prestat_dir_name", 3, 0x600, 16),
    rec("fd_seek", 7, 4, 0, 0, 0x300),
    rec("fd_read", 7, 0x110, 1, 0x300),
    rec("fd_tell", 7, 0x300),
    rec("fd_filestat_get", 7, 0x700),
    rec("path_filestat_get", 3, 0, 0x500, 8, 0x700),
    rec("fd_fdstat_get", 4, 0x700),
    rec("random_get", 0x700, 64),
    rec("water_dial", 0x900, 1, 0x910, 1),
    rec("clock_time_get", 1, 0, 0x300),
    rec("sock_shutdown", 5, 2),
    rec("fd_close", 7),
    rec("water_dial_fixed"),
    rec("water_accept"),
]))
put("wasi_guest_memory", "edges", wasi(bytes(img), [
    rec("fd_write", 4, 0xFFFFFFF8, 1, 0x300),
    rec("fd_write", 4, 0x100, 0xFFFFFFFF, 0x300),
    rec("fd_read", 4, 0x100, 1, 0xFFFFFFFE),
    rec("poll_oneoff", 0xFFFFFFD0, 0x800, 1, 0x300),
    rec("poll_oneoff", 0x400, 0x800, 0, 0x300),
    rec("poll_oneoff", 0x400, 0xFFFFFFF0, 3, 0x300),
    rec("path_open", 3, 0, 0xFFFFFFFF, 8, 0, 0, 0, 0, 0, 0x300),
    rec("path_open", 3, 0, 0x500, 8, 9, 0x40, 0, 0, 0, 0x300),
    rec("fd_prestat_dir_name", 3, 0xFFFFFFFF, 16),
    rec("fd_prestat_dir_name", 3, 0x600, 0x80000000),
    rec("fd_seek", 3, 0xFFFFFFFF, 0x7FFFFFFF, 1, 0x300),
    rec("fd_seek", 7, 0, 0x80000000, 2, 0x300),
    rec("random_get", 0xFFFF0000, 0x20000),
    rec("random_get", 0, 0xFFFFFFFF),
    rec("water_dial", 0x900, 0x20000000, 0x910, 1),
    rec("water_dial", 0xFFFFFFFC, 1, 0x910, 1),
    rec("fd_close", 0xFFFFFFFF),
    rec("proc_exit", 3),
]))

# delivery_request: the 42 bytes a client sends the bridge's delivery port.
PIN = hashlib.sha256(b"module").digest()
put("delivery_request", "get", b"WATD\x01\x01" + struct.pack(">I", 16 << 20) + PIN)
put("delivery_request", "bad-command", b"WATD\x01\x02" + struct.pack(">I", 1) + PIN)

# delivery_response: [chunk size][limit: u16 LE][what the bridge sends]
MODULE = b"\x00asm\x01\x00\x00\x00"
put("delivery_response", "module", bytes([5]) + struct.pack("<H", 100) + b"WATD\x01\x00" + struct.pack(">I", len(MODULE)) + MODULE)
put("delivery_response", "rate-limited", bytes([10]) + struct.pack("<H", 100) + b"WATD\x01\x02" + struct.pack(">I", 600))
put("delivery_response", "oversized", bytes([1]) + struct.pack("<H", 4) + b"WATD\x01\x00" + struct.pack(">I", 1 << 30))
put("delivery_response", "truncated", bytes([3]) + struct.pack("<H", 100) + b"WATD\x01\x00" + struct.pack(">I", 50) + MODULE)
