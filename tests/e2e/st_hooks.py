"""Schemathesis hooks: a message (message/rfc822) is sent and read as bytes."""
import schemathesis

schemathesis.serializer.alias("message/rfc822", "application/octet-stream")


@schemathesis.deserializer("message/rfc822")
def rfc822(ctx, response):
    # The schema says: a string of bytes.
    return response.content.decode("latin-1")
