"""A SCRAM-SHA-256 client that stops between the server's first message and
its own final one until GATE exists, then finishes the login and runs SQL
(simple protocol). Standard library only.

usage: scram_race.py PORT USER PASSWORD GATE SQL
Prints 'authenticated', then each statement's rows or 'ERROR <sqlstate> …'.
"""

import base64
import hashlib
import hmac
import os
import socket
import struct
import sys
import time

port, user, password, gate, sql = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
s = socket.create_connection(("127.0.0.1", port))


def send(kind, body):
    s.sendall(kind + struct.pack("!I", len(body) + 4) + body)


def recv_exact(n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise EOFError("connection closed")
        b += chunk
    return b


def recv():
    kind = recv_exact(1)
    (n,) = struct.unpack("!I", recv_exact(4))
    return kind, recv_exact(n - 4)


def fields(body):
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode(errors="replace")
    return out


params = b"user\0" + user.encode() + b"\0database\0dpq\0\0"
s.sendall(struct.pack("!II", len(params) + 8, 196608) + params)
kind, body = recv()
assert kind == b"R" and struct.unpack("!I", body[:4])[0] == 10, (kind, body)
nonce = base64.b64encode(os.urandom(18)).decode()
first_bare = "n=,r=" + nonce
first = ("n,," + first_bare).encode()
send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)
kind, body = recv()
assert kind == b"R" and struct.unpack("!I", body[:4])[0] == 11, (kind, body)
server_first = body[4:].decode()
attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
print("server-first received", flush=True)
end = time.time() + 30
while not os.path.exists(gate) and time.time() < end:
    time.sleep(0.05)
salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
client_key = hmac.new(salted, b"Client Key", "sha256").digest()
stored_key = hashlib.sha256(client_key).digest()
final_bare = "c=biws,r=" + attrs["r"]
auth_message = (first_bare + "," + server_first + "," + final_bare).encode()
signature = hmac.new(stored_key, auth_message, "sha256").digest()
proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
send(b"p", (final_bare + ",p=" + proof).encode())
while True:
    kind, body = recv()
    if kind == b"E":
        f = fields(body)
        print("ERROR", f.get("C"), f.get("M"), flush=True)
        sys.exit(0)
    if kind == b"Z":
        break
print("authenticated", flush=True)
send(b"Q", sql.encode() + b"\0")
while True:
    kind, body = recv()
    if kind == b"D":
        print("row", flush=True)
    elif kind == b"E":
        f = fields(body)
        print("ERROR", f.get("C"), f.get("M"), flush=True)
    elif kind == b"Z":
        break
