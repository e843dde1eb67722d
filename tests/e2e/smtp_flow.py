"""Third-party SMTP clients against Cofre's mail exchanger.

Python's smtplib and swaks deliver to a running `cofre serve`: STARTTLS,
8-bit and SMTPUTF8 mail, pipelining, BDAT, several recipients (one of them
without a live session), refused relaying. Every delivered message is read
back over IMAP and must equal the bytes sent plus our one Received header.
A client in IMAP IDLE hears mail for its alias within a second.

Then submission: smtplib logs in to A's submission port (STARTTLS, AUTH)
and sends to a second Cofre (B) over a static route; the message reaches
B's mailbox and A's Sent folder; without AUTH, or with another sender, A
refuses it.

usage: smtp_flow.py HOST SMTP_PORT IMAPS_PORT CA ANA_PW BO_PW WORKDIR
                    SUBMISSION_PORT B_IMAPS_PORT B_CA ZED_PW
"""

import imaplib
import re
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time

from imapclient import IMAPClient

host, smtp_port, imaps_port, ca, ana_pw, bo_pw, work = sys.argv[1:8]
sub_port, b_imaps_port, b_ca, zed_pw = sys.argv[8:12]
smtp_port, imaps_port = int(smtp_port), int(imaps_port)
sub_port, b_imaps_port = int(sub_port), int(b_imaps_port)
ctx = ssl.create_default_context(cafile=ca)
b_ctx = ssl.create_default_context(cafile=b_ca)
checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    checks += 1


def imap(user, password, port=None, context=None, folder="INBOX"):
    m = imaplib.IMAP4_SSL(host, port or imaps_port, ssl_context=context or ctx)
    m.login(user, password)
    m.select(folder)
    return m


def inbox_bytes(user, password, **kw):
    m = imap(user, password, **kw)
    typ, data = m.uid("SEARCH", None, "ALL")
    out = []
    for uid in data[0].split():
        typ, d = m.uid("FETCH", uid, "(BODY.PEEK[])")
        out.append(d[0][1])
    m.logout()
    return out


# What the MX adds in front: Return-Path, its Authentication-Results (SPF,
# DKIM, DMARC as checked against the fixture DNS), one Received.
TRACE = re.compile(
    rb"^Return-Path: <[^>\r\n]*>\r\n"
    rb"Authentication-Results: localhost;[^\r\n]*\r\n(\t[^\r\n]*\r\n)*"
    rb"Received: from [^\r\n]*\r\n(\t[^\r\n]*\r\n)*"
)


def untraced(stored):
    m = TRACE.match(stored)
    check(m is not None, f"Return-Path, Authentication-Results and Received first: {stored[:300]!r}")
    check(
        b"by localhost (Cofre) with" in m.group(0),
        f"our trace header: {m.group(0)!r}",
    )
    return stored[m.end():], m.group(0)


def delivered(user, password, sent, what):
    stored = inbox_bytes(user, password)
    found = [untraced(s) for s in stored]
    match = [t for body, t in found if body == sent]
    check(len(match) == 1, f"{what}: stored once, byte for byte (have {len(stored)})")
    return match[0]


# The IDLE listener logs in first: ana has a live session from here on.
idler = IMAPClient(host, port=imaps_port, ssl=True, ssl_context=ctx)
idler.login("ana@example.com", ana_pw)
idler.select_folder("INBOX")

# 1. smtplib: EHLO, STARTTLS, 8-bit mail.
s = smtplib.SMTP(host, smtp_port, timeout=10)
code, _ = s.ehlo("client.example")
check(code == 250, "EHLO")
for ext in ["pipelining", "8bitmime", "smtputf8", "chunking", "size", "starttls", "enhancedstatuscodes"]:
    check(s.has_extn(ext), f"EHLO advertises {ext}")
s.starttls(context=ctx)
s.ehlo("client.example")
check(not s.has_extn("starttls"), "no STARTTLS once under TLS")
eight = (
    "From: Zoë <zoe@sender.example>\r\nTo: ana@example.com\r\n"
    "Subject: crème brûlée\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\nÇa marche — 8-bit body.\r\n"
    ".a line with a leading dot\r\n..and two\r\n"
).encode()
refused = s.sendmail("zoe@sender.example", ["ana@example.com"], eight, mail_options=["BODY=8BITMIME"])
check(refused == {}, "8-bit mail accepted")
trace = delivered("ana@example.com", ana_pw, eight, "8-bit mail over STARTTLS")
check(b"with ESMTPS" in trace, f"TLS recorded in the trace header: {trace!r}")

# 2. SMTPUTF8: an internationalised sender and UTF-8 headers.
utf8 = (
    "From: José <josé@exämple.org>\r\nTo: ana@example.com\r\n"
    "Subject: ¡Hola, señora!\r\n\r\nUnicode everywhere: 日本語\r\n"
).encode()
refused = s.sendmail("josé@exämple.org", ["ana@example.com"], utf8, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
check(refused == {}, "SMTPUTF8 mail accepted")
trace = delivered("ana@example.com", ana_pw, utf8, "SMTPUTF8 mail")
check(b"with UTF8SMTPS" in trace, f"SMTPUTF8 recorded: {trace!r}")

# 3. Several recipients, one unknown, one without a live session.
several = b"From: a@sender.example\r\nSubject: to several\r\n\r\nOne copy each.\r\n"
refused = s.sendmail("a@sender.example", ["ana@example.com", "bo@example.com", "nobody@example.com"], several)
check(list(refused) == ["nobody@example.com"], f"only the unknown refused: {refused}")
check(refused["nobody@example.com"][0] == 550, "unknown recipient: 550 at RCPT time")

# 4. No relaying.
try:
    s.sendmail("a@sender.example", ["someone@elsewhere.example"], b"Subject: relay?\r\n\r\nno\r\n")
    check(False, "relaying refused")
except smtplib.SMTPRecipientsRefused as e:
    check(e.recipients["someone@elsewhere.example"][0] == 550, "relaying refused with 550")
s.quit()

delivered("ana@example.com", ana_pw, several, "several recipients: ana's copy")
delivered("bo@example.com", bo_pw, several, "several recipients: bo's copy, sealed until his login")

# 5. BDAT (smtplib has no CHUNKING): two chunks, raw on a socket.
chunks = [b"From: c@sender.example\r\nSubject: chunked\r\n\r\nfirst, ", b"second.\r\n.no stuffing in BDAT\r\n"]
with socket.create_connection((host, smtp_port), timeout=10) as raw:
    f = raw.makefile("rb")

    def reply():
        lines = []
        while True:
            line = f.readline()
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    reply()
    burst = b"EHLO c.example\r\nMAIL FROM:<c@sender.example>\r\nRCPT TO:<ana@example.com>\r\n"
    burst += b"BDAT %d\r\n" % len(chunks[0]) + chunks[0]
    burst += b"BDAT %d LAST\r\n" % len(chunks[1]) + chunks[1]
    raw.sendall(burst)
    answers = [reply()[:3] for _ in range(5)]
    check(answers == [b"250"] * 5, f"pipelined BDAT: {answers}")
delivered("ana@example.com", ana_pw, b"".join(chunks), "BDAT in two chunks")

# 6. IDLE hears delivered mail within a second.
idler.idle()
idle_mail = b"From: i@sender.example\r\nSubject: while idling\r\n\r\nping\r\n"
t = threading.Thread(target=lambda: smtplib.SMTP(host, smtp_port).sendmail("i@sender.example", ["ana@example.com"], idle_mail))
start = time.monotonic()
t.start()
news = []
while time.monotonic() - start < 3 and not any(r[1] == b"EXISTS" for r in news):
    news += idler.idle_check(timeout=0.2)
took = time.monotonic() - start
idler.idle_done()
t.join()
check(any(r[1] == b"EXISTS" for r in news), f"IDLE heard the delivery: {news}")
check(took < 1.0, f"within a second (took {took:.2f} s)")
idler.logout()

# 7. swaks: pipelining, STARTTLS, a dot-leading 8-bit message from a file.
# swaks ends DATA with CRLF.CRLF after the file, so one blank line more is
# part of what it sends.
for extra in (["--pipeline"], ["--tls"]):
    swaks_mail = (
        b"From: swaks@sender.example\r\nTo: ana@example.com\r\nSubject: swaks "
        + extra[0].encode()
        + b"\r\n\r\nBody with \xc3\xa9 and\r\n.a leading dot\r\n"
    )
    path = f"{work}/swaks.eml"
    with open(path, "wb") as fh:
        fh.write(swaks_mail)
    run = subprocess.run(
        ["swaks", "--server", f"{host}:{smtp_port}", "--ehlo", "swaks.example",
         "--from", "swaks@sender.example", "--to", "ana@example.com",
         "--data", f"@{path}", *extra],
        capture_output=True,
    )
    out = run.stdout.decode(errors="replace")
    check(run.returncode == 0, f"swaks {extra} succeeded:\n{out}")
    check("250 2.0.0 Ok: delivered" in out, f"swaks {extra} saw 250 after DATA:\n{out}")
    delivered("ana@example.com", ana_pw, swaks_mail + b"\r\n", f"swaks {extra}")

# 8. Submission: AUTH on A, delivery to B over a static route.
sub = smtplib.SMTP(host, sub_port, timeout=10)
sub.ehlo("laptop.example")
sub.starttls(context=ctx)
sub.ehlo("laptop.example")
check(sub.has_extn("auth"), "AUTH offered after STARTTLS")
try:
    sub.sendmail("ana@example.com", ["zed@b.example"], b"Subject: no auth\r\n\r\nx\r\n")
    check(False, "submission without AUTH refused")
except smtplib.SMTPSenderRefused as e:
    check(e.smtp_code == 530, f"530 without AUTH: {e}")
sub.login("ana@example.com", ana_pw)
try:
    sub.sendmail("bo@example.com", ["zed@b.example"], b"Subject: forged\r\n\r\nx\r\n")
    check(False, "a forged sender refused")
except smtplib.SMTPSenderRefused as e:
    check(e.smtp_code == 553, f"553 for another sender: {e}")
outgoing = b"From: ana@example.com\r\nTo: zed@b.example\r\nSubject: to server B\r\n\r\nAcross two Cofre servers.\r\n"
check(sub.sendmail("ana@example.com", ["zed@b.example"], outgoing) == {}, "submitted")
sub.quit()
deadline = time.monotonic() + 20
arrived = []
while time.monotonic() < deadline and not arrived:
    arrived = inbox_bytes("zed@b.example", zed_pw, port=b_imaps_port, context=b_ctx)
    if not arrived:
        time.sleep(0.2)
check(len(arrived) == 1 and arrived[0].endswith(outgoing), f"B received it: {arrived!r}")
check(arrived and arrived[0].count(b"Received: from ") == 2, "A's and B's trace headers")
head = arrived[0].split(b"\r\n\r\n")[0].replace(b"\r\n\t", b" ").decode() if arrived else ""
check("DKIM-Signature:" in head and "d=example.com" in head, f"A signed it:\n{head}")
results = [l for l in head.split("\r\n") if l.startswith("Authentication-Results:")]
check(len(results) == 1, f"B's Authentication-Results:\n{head}")
check(results and "dkim=pass header.d=example.com" in results[0], f"DKIM verified at B: {results}")
check(results and "spf=pass" in results[0], f"SPF passed at B: {results}")
check(results and "dmarc=pass header.from=example.com" in results[0], f"DMARC passed at B: {results}")
sent = inbox_bytes("ana@example.com", ana_pw, folder="Sent")
check(any(m.endswith(outgoing) for m in sent), "a copy in A's Sent folder")

print(f"smtp clients: {checks} checks passed")
