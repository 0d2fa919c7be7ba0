"""Drives the real bentoml client (SDK and CLI) against a running bentogate.

Called by tests/bentoml_client.rs with BENTO_CLOUD_API_ENDPOINT / BENTO_CLOUD_API_KEY (an admin
token) and BENTOML_HOME (a temp folder) set. Each mode checks what it can itself, exits non-zero
with a message on the first surprise, and prints one JSON line of facts for the Rust side.

  client.py sdk              list, create, get, delete through bentoml.api_token
  client.py cli              bentoml cloud login, bentoml api-token list/create/get/delete
  client.py call URL         SyncHTTPClient(URL, token=$CALL_TOKEN or none).echo(text="hi")
  client.py delete UID       bentoml.api_token.delete(UID)
"""

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(cond, message):
    if not cond:
        fail(message)


def sdk():
    import bentoml

    before = bentoml.api_token.list()
    check(isinstance(before, list) and before, f"list gave {before!r}")
    expires = datetime.now() + timedelta(days=7)
    created = bentoml.api_token.create(
        name="sdk-made", description="from the SDK", scopes=["api", "read_cluster"], expired_at=expires
    )
    check(created.token and created.token.startswith("bgt_"), "create returned no value")
    check(created.scopes == ["api", "read_cluster"], f"scopes {created.scopes}")
    check(created.expired_at is not None and not created.is_expired, "expiry lost")
    check(abs((created.expired_at.replace(tzinfo=None) - expires).total_seconds()) < 2, "expiry moved")
    got = bentoml.api_token.get(created.uid)
    check(got is not None and got.name == "sdk-made", f"get gave {got!r}")
    check(got.token is None, "get must not return the value")
    check(got.description == "from the SDK", f"description {got.description!r}")
    names = [t.name for t in bentoml.api_token.list(search="sdk-")]
    check(names == ["sdk-made"], f"search gave {names}")
    bentoml.api_token.delete(created.uid)
    check(bentoml.api_token.get(created.uid) is None, "deleted token still found")
    check(bentoml.api_token.get("no-such-uid") is None, "unknown uid must be None")
    print(json.dumps({"listed": len(before), "created_uid": created.uid}))


def bentoml_cli(*args):
    exe = os.path.join(os.path.dirname(sys.executable), "bentoml")
    r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def last_json(text):
    """The CLI prints a panel before `-o json` output; the JSON starts at a line's first brace."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("{") or line.startswith("["):
            return json.loads("\n".join(lines[i:]))
    fail(f"no JSON in {text!r}")


def cli():
    endpoint = os.environ["BENTO_CLOUD_API_ENDPOINT"]
    key = os.environ["BENTO_CLOUD_API_KEY"]
    code, out, err = bentoml_cli("cloud", "login", "--api-token", key, "--endpoint", endpoint)
    check(code == 0, f"login failed: {out} {err}")
    check("Logged in as" in out, f"login said {out!r}")
    # The caller (see admin_token in tests/bentoml_client.rs) holds `api` and never expires, so
    # it may grant `api` with an expiry: a new token grants no more than its maker holds.
    code, out, err = bentoml_cli("api-token", "create", "cli-made", "--scope", "api", "--expires", "30d", "-o", "json")
    check(code == 0, f"create failed: {out} {err}")
    made = last_json(out)
    check(made["token"].startswith("bgt_"), "create printed no value")
    code, out, err = bentoml_cli("api-token", "list", "-o", "json")
    check(code == 0, f"list failed: {out} {err}")
    listed = [t["name"] for t in last_json(out)]
    check("cli-made" in listed, f"list gave {listed}")
    # Asking for a scope the caller lacks (write_cluster) is refused with the 403, and nothing
    # is created; the refusal does not repeat the requested name.
    code, out, err = bentoml_cli("api-token", "create", "too-wide-marker", "--scope", "write_cluster", "-o", "json")
    check(code != 0 or "403" in out + err, f"a wider token was created: {out} {err}")
    check("scope the calling token does not hold" in out + err, f"refusal said {out} {err}")
    code, out, err = bentoml_cli("api-token", "list", "-o", "json")
    check(code == 0, f"list failed: {out} {err}")
    after = [t["name"] for t in last_json(out)]
    check(sorted(after) == sorted(listed), f"the refused create changed the list: {after}")
    code, out, err = bentoml_cli("api-token", "list")
    check(code == 0 and "cli-made" in out, f"table list failed: {out} {err}")
    code, out, err = bentoml_cli("api-token", "get", made["uid"])
    check(code == 0 and "cli-made" in out and made["token"] not in out, f"get failed: {out} {err}")
    code, out, err = bentoml_cli("api-token", "delete", made["uid"])
    check(code == 0 and "deleted" in out, f"delete failed: {out} {err}")
    code, out, err = bentoml_cli("api-token", "get", made["uid"])
    check(code != 0 and "not found" in (out + err), f"get after delete: {code} {out} {err}")
    # A token that is not live: the client reports the 401.
    env_key = os.environ.pop("BENTO_CLOUD_API_KEY")
    code, out, err = bentoml_cli("cloud", "login", "--api-token", "bgt_" + "x" * 36, "--endpoint", endpoint)
    os.environ["BENTO_CLOUD_API_KEY"] = env_key
    check(code != 0 or "401" in out + err, f"login with a bad token succeeded: {out} {err}")
    print(json.dumps({"login": "ok", "created_uid": made["uid"]}))


def call(url):
    import bentoml

    token = os.environ.get("CALL_TOKEN") or None
    os.environ.pop("BENTO_CLOUD_API_KEY", None)  # with token=None the client would use it
    try:
        with bentoml.SyncHTTPClient(url, token=token, server_ready_timeout=20) as c:
            print(json.dumps({"result": c.echo(text="hi")}))
    except Exception as e:  # the client raises on 401 (while fetching the schema or calling)
        print(json.dumps({"error": type(e).__name__, "message": str(e)[:300]}))


def delete(uid):
    import bentoml

    bentoml.api_token.delete(uid)
    print(json.dumps({"deleted": uid}))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "sdk":
        sdk()
    elif mode == "cli":
        cli()
    elif mode == "call":
        call(sys.argv[2])
    elif mode == "delete":
        delete(sys.argv[2])
    else:
        fail(f"unknown mode {mode}")
