"""Backups kept in an S3-compatible store (moto's server), driven through
Cofre's REST API and IMAP, checked by reading the bucket with boto3.

Usage: s3_backup_flow.py WORK S3_PORT HTTP_PORT IMAP_PORT ADDRESS PASSWORD ADMIN_TOKEN
"""

import base64
import hashlib
import imaplib
import json
import os
import sys
import urllib.error
import urllib.request

import boto3

work, s3_port, http_port, imap_port, address, password, admin = sys.argv[1:8]
base = f"http://127.0.0.1:{http_port}"
auth = "Basic " + base64.b64encode(f"{address}:{password}".encode()).decode()
BUCKET = "cofre-backups"
PREFIX = "cofre/"

s3 = boto3.client(
    "s3",
    endpoint_url=f"http://127.0.0.1:{s3_port}",
    region_name="eu-west-1",
    aws_access_key_id="cofre-test",
    aws_secret_access_key="cofre-test-secret",
)
s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})


def call(method, path, authorization=auth, raw=False):
    req = urllib.request.Request(base + path, method=method)
    req.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            body = r.read()
            return r.status, (body if raw else (json.loads(body) if body else None))
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, (json.loads(body) if body else None)


def objects():
    """Keys and sizes of every object in the bucket."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["Size"]
    return out


def object_ids():
    """Backup ids of the objects in the bucket."""
    return sorted(k.rsplit("/", 1)[1].removesuffix(".bak") for k in objects())


def listed():
    status, body = call("GET", "/v1/backups")
    assert status == 200, (status, body)
    return body


def backup(expect_status):
    status, body = call("POST", "/v1/backups")
    assert status == expect_status, (status, body)
    return body["backup"]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# Mail with incompressible attachments: the mailbox file passes the 5 MiB
# part size, so it goes up in several parts.
imap = imaplib.IMAP4("127.0.0.1", int(imap_port))
imap.login(address, password)
for i in range(3):
    attachment = base64.encodebytes(os.urandom(3 << 20)).decode().replace("\n", "\r\n")
    msg = (
        f"From: carla@example.net\r\nTo: {address}\r\nSubject: s3-secret-subject {i}\r\n"
        f"Message-ID: <s3-{i}@example.net>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        f"--b\r\nContent-Type: text/plain\r\n\r\ns3-secret-body {i}\r\n"
        "--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{attachment}--b--\r\n"
    )
    typ, _ = imap.append("INBOX", None, None, msg.encode())
    check(typ == "OK", f"APPEND {i}")
imap.logout()

# A first version: one object, named by random ids (never the address),
# uploaded in parts, equal to what the API downloads, holding no plaintext.
first = backup(201)
keys = objects()
check(len(keys) == 1, f"one object: {keys}")
key = next(iter(keys))
check(key.startswith(PREFIX) and key.endswith(f"/{first['id']}.bak"), key)
check("ana" not in key and "example" not in key, f"no address in {key}")
check(keys[key] == first["size"] and first["size"] > 5 << 20, (keys, first))
head = s3.head_object(Bucket=BUCKET, Key=key)
parts = int(head["ETag"].strip('"').rsplit("-", 1)[1])
check(parts >= 2, f"a multipart upload: ETag {head['ETag']}")
stored = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
check(hashlib.sha256(stored).hexdigest() == first["sha256"], "SHA-256 of the object")
for needle in [b"s3-secret", address.encode(), b"carla@example.net", b"SQLite format 3"]:
    check(needle not in stored, f"plaintext {needle!r} in the object")
status, downloaded = call("GET", f"/v1/backups/{first['id']}", raw=True)
check(status == 200 and downloaded == stored, "the download is the object")
print(f"ok: backup of {first['size']} bytes in {parts} parts, no plaintext, downloaded")

# Unchanged: nothing uploaded. One flag changed: a new version.
again = backup(200)
check(again["id"] == first["id"] and len(objects()) == 1, "unchanged is not uploaded twice")
imap = imaplib.IMAP4("127.0.0.1", int(imap_port))
imap.login(address, password)
imap.select("INBOX")
imap.store("1", "+FLAGS", "\\Flagged")
imap.logout()
second = backup(201)
check(object_ids() == sorted([first["id"], second["id"]]), "two versions")
print("ok: unchanged not uploaded, a changed flag made a new version")

# Retention (keep_last = 2): the third version lets the first go, object too.
imap = imaplib.IMAP4("127.0.0.1", int(imap_port))
imap.login(address, password)
imap.select("INBOX")
imap.store("3", "+FLAGS", "\\Deleted")
imap.expunge()
imap.logout()
third = backup(201)
ids = [b["id"] for b in listed()]
check(ids == [second["id"], third["id"]], f"listed after pruning: {ids}")
check(object_ids() == sorted(ids), f"objects after pruning: {object_ids()}")
print("ok: retention pruned the oldest version and its object")


def inbox_count():
    m = imaplib.IMAP4("127.0.0.1", int(imap_port))
    m.login(address, password)
    typ, data = m.select("INBOX")
    m.logout()
    return int(data[0])


# Restore the second version (three messages) over the mailbox (two): it
# comes from the store; the mailbox as it was is backed up there and held.
check(inbox_count() == 2, "two messages before the restore")
status, restored = call("POST", f"/v1/backups/{second['id']}/restore")
check(status == 200, (status, restored))
check(inbox_count() == 3, "the restored version has three messages")
held = restored["replaced"]
check(held["held"] is True, restored)
ids = [b["id"] for b in listed()]
check(held["id"] in ids and object_ids() == sorted(ids), (ids, object_ids()))
status, _ = call("POST", "/v1/backups/confirm-restore")
check(status == 204, status)
print("ok: restored from the store; the replaced mailbox held, then released")

# Delete one version: record and object go.
victim = listed()[0]["id"]
status, _ = call("DELETE", f"/v1/backups/{victim}")
check(status == 204, status)
check(victim not in object_ids(), "deleted object")
check(object_ids() == sorted(b["id"] for b in listed()), "objects equal records")
status, _ = call("GET", f"/v1/backups/{victim}")
check(status == 404, status)
print("ok: a deleted version is gone from the list and the store")

# Deleting the alias removes every object of its mailbox.
check(len(objects()) >= 1, "something to delete")
status, body = call("DELETE", f"/v1/admin/aliases/{address}", authorization=f"Bearer {admin}")
check(status == 204, (status, body))
check(objects() == {}, f"nothing left in the store: {objects()}")
backups_dir = os.path.join(work, "data", "backups")
check(os.listdir(backups_dir) == [], f"nothing left on disk: {os.listdir(backups_dir)}")
print("ok: the alias's deletion left nothing in the store or on disk")
