"""Drives the real interactive `bentoml cloud login` "with a web browser" in a pseudo-terminal.

Called by tests/console_login.rs with the python of the bentoml venv under test
(tests/bentoml/venv.sh [VERSION]). The browser is not opened here: `BROWSER` is a script written
into HOME that writes the URL the client opens into URL_FILE; the Rust test hands that URL to
its WebDriver session, which approves the login. Token values are never printed: the saved
context is read by the Rust side itself.

  login.py login ENDPOINT HOME URL_FILE CONTEXT
      runs `bentoml cloud login --endpoint ENDPOINT --context CONTEXT` with BENTOML_HOME=HOME,
      chooses "Create a new API token with a web browser", answers the "open in your browser?"
      prompt with y, and waits (no end of its own: the Rust test has the deadline) for the
      logged-in lines; prints one JSON line of facts.
  login.py list HOME CONTEXT
      runs `bentoml api-token list -o json --context CONTEXT` with BENTOML_HOME=HOME; prints one
      JSON line with the listed tokens' names and uids.

Exits non-zero with a message (and the terminal transcript, which holds no token value) on the
first surprise.
"""

import json
import os
import re
import sys
import time

import pexpect

# What the terminal shows has colour codes and emoji around the words; match the words only.
ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


def fail(message, transcript=None):
    print(f"FAIL: {message}", file=sys.stderr)
    if transcript is not None:
        print("---- terminal transcript ----", file=sys.stderr)
        print(ANSI.sub("", transcript), file=sys.stderr)
        print("---- end of transcript ----", file=sys.stderr)
    sys.exit(1)


def client_env(home):
    # No BENTO_CLOUD_API_KEY (it would override the saved context), and no display: the only
    # browser webbrowser may find is BROWSER.
    dropped = ("BENTO_CLOUD_", "DISPLAY", "WAYLAND_DISPLAY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        BENTOML_HOME=home,
        BENTOML_DO_NOT_TRACK="True",
        TERM="xterm-256color",
        # questionary (bentoml < 1.4.20) would otherwise ask the terminal for the cursor
        # position and wait for an answer pexpect never gives.
        PROMPT_TOOLKIT_NO_CPR="1",
        PYTHONUNBUFFERED="1",
        # rich wraps at the terminal's width (80 when stdout is no terminal); no wrapping.
        COLUMNS="300",
        LINES="50",
        # The gateway is on loopback: never through a proxy from the environment.
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    return env


def bentoml_exe():
    return os.path.join(os.path.dirname(sys.executable), "bentoml")


def write_browser(home, url_file):
    """The `BROWSER` command: Python's webbrowser runs it with the URL as its one argument and
    waits for it (0 = opened). The file appears whole (written aside, then renamed)."""
    path = os.path.join(home, "browser.sh")
    with open(path, "w") as f:
        f.write(
            "#!/bin/sh\n"
            f"printf '%s\\n' \"$1\" > '{url_file}.part' && mv '{url_file}.part' '{url_file}'\n"
        )
    os.chmod(path, 0o755)
    return path


def login(endpoint, home, url_file, context):
    env = client_env(home)
    env["BROWSER"] = write_browser(home, url_file)
    child = pexpect.spawn(
        bentoml_exe(),
        ["cloud", "login", "--endpoint", endpoint, "--context", context],
        env=env,
        encoding="utf-8",
        codec_errors="replace",
        # Wide enough that no URL or line the client prints is wrapped.
        dimensions=(50, 300),
        timeout=60,
    )
    seen = []

    def text():
        return ANSI.sub("", "".join(seen))

    def expect(what, pattern, timeout=60):
        """Waits for `pattern` in what the terminal shows with its colour codes removed (rich
        styles words inside a line, e.g. the parentheses, so raw output matches badly)."""
        regex = re.compile(pattern)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            shown = text()
            m = regex.search(shown)
            if m:
                return m
            if deadline is not None and time.monotonic() > deadline:
                fail(f"{what}: timed out", shown)
            try:
                seen.append(child.read_nonblocking(size=4096, timeout=0.2))
            except pexpect.TIMEOUT:
                pass
            except pexpect.EOF:
                fail(f"{what}: the client exited", text())

    # The menu (rich_toolkit's in 1.4.40, questionary's in 1.4.10): the first choice is the
    # highlighted one; Enter takes it. rich_toolkit asks the terminal for its colours before
    # drawing and then flushes the input, so Enter is sent only once the choice is drawn.
    expect("the login menu", r"Create a new API token with a web browser")
    expect("the second choice", r"Paste an existing API token")
    child.send("\r")
    # rich's Confirm: "Would you like to open URL in your browser? [y/n] (y): ".
    expect("the open-in-browser prompt", r"in your browser\?.*\(y\)")
    child.send("y\r")
    expect("the opened line", r"Opened")
    expect("the waiting line", r"Waiting for authentication")
    print("waiting for the browser", file=sys.stderr, flush=True)
    # No timeout of its own: the client polls (or listens) until the browser approves; the
    # Rust test kills this process group at its own deadline.
    m = expect(
        "the logged-in line",
        r"Configured BentoCloud credentials \(current-context: ([^)]+)\)",
        timeout=None,
    )
    configured = m.group(1)
    m = expect("the logged-in line", r"Logged in as (\S+) at (.+) organization", timeout=30)
    email, org = m.group(1), m.group(2).strip()
    try:
        while True:
            seen.append(child.read_nonblocking(size=4096, timeout=30))
    except pexpect.EOF:
        pass
    except pexpect.TIMEOUT:
        fail("the client did not exit after logging in", text())
    child.close()
    shown = text()
    if child.exitstatus != 0:
        fail(f"the client exited with {child.exitstatus}", shown)
    if "bgt_" in shown:
        fail("the terminal showed a token value")
    print(
        json.dumps(
            {
                "configured_context": configured,
                "email": email,
                "organization": org,
                "opened_line": "Opened" in shown,
                "logged_in_line": re.search(r"Logged in as .+ organization", shown).group(0),
            }
        ),
        flush=True,
    )


def list_tokens(home, context):
    import subprocess

    r = subprocess.run(
        [bentoml_exe(), "api-token", "list", "-o", "json", "--context", context],
        env=client_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode != 0:
        fail(f"bentoml api-token list exited with {r.returncode}: {r.stdout} {r.stderr}")
    lines = r.stdout.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith("[")), None)
    if start is None:
        fail(f"no JSON list in {r.stdout!r}")
    tokens = json.loads("\n".join(lines[start:]))
    if any(t.get("token") for t in tokens):
        fail("the list holds token values")
    print(
        json.dumps([{"name": t["name"], "uid": t["uid"], "scopes": t.get("scopes")} for t in tokens]),
        flush=True,
    )


def main():
    args = sys.argv[1:]
    if args[:1] == ["login"] and len(args) == 5:
        login(*args[1:])
    elif args[:1] == ["list"] and len(args) == 3:
        list_tokens(*args[1:])
    else:
        fail(f"usage: login.py login ENDPOINT HOME URL_FILE CONTEXT | list HOME CONTEXT (got {args})")


if __name__ == "__main__":
    main()
