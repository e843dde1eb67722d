"""Python's poplib runs whole POP3 sessions against `cofre serve`, then
fetchmail retrieves a mailbox of 600 varied messages; every message comes
back as the bytes that arrived (lines beginning with a dot included).

usage: pop3_flow.py WORKDIR HOST IMAP POP3 POP3S HTTP CA_FILE USER PASSWORD
"""
import base64
import imaplib
import json
import os
import poplib
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

from corpus import corpus

work, host, imap_port, pop3_port, pop3s_port, http_port, cafile, user, password = sys.argv[1:10]
N = 600
ctx = ssl.create_default_context(cafile=cafile)


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def imap():
    m = imaplib.IMAP4(host, int(imap_port))
    m.starttls(ssl_context=ctx)
    m.login(user, password)
    m.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return m


def inbox_count():
    m = imap()
    typ, data = m.status("INBOX", "(MESSAGES)")
    m.logout()
    return int(data[0].split(b"MESSAGES ")[1].rstrip(b")"))


def pop_stls():
    p = poplib.POP3(host, int(pop3_port), timeout=30)
    p.stls(context=ctx)
    p.user(user)
    p.pass_(password)
    return p


def settings(body):
    req = urllib.request.Request(
        f"http://{host}:{http_port}/v1/settings/pop3", method="PUT",
        data=json.dumps(body).encode(), headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()})
    with urllib.request.urlopen(req) as r:
        check(r.status == 200, f"PUT settings: {r.status}")


def wire(raw):
    # What a POP3 client rebuilds from the lines it got: CRLF line ends.
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"


msgs = corpus(N, seed=11)
m = imap()
for i, raw in enumerate(msgs):
    typ, data = m.append("INBOX", None, None, raw)
    check(typ == "OK", f"append {i}: {data}")
typ, data = m.status("INBOX", "(UIDVALIDITY)")
validity = int(data[0].split(b"UIDVALIDITY ")[1].rstrip(b")"))
m.logout()

# 1. A whole session over STLS with USER/PASS.
p = poplib.POP3(host, int(pop3_port), timeout=30)
caps = p.capa()
for c in ["STLS", "TOP", "UIDL", "USER", "SASL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]:
    check(c in caps, f"CAPA lists {c}: {caps}")
p.stls(context=ctx)
check("STLS" not in p.capa(), "no STLS once TLS is on")
p.user(user)
check(p.pass_(password).startswith(b"+OK"), "PASS")
count, size = p.stat()
check(count == N, f"STAT counts {N}: {count}")
check(size == sum(len(x) for x in msgs), "STAT's octets are the messages' sizes")
resp, listing, _ = p.list()
check([int(l.split()[1]) for l in listing] == [len(x) for x in msgs], "LIST sizes")
resp, uidls, _ = p.uidl()
check([l.split()[1].decode() for l in uidls] == [f"{validity}.{i + 1}" for i in range(N)],
      "UIDL is the Inbox's UIDVALIDITY and the IMAP UID")
for i in [0, 1, 3, 8, 17, 599]:
    resp, lines, octets = p.retr(i + 1)
    check(b"\r\n".join(lines) + b"\r\n" == wire(msgs[i]), f"RETR {i + 1} byte for byte")
resp, lines, _ = p.top(1, 0)
head = msgs[0].split(b"\r\n\r\n", 1)[0]
check(b"\r\n".join(lines) == head + b"\r\n", "TOP n 0 is the header and the blank line")
p.dele(1)
try:
    p.retr(1)
    check(False, "a deleted message cannot be retrieved")
except poplib.error_proto:
    pass
p.rset()
p.dele(2)
p.noop()

# 2. A second session meanwhile is told the maildrop is in use.
q = poplib.POP3_SSL(host, int(pop3s_port), context=ctx, timeout=30)
q.user(user)
try:
    q.pass_(password)
    check(False, "a second session gets the maildrop")
except poplib.error_proto as e:
    check(b"[IN-USE]" in e.args[0], f"[IN-USE]: {e}")
q.quit()
check(inbox_count() == N, "nothing deleted before QUIT")
p.quit()
check(inbox_count() == N - 1, "QUIT removed the one message marked")

# 3. Implicit TLS and AUTH PLAIN; a dropped connection deletes nothing.
q = poplib.POP3_SSL(host, int(pop3s_port), context=ctx, timeout=30)
ir = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
check(q._shortcmd(f"AUTH PLAIN {ir}").startswith(b"+OK"), "AUTH PLAIN")
check(q.stat()[0] == N - 1, "STAT after login")
q.dele(1)
q.dele(2)
q.sock.shutdown(socket.SHUT_RDWR)  # no QUIT
q.file.close()
q.sock.close()
q = None
for _ in range(100):
    try:
        q = pop_stls()
        break
    except poplib.error_proto as e:
        check(b"[IN-USE]" in e.args[0], f"only in use: {e}")
        time.sleep(0.05)
check(q is not None, "the maildrop is free once the connection dropped")
n = q.stat()[0]
check(n == N - 1, f"a dropped connection deleted nothing: {n}")
q.quit()

# 4. fetchmail retrieves everything, leaving it on the server.
got = os.path.join(work, "fetched")
os.makedirs(got)
mda = os.path.join(work, "mda.py")
with open(mda, "w") as f:
    f.write("import sys, uuid\n"
            f"open('{got}/' + uuid.uuid4().hex, 'wb').write(sys.stdin.buffer.read())\n")
rc = os.path.join(work, "fetchmailrc")
with open(rc, "w") as f:
    f.write(f'poll {host} protocol pop3 port {pop3_port}\n'
            f'  user "{user}" password "{password}"\n'
            f'  sslproto tls1.2+ sslcertck sslcertfile "{cafile}"\n'
            f'  keep fetchall\n'
            f'  mda "{sys.executable} {mda}"\n')
os.chmod(rc, 0o600)
env = dict(os.environ, HOME=work)
run = subprocess.run(
    ["fetchmail", "-f", rc, "--nosyslog", "--invisible", "--pidfile", os.path.join(work, "fm.pid"),
     "--idfile", os.path.join(work, "fetchids")],
    env=env, capture_output=True, text=True, timeout=600)
check(run.returncode == 0, f"fetchmail exit {run.returncode}: {run.stdout}\n{run.stderr}")
fetched = sorted(open(os.path.join(got, n), "rb").read() for n in os.listdir(got))
# fetchmail hands an MDA Unix line ends; the server sent CRLF.
want = sorted(wire(x).replace(b"\r\n", b"\n") for x in msgs[:1] + msgs[2:])
check(len(fetched) == N - 1, f"fetchmail delivered {len(fetched)} of {N - 1}")
if fetched != want:
    extra = [x for x in fetched if x not in want][:1]
    missing = [x for x in want if x not in fetched][:1]
    sys.stderr.write(f"fetched, not wanted: {extra[0][:600] if extra else None}\n"
                     f"wanted, not fetched: {missing[0][:600] if missing else None}\n")
check(fetched == want, "every fetched message equals the bytes that arrived")
check(inbox_count() == N - 1, "keep: fetchmail left the mail on the server")

# 5. The alias hides retrieved mail: a session retrieves two, the next
#    one no longer lists them; their UIDLs never change.
settings({"move_retrieved_to": None, "hide_retrieved": True})
p = pop_stls()
resp, before, _ = p.uidl()
p.retr(1)
p.retr(2)
p.quit()
p = pop_stls()
resp, after, _ = p.uidl()
check([l.split()[1] for l in after] == [l.split()[1] for l in before[2:]],
      "the retrieved two are hidden; the others keep their UIDLs")
p.quit()
settings({"move_retrieved_to": None, "hide_retrieved": False})
print(f"pop3: poplib sessions and fetchmail retrieved {N - 1} messages byte for byte")
