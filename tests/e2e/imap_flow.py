"""Python's imaplib and the imapclient library run full sessions against a
running `cofre serve`: STARTTLS and implicit TLS, create, append, fetch of
every data item, search, store, copy, move, expunge, IDLE, CONDSTORE and
QRESYNC. Every BODY[] must equal the bytes appended.

usage: imap_flow.py HOST IMAP_PORT IMAPS_PORT CA_FILE USER PASSWORD
"""
import imaplib
import re
import ssl
import sys
import threading
import time

import imapclient

from corpus import corpus

host, port, tls_port, cafile, user, password = sys.argv[1:7]
port, tls_port = int(port), int(tls_port)
ctx = ssl.create_default_context(cafile=cafile)


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def ok(resp, what):
    typ, data = resp
    check(typ == "OK", f"{what}: {typ} {data!r}")
    return data


# ---- imaplib over STARTTLS ------------------------------------------------
m = imaplib.IMAP4(host, port)
check("STARTTLS" in m.capabilities, f"STARTTLS offered: {m.capabilities}")
m.starttls(ssl_context=ctx)
ok(m.login(user, password), "login")
caps = ok(m.capability(), "capability")[0].decode().upper().split()
for cap in ["IMAP4REV2", "IDLE", "UIDPLUS", "MOVE", "CONDSTORE", "QRESYNC", "ESEARCH", "SPECIAL-USE", "LIST-STATUS"]:
    check(cap in caps, f"capability {cap} in {caps}")

ok(m.create("Flow/Sub"), "create")
names = ok(m.list('""', "*"), "list")
check(any(b'"Flow/Sub"' in n for n in names), f"created folder listed: {names}")
check(any(b"\\Sent" in n for n in names), f"special-use listed: {names}")

msgs = corpus(40, seed=11)
appended_uids = []
for i, raw in enumerate(msgs):
    flags = r"(\Seen)" if i % 2 else None
    typ, data = m.append("INBOX", flags, imaplib.Time2Internaldate(1_600_000_000 + i), raw)
    check(typ == "OK", f"append {i}: {data}")
    code = re.search(rb"APPENDUID (\d+) (\d+)", data[0])
    check(code, f"APPENDUID in {data}")
    appended_uids.append(int(code.group(2)))

typ, data = m.select("INBOX")
check(typ == "OK" and int(data[0]) == len(msgs), f"select: {data}")

items = ("(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE MODSEQ "
         "BODY.PEEK[] BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1] BODY.PEEK[1.MIME] "
         "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] BINARY.SIZE[1] RFC822.HEADER)")
data = ok(m.uid("FETCH", "1:*", items), "fetch every item")
bodies = {}
uid = None
envelopes = 0
for part in data:
    head = part[0] if isinstance(part, tuple) else part
    found = re.match(rb"\d+ \(UID (\d+)", head)
    if found:
        uid = int(found.group(1))
    envelopes += head.count(b"ENVELOPE (")
    if isinstance(part, tuple) and head.endswith(b"}") and b"BODY[] {" in head:
        bodies[uid] = part[1]
check(envelopes == len(msgs), f"an ENVELOPE per message: {envelopes}")
check(len(bodies) == len(msgs), f"BODY[] for every message: {len(bodies)}")
for uid, raw in zip(appended_uids, msgs):
    check(bodies[uid] == raw, f"BODY[] of UID {uid} equals the appended bytes")

# INTERNALDATE kept from APPEND.
data = ok(m.uid("FETCH", str(appended_uids[3]), "(INTERNALDATE)"), "internaldate")
check(b'INTERNALDATE "13-Sep-2020 12:26:43 +0000"' in data[0], f"internal date: {data}")

# Search keys.
def search(*criteria):
    typ, data = m.uid("SEARCH", *criteria)
    check(typ == "OK", f"search {criteria}: {data}")
    return [int(x) for x in data[0].split()]

check(len(search("ALL")) == len(msgs), "SEARCH ALL")
check(len(search("SEEN")) == len(msgs) // 2, "SEARCH SEEN")
check(len(search("UNSEEN")) == len(msgs) - len(msgs) // 2, "SEARCH UNSEEN")
check(search("SUBJECT", '"Message 8"') == [appended_uids[8]], "SEARCH SUBJECT")
check(search("HEADER", "Message-ID", "corpus-12@example.net") == [appended_uids[12]], "SEARCH HEADER")
check(len(search("FROM", "sender3@")) >= 2, "SEARCH FROM")
check(len(search("LARGER", "5000")) >= 1, "SEARCH LARGER")
check(search("OR", "UID", "1", "UID", "2") == appended_uids[:2], "SEARCH OR")
check(len(search("NOT", "SEEN", "SINCE", "1-Jan-2020")) == len(msgs) - len(msgs) // 2, "SEARCH NOT/SINCE")
check(search("BEFORE", "1-Jan-2000") == [], "SEARCH BEFORE")
check(len(search("TEXT", "leading")) >= 1, "SEARCH TEXT")
check(search("BODY", "zzzabsent") == [], "SEARCH BODY: a word in no body")

# Store, copy, move, expunge.
data = ok(m.uid("STORE", f"{appended_uids[0]}:{appended_uids[2]}", "+FLAGS", r"(\Flagged $Work)"), "store")
check(len([d for d in data if d]) == 3 and b"\\Flagged" in data[0], f"store answers: {data}")
ok(m.uid("STORE", str(appended_uids[0]), "-FLAGS", r"(\Flagged)"), "store -")
data = ok(m.uid("COPY", f"{appended_uids[0]}:{appended_uids[4]}", "Flow/Sub"), "copy")
typ, data = m.uid("MOVE", f"{appended_uids[5]}:{appended_uids[9]}", "Archive")
check(typ == "OK", f"move: {data}")
typ, data = m.select("INBOX")
check(int(data[0]) == len(msgs) - 5, f"after MOVE: {data}")
ok(m.uid("STORE", str(appended_uids[10]), "+FLAGS", r"(\Deleted)"), "store deleted")
ok(m.expunge(), "expunge")
typ, data = m.status("Flow/Sub", "(MESSAGES UIDNEXT UNSEEN)")
check(b"MESSAGES 5" in data[0], f"status: {data}")
typ, data = m.status("Archive", "(MESSAGES)")
check(b"MESSAGES 5" in data[0], f"moved: {data}")
ok(m.rename("Flow/Sub", "Flow/Renamed"), "rename")
ok(m.delete("Flow/Renamed"), "delete")
check(m.logout()[0] == "BYE", "logout")

# ---- imaplib over implicit TLS --------------------------------------------
s = imaplib.IMAP4_SSL(host, tls_port, ssl_context=ctx)
ok(s.login(user, password), "login over TLS")
typ, data = s.select("Archive", readonly=True)
check(int(data[0]) == 5, f"examine: {data}")
typ, data = s.uid("STORE", "1", "+FLAGS", r"(\Seen)")
check(typ == "NO", "a read-only mailbox refuses STORE")
s.logout()

# ---- imapclient: IDLE, CONDSTORE, QRESYNC, SORT, THREAD ---------------------
c = imapclient.IMAPClient(host, port=tls_port, ssl=True, ssl_context=ctx)
c.login(user, password)
check(c.has_capability("IDLE"), "IDLE")
c.id_({"name": "imapclient-test"})
check(c.namespace().personal[0][1] == "/", "namespace")
info = c.select_folder("INBOX")
exists = info[b"EXISTS"]
check(b"HIGHESTMODSEQ" in info, f"HIGHESTMODSEQ: {info}")
modseq = info[b"HIGHESTMODSEQ"]

# IDLE: a second client appends; this one hears within a second.
other = imapclient.IMAPClient(host, port=tls_port, ssl=True, ssl_context=ctx)
other.login(user, password)
c.idle()
started = time.monotonic()
threading.Thread(target=lambda: other.append("INBOX", msgs[0])).start()
news = c.idle_check(timeout=5)
elapsed = time.monotonic() - started
c.idle_done()
check((exists + 1, b"EXISTS") in news, f"IDLE saw EXISTS: {news}")
check(elapsed < 1.5, f"IDLE news took {elapsed:.2f} s")

# CONDSTORE: only what changed since a MODSEQ.
uids = c.search("ALL")
other.select_folder("INBOX")
other.add_flags(uids[:2], [imapclient.SEEN, b"$Done"])
changed = c.fetch(c.search("ALL"), ["FLAGS"], modifiers=[f"CHANGEDSINCE {modseq}"])
check(set(uids[:2]) <= set(changed) and len(changed) <= 3, f"CHANGEDSINCE: {sorted(changed)}")
check(all(b"MODSEQ" in v for v in changed.values()), "MODSEQ returned")

# Flag changes made by another session reach this one.
other.remove_flags(uids[3:4], [imapclient.SEEN])
resp = c.noop()
check(any(len(r) > 1 and r[1] == b"FETCH" for r in resp[1]), f"NOOP reports flag changes: {resp}")

# MOVE and expunge with imapclient's UID commands.
c.create_folder("Moved")
c.move(uids[-3:], "Moved")
check(c.folder_status("Moved", [b"MESSAGES"])[b"MESSAGES"] == 3, "imapclient move")
c.delete_messages(uids[:1])
c.expunge()
check(len(c.search("ALL")) == len(uids) - 4, "delete + expunge")

# SORT and THREAD.
sorted_uids = c.sort(["REVERSE", "ARRIVAL"])
dates = c.fetch(sorted_uids, ["INTERNALDATE"])
arrival = [dates[u][b"INTERNALDATE"] for u in sorted_uids]
check(len(sorted_uids) == len(c.search("ALL")) and arrival == sorted(arrival, reverse=True),
      f"SORT (REVERSE ARRIVAL): {arrival}")
threads = c.thread("REFERENCES")
check(len(threads) > 0, f"thread: {threads}")

# QRESYNC: a client that knows a MODSEQ learns what vanished.
c.unselect_folder()
c.enable("QRESYNC")
validity = c.select_folder("INBOX")[b"UIDVALIDITY"]
other.select_folder("INBOX")
other.delete_messages(uids[1:2])
other.expunge()
typ, data = c._imap._simple_command("SELECT", f"INBOX (QRESYNC ({validity} {modseq}))")
check(typ == "OK", f"qresync select: {data}")
vanished = c._imap.untagged_responses.get("VANISHED", [])
check(any(str(uids[0]).encode() in v or str(uids[1]).encode() in v for v in vanished),
      f"VANISHED (EARLIER) lists expunged UIDs: {vanished}")
c.logout()
other.logout()
print("imap clients: imaplib and imapclient sessions passed")
