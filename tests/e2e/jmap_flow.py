"""jmapc, a JMAP client written elsewhere, against `cofre serve` over TLS.

Session discovery, Core/echo, mailboxes, an upload imported with
Email/import, queries with filters and sorts, keyword changes seen by
Email/changes, Thread/get, an attachment downloaded byte for byte, a
draft created and sent with EmailSubmission/set (then filed in Sent), and a
push event for mail arriving while an EventSource listener waits.

Usage: jmap_flow.py HOST:PORT WORKDIR ANA_PASSWORD BO_PASSWORD
"""

import base64
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from jmapc import (
    Client,
    Comparator,
    Email,
    Mailbox,
    EmailAddress,
    EmailBodyPart,
    EmailBodyValue,
    EmailQueryFilterCondition,
    EmailSubmission,
    EventSourceConfig,
    MailboxQueryFilterCondition,
    Ref,
)
from jmapc.methods import (
    CoreEcho,
    CustomMethod,
    EmailChanges,
    EmailGet,
    EmailQuery,
    EmailSet,
    EmailSubmissionSet,
    IdentityGet,
    MailboxGet,
    MailboxQuery,
    MailboxSet,
    ThreadGet,
)

MAIL = "urn:ietf:params:jmap:mail"

host, work, ana_pw, bo_pw = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
ana = Client.create_with_password(host, "ana@example.com", ana_pw)
bo = Client.create_with_password(host, "bo@example.com", bo_pw)


def check(cond, what):
    if not cond:
        raise SystemExit(f"jmap flow: {what}")


def ok(result):
    """A single method's response, failing on a JMAP error."""
    check(not type(result).__name__.endswith("Error"), f"error response {result!r}")
    return result


# Session discovery and Core/echo.
check(ana.jmap_session.api_url.startswith(f"https://{host}/"), ana.jmap_session.api_url)
echo = ok(ana.request(CoreEcho(data={"hello": "cofre"})))
check(echo.data == {"hello": "cofre"}, f"echo {echo.data}")

# Mailboxes by role.
boxes = ok(ana.request(MailboxGet(ids=None))).data
role = {m.role: m.id for m in boxes if m.role}
check({"inbox", "drafts", "sent", "trash"} <= set(role), f"roles {role}")
found = ok(ana.request(MailboxQuery(filter=MailboxQueryFilterCondition(role="inbox"))))
check(found.ids == [role["inbox"]], f"Mailbox/query by role {found.ids}")

# An upload imported into the inbox.
attachment = bytes(range(256)) * 40
eml = work / "report.eml"
boundary = "b0undary"
encoded = base64.encodebytes(attachment).decode().replace("\n", "\r\n")
eml.write_bytes(
    (
        "From: Carla <carla@example.net>\r\nTo: ana@example.com\r\n"
        "Subject: quarterly report\r\nMessage-ID: <report@example.net>\r\n"
        "Date: Tue, 7 May 2024 09:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: multipart/mixed; boundary={boundary}\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nNumbers attached.\r\n"
        f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
        "Content-Disposition: attachment; filename=numbers.bin\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}--{boundary}--\r\n"
    ).encode()
)
blob = ana.upload_blob(eml)
check(blob.size == eml.stat().st_size, f"upload size {blob.size}")
before = ok(ana.request(EmailGet(ids=[]))).state
imp = CustomMethod(
    data={
        "accountId": ana.account_id,
        "emails": {
            "r": {"blobId": blob.id, "mailboxIds": {role["inbox"]: True},
                  "receivedAt": "2024-05-07T09:00:00Z"}
        },
    }
)
imp.jmap_method = "Email/import"
imp.using = {MAIL}
imported = ok(ana.request(imp)).data["created"]["r"]
report_id = imported["id"]

# Queries with filters and sorts, and the emails they find.
for subject in ["older", "newer"]:
    up = work / f"{subject}.eml"
    up.write_bytes(f"From: bo@example.com\r\nSubject: {subject} note\r\n\r\n{subject}\r\n".encode())
    b = ana.upload_blob(up)
    imp = CustomMethod(data={"accountId": ana.account_id, "emails": {"n": {
        "blobId": b.id, "mailboxIds": {role["inbox"]: True},
        "receivedAt": "2024-05-0%dT09:00:00Z" % (8 if subject == "older" else 9)}}})
    imp.jmap_method = "Email/import"
    imp.using = {MAIL}
    ok(ana.request(imp))
results = ana.request(
    [
        EmailQuery(
            filter=EmailQueryFilterCondition(
                in_mailbox=role["inbox"], text="note", after=datetime(2024, 5, 1, tzinfo=timezone.utc)
            ),
            sort=[Comparator(property="receivedAt", is_ascending=False)],
        ),
        EmailGet(
            ids=Ref("/ids"),
            properties=["subject", "from", "receivedAt", "textBody", "bodyValues"],
            fetch_text_body_values=True,
        ),
    ]
)
query, got = ok(results[0].response), ok(results[1].response)
subjects = [e.subject for e in got.data]
check(subjects == ["newer note", "older note"], f"sorted query {subjects}")
check(got.data[0].mail_from[0].email == "bo@example.com", "from")
text = got.data[0].body_values[got.data[0].text_body[0].part_id].value
check(text.strip() == "newer", f"body value {text!r}")
carla = ok(ana.request(EmailQuery(filter=EmailQueryFilterCondition(mail_from="carla"))))
check(carla.ids == [report_id], f"from filter {carla.ids}")

# A keyword change, then Email/changes from the state before.
mid = ok(ana.request(EmailGet(ids=[]))).state
ok(ana.request(EmailSet(update={report_id: {"keywords/$flagged": True}})))
changes = ok(ana.request(EmailChanges(since_state=mid)))
check(changes.updated == [report_id], f"changes {changes}")
everything = ok(ana.request(EmailChanges(since_state=before)))
check(report_id in everything.created and len(everything.created) == 3, f"{everything}")

# Thread/get and the attachment, downloaded.
email = ok(ana.request(EmailGet(ids=[report_id], properties=["threadId", "attachments", "keywords"]))).data[0]
check(email.keywords == {"$flagged": True}, f"keywords {email.keywords}")
thread = ok(ana.request(ThreadGet(ids=[email.thread_id]))).data[0]
check(thread.email_ids == [report_id], f"thread {thread}")
part = email.attachments[0]
check(part.name == "numbers.bin", f"attachment {part}")
out = work / "numbers.bin"
ana.download_attachment(part, out)
check(out.read_bytes() == attachment, "the attachment comes back byte for byte")

# A draft, sent, then filed in Sent; bo receives it.
identity = ok(ana.request(IdentityGet())).data[0]
check(identity.email == "ana@example.com", f"identity {identity}")
sent = ana.request(
    [
        EmailSet(create={"draft": Email(
            mail_from=[EmailAddress(name="Ana", email="ana@example.com")],
            to=[EmailAddress(name="Bo", email="bo@example.com")],
            subject="lunch on friday?",
            keywords={"$draft": True},
            mailbox_ids={role["drafts"]: True},
            body_values={"body": EmailBodyValue(value="Lunch at one?\n")},
            text_body=[EmailBodyPart(part_id="body", type="text/plain")],
        )}),
        EmailSubmissionSet(
            create={"send": EmailSubmission(email_id="#draft", identity_id=identity.id)},
            on_success_update_email={"#send": {
                f"mailboxIds/{role['drafts']}": None,
                f"mailboxIds/{role['sent']}": True,
                "keywords/$draft": None,
            }},
        ),
    ]
)
names = [type(r.response).__name__ for r in sent]
check(names == ["EmailSetResponse", "EmailSubmissionSetResponse", "EmailSetResponse"], f"{names}")
draft_id = sent[0].response.created["draft"].id
filed = ok(ana.request(EmailGet(ids=[draft_id], properties=["mailboxIds", "keywords"]))).data[0]
check(filed.mailbox_ids == {role["sent"]: True}, f"filed {filed.mailbox_ids}")
check(not filed.keywords or "$draft" not in filed.keywords, f"keywords {filed.keywords}")
inbox_of_bo = ok(bo.request(EmailQuery(filter=EmailQueryFilterCondition(text="lunch")))).ids
check(len(inbox_of_bo) == 1, f"bo received {inbox_of_bo}")

# Mailbox CRUD: a folder made, the report moved in, the folder renamed,
# then destroyed with its email.
made = ok(ana.request(MailboxSet(create={"r": Mailbox(name="Reports", parent_id=None)})))
reports = made.created["r"].id
ok(ana.request(EmailSet(update={report_id: {"mailboxIds": {reports: True}}})))
ok(ana.request(MailboxSet(update={reports: {"name": "Old reports"}})))
box = ok(ana.request(MailboxGet(ids=[reports]))).data[0]
check(box.name == "Old reports" and box.total_emails == 1, f"mailbox {box}")
kept = ok(ana.request(MailboxSet(destroy=[reports])))
check(kept.not_destroyed[reports].type == "mailboxHasEmail", f"{kept.not_destroyed}")
gone = ok(ana.request(MailboxSet(destroy=[reports], on_destroy_remove_emails=True)))
check(gone.destroyed == [reports], f"destroyed {gone.destroyed}")
check(ok(ana.request(EmailGet(ids=[report_id]))).not_found == [report_id], "the email went with it")

# Push: ana listens; bo sends; a StateChange arrives with a new state.
listener = Client.create_with_password(
    host, "ana@example.com", ana_pw,
    event_source_config=EventSourceConfig(types="Email", closeafter="state", ping=0),
)
state_now = ok(ana.request(EmailGet(ids=[]))).state
heard = []


def listen():
    for event in listener.events:
        heard.append(event)
        return


t = threading.Thread(target=listen, daemon=True)
t.start()
bo_identity = ok(bo.request(IdentityGet())).data[0]
bo_inbox = [m.id for m in ok(bo.request(MailboxGet(ids=None))).data if m.role == "drafts"][0]
deadline = time.time() + 20
n = 0
while not heard and time.time() < deadline:
    n += 1
    bo.request([
        EmailSet(create={"m": Email(
            mail_from=[EmailAddress(email="bo@example.com")],
            to=[EmailAddress(email="ana@example.com")],
            subject=f"ping {n}", mailbox_ids={bo_inbox: True},
            body_values={"b": EmailBodyValue(value="hi")},
            text_body=[EmailBodyPart(part_id="b", type="text/plain")],
        )}),
        EmailSubmissionSet(create={"s": EmailSubmission(email_id="#m", identity_id=bo_identity.id)}),
    ])
    t.join(0.5)
check(heard, "no push event within 20 s")
change = heard[0].data.changed[ana.account_id]
check(change.email and change.email != state_now, f"pushed state {change}")
print(f"jmap flow: passed ({n} message(s) sent until the push was heard)")
