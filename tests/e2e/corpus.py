"""Varied messages for the mail-client tests: plain, 8-bit, quoted-printable,
base64 attachments, alternatives, nested messages, dot-leading lines, folded
and encoded headers, empty bodies. Deterministic for a given seed."""
import base64
import random


def message(i: int, rng: random.Random) -> bytes:
    kind = i % 8
    subject = f"Message {i}"
    if kind == 1:
        subject = f"=?utf-8?b?{base64.b64encode(f'Olá {i} — ünïcödé'.encode()).decode()}?="
    headers = [
        f"From: Sender {i % 17} <sender{i % 17}@example.net>",
        f"To: ana@example.com",
        f"Subject: {subject}",
        f"Message-ID: <corpus-{i}@example.net>",
    ]
    if i % 5:
        headers.append(f"Date: Mon, {1 + i % 28} Feb 2021 {i % 24:02}:{i % 60:02}:07 +0100")
    if i % 9 == 0 and i:
        headers.append(f"In-Reply-To: <corpus-{i - 1}@example.net>")
        headers.append(f"References: <corpus-{i - 9}@example.net>\r\n <corpus-{i - 1}@example.net>")
    words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "épsilon", "zeta"]) for _ in range(rng.randint(0, 60)))
    if kind == 0:
        body = f"Plain text {i}.\r\n.leading dot\r\n..two dots\r\n{words}\r\n"
        return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()
    if kind == 1:
        headers += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                    "Content-Transfer-Encoding: 8bit"]
        body = f"Texto em português {i}: ação, coração.\r\n{words}\r\n"
        return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()
    if kind == 2:
        headers += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=iso-8859-1",
                    "Content-Transfer-Encoding: quoted-printable"]
        body = f"Caf=E9 {i} =\r\nsoft break\r\n"
        return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()
    if kind == 3:
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 20000)))
        b64 = base64.encodebytes(blob).decode().replace("\n", "\r\n")
        headers += ["MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="b1"']
        body = (f"--b1\r\nContent-Type: text/plain\r\n\r\nSee attached {i}.\r\n"
                f"--b1\r\nContent-Type: application/octet-stream; name=\"f{i}.bin\"\r\n"
                f"Content-Disposition: attachment; filename=\"f{i}.bin\"\r\n"
                f"Content-Transfer-Encoding: base64\r\n\r\n{b64}--b1--\r\n")
        return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()
    if kind == 4:
        headers += ["MIME-Version: 1.0", 'Content-Type: multipart/alternative; boundary="alt"']
        body = (f"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHi {i}\r\n"
                f"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hi <b>{i}</b></p>\r\n--alt--\r\n")
        return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()
    if kind == 5:
        inner = f"From: inner@example.org\r\nSubject: inner {i}\r\n\r\nnested body\r\n"
        headers += ["MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="m"']
        body = (f"--m\r\nContent-Type: text/plain\r\n\r\nforwarding\r\n"
                f"--m\r\nContent-Type: message/rfc822\r\n\r\n{inner}--m--\r\n")
        return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()
    if kind == 6:
        return ("\r\n".join(headers) + "\r\n\r\n").encode()
    long_line = "x" * rng.randint(100, 990)
    headers.append("X-Long: " + " ".join(["folded"] * 30).replace("folded folded folded", "folded\r\n\tfolded folded"))
    return ("\r\n".join(headers) + f"\r\n\r\n{long_line}\r\n{words}\r\n").encode()


def corpus(n: int, seed: int = 7):
    rng = random.Random(seed)
    return [message(i, rng) for i in range(n)]
