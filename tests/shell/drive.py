"""Drive `dpq shell` through a pseudo-terminal as a person would: type,
press Tab and the arrow keys, read the screen. Standard library only.

usage: drive.py DPQ DATA HISTORY_FILE
Exits 0 when every step saw what it expected; prints the transcript otherwise.
"""

import os
import pty
import select
import sys
import time

dpq, data, history = sys.argv[1], sys.argv[2], sys.argv[3]
env = dict(os.environ, TERM="xterm", DPQ_HISTORY=history, DPQ_NO_PROGRESS="1", COLUMNS="200", LINES="50")
pid, fd = pty.fork()
if pid == 0:
    os.execvpe(dpq, [dpq, "--data", data, "shell"], env)

transcript = b""
cursor = 0


def read_until(marker, timeout=60.0):
    """Read the terminal until `marker` appears after the cursor; move the
    cursor past it."""
    global transcript, cursor
    end = time.time() + timeout
    while True:
        at = transcript.find(marker.encode(), cursor)
        if at >= 0:
            seen = transcript[cursor : at + len(marker)].decode(errors="replace")
            cursor = at + len(marker)
            return seen
        if time.time() > end:
            break
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            transcript += chunk
    raise AssertionError(f"did not see {marker!r}; transcript:\n{transcript.decode(errors='replace')}")


def typed(keys):
    for k in keys:
        os.write(fd, k.encode())
        time.sleep(0.02)


def step(keys, expect, what):
    typed(keys)
    out = read_until(expect)
    print("ok:", what)
    return out


read_until("dpq> ")
step(".tables\r", "emoji_catalog", ".tables lists the configuration's tables")
read_until("dpq> ")
step(".schema messages\r", "[0, 2000]", ".schema shows bounds")
read_until("dpq> ")
# a statement over two lines; Tab completes `cal` to `calls`
typed("SELECT COUNT(*) AS n\r")
time.sleep(0.3)
typed("FROM cal\t")
read_until("calls")
out = step(";\r", "privacy: ε=", "a multi-line statement, completed with Tab, is answered and charged")
read_until("dpq> ")
# the up arrow brings the statement back; asking again replays it for free
out = step("\x1b[A\r", "replayed", "history: the same question again is a free replay")
read_until("dpq> ")
step(".explain on\r", "explain on", ".explain on")
read_until("dpq> ")
step("SELECT AVG(length) FROM messages;\r", "cost: ε=", "explained, not run")
read_until("dpq> ")
step(".explain off\r", "explain off", ".explain off")
read_until("dpq> ")
step(".format json\r", "dpq> ", ".format json")
step("SELECT COUNT(*) AS m FROM users;\r", '"columns"', "JSON output")
read_until("dpq> ")
step("SELECT COUNT(*) FROM mesages;\r", "did you mean `messages`?", "an error teaches and the shell goes on")
read_until("dpq> ")
step(".budgt\r", "did you mean .budget?", "a mistyped dot command")
read_until("dpq> ")
step(".budget\r", "left", ".budget")
read_until("dpq> ")
typed(".quit\r")
_, status = os.waitpid(pid, 0)
assert os.WEXITSTATUS(status) == 0, f"exit status {status}"
saved = open(history).read()
assert "FROM calls;" in saved, f"the history file keeps the statements: {saved!r}"
print("ok: .quit, and the history was saved")
print("all shell steps passed")
