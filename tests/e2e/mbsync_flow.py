"""mbsync (isync) mirrors a mailbox of 1,000 varied messages to a Maildir
and back, and a run with nothing to do changes nothing.

usage: mbsync_flow.py WORKDIR HOST IMAP_PORT CA_FILE USER PASSWORD
"""
import imaplib
import os
import re
import socket
import ssl
import subprocess
import sys

from corpus import corpus

work, host, port, cafile, user, password = sys.argv[1:7]
N = 1000


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def imap():
    m = imaplib.IMAP4(host, int(port))
    m.starttls(ssl_context=ssl.create_default_context(cafile=cafile))
    m.login(user, password)
    # imaplib sends a literal and its closing CRLF in two writes; without
    # NODELAY each APPEND waits out a delayed ACK.
    m.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return m


def lf(b):
    # mbsync marks what it stores in a Maildir with an X-TUID header line.
    return re.sub(rb"\nX-TUID: [^\n]*", b"", b.replace(b"\r\n", b"\n"))


msgs = corpus(N, seed=3)
m = imap()
m.create("Mirror")
for i, raw in enumerate(msgs):
    typ, data = m.append("Mirror", r"(\Seen)" if i % 3 == 0 else None, None, raw)
    check(typ == "OK", f"append {i}: {data}")

m.select("Mirror", readonly=True)
typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[])")
check([part[1] for part in data if isinstance(part, tuple)] == msgs,
      "BODY[] of every message equals the bytes appended")
m.unselect()

maildir = os.path.join(work, "maildir")
os.makedirs(maildir)
rc = os.path.join(work, "mbsyncrc")
with open(rc, "w") as f:
    f.write(f"""IMAPAccount cofre
Host {host}
Port {port}
User {user}
Pass "{password}"
SSLType STARTTLS
CertificateFile {cafile}
AuthMechs LOGIN
# The default of 20 s is for a release build on a quiet machine; this is
# a debug build on a busy one. A server that stops answering still fails.
Timeout 60

IMAPStore far
Account cofre

MaildirStore near
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel mirror
Far :far:
Near :near:
Patterns Mirror
Create Both
Expunge Both
SyncState *
Sync All
""")


def mbsync():
    # -D: the protocol exchange, whose end is shown if the run fails.
    r = subprocess.run(["mbsync", "-D", "-c", rc, "-a"], capture_output=True, text=True)
    tail = "\n".join((r.stdout + r.stderr).splitlines()[-80:])
    check(r.returncode == 0, f"mbsync failed; the end of its exchange:\n{tail}")


def maildir_files():
    out = {}
    for sub in ("cur", "new"):
        d = os.path.join(maildir, "Mirror", sub)
        for name in os.listdir(d):
            with open(os.path.join(d, name), "rb") as f:
                out[name] = f.read()
    return out


def server_state():
    typ, data = m.status("Mirror", "(MESSAGES UIDNEXT HIGHESTMODSEQ)")
    return data[0]


# 1. Server → Maildir.
mbsync()
files = maildir_files()
check(len(files) == N, f"{len(files)} files in the Maildir, expected {N}")
missing = set(lf(b) for b in msgs) - set(lf(b) for b in files.values())
extra = set(lf(b) for b in files.values()) - set(lf(b) for b in msgs)
check(not missing, f"every message arrived intact; {len(missing)} differ, e.g.\n"
      f"{sorted(missing)[:1]!r}\nbecame\n{sorted(extra)[:1]!r}")
seen = [n for n in files if re.search(r":2,[A-Z]*S", n)]
check(len(seen) == len(range(0, N, 3)), f"\\Seen carried over: {len(seen)}")

# 2. Maildir → server: flag 10, delete 10, add 20.
names = sorted(files)
cur = os.path.join(maildir, "Mirror", "cur")
newdir = os.path.join(maildir, "Mirror", "new")


def path_of(name):
    for d in (cur, newdir):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    raise SystemExit(f"missing {name}")


for name in names[:10]:
    base, _, flags = name.partition(":2,")
    os.rename(path_of(name), os.path.join(cur, f"{base}:2,{''.join(sorted(flags + 'F'))}"))
for name in names[10:20]:
    os.remove(path_of(name))
added = corpus(20, seed=99)
for i, raw in enumerate(added):
    raw = raw.replace(b"corpus-", b"added-")
    added[i] = raw
    with open(os.path.join(newdir, f"17000000{i:02}.added{i}.host"), "wb") as f:
        f.write(lf(raw))
mbsync()

m.select("Mirror")
typ, data = m.uid("SEARCH", "ALL")
uids = data[0].split()
check(len(uids) == N - 10 + 20, f"server has {len(uids)} messages after the push")
typ, data = m.uid("SEARCH", "FLAGGED")
check(len(data[0].split()) == 10, f"10 flagged on the server: {data}")
typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[])")
bodies = [part[1] for part in data if isinstance(part, tuple)]
# mbsync inserts its X-TUID header into what it uploads; apart from that
# line, the server holds exactly the Maildir file with CRLF line ends.
stored = [re.sub(rb"X-TUID: [^\r]*\r\n", b"", b, count=1) for b in bodies]
for raw in added:
    check(raw in stored, f"a message added in the Maildir arrives exact:\n{raw!r}")

# 3. A run with nothing to do changes nothing on either side.
before = (server_state(), sorted(maildir_files()))
mbsync()
after = (server_state(), sorted(maildir_files()))
check(before == after, f"a second run changed something:\n{before[0]}\n{after[0]}")
m.logout()
print(f"mbsync: {N} messages mirrored to a Maildir and back; a second run changed nothing")
