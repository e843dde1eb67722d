"""Drives Cofre through a client generated from openapi/openapi.json by
openapi-python-client: log in, list folders and messages, fetch one
message's exact bytes. Usage: sdk_flow.py CLIENT_DIR BASE_URL ADDRESS PASSWORD EML"""
import sys

client_dir, base_url, address, password, eml = sys.argv[1:6]
sys.path.insert(0, client_dir)

from client import AuthenticatedClient, Client  # noqa: E402
from client.api.folders import list_folders  # noqa: E402
from client.api.messages import get_raw_message, list_messages  # noqa: E402
from client.api.session import create_session  # noqa: E402
from client.models import Problem, SessionRequest, SessionView  # noqa: E402

expected = open(eml, "rb").read()

anonymous = Client(base_url=base_url, raise_on_unexpected_status=True)
refused = create_session.sync(client=anonymous, body=SessionRequest(address=address, password="wrong"))
assert isinstance(refused, Problem) and refused.code == "unauthorized", refused

session = create_session.sync(client=anonymous, body=SessionRequest(address=address, password=password))
assert isinstance(session, SessionView), session
api = AuthenticatedClient(base_url=base_url, token=session.token, raise_on_unexpected_status=True)

folders = list_folders.sync(client=api)
inbox = next(f for f in folders if f.role == "inbox")
assert inbox.total == 1, inbox

page = list_messages.sync(client=api, folder=inbox.id, limit=10)
assert len(page.messages) == 1, page
message = page.messages[0]
assert message.subject == "Generated clients work", message.subject

raw = get_raw_message.sync(client=api, id=message.id)
body = raw.payload.read()
assert body == expected, (len(body), len(expected))
print(f"sdk: login, {len(folders)} folders, {len(page.messages)} message, {len(body)} exact bytes")
