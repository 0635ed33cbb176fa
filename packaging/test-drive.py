#!/usr/bin/env python3
"""Helpers for packaging/test-package.sh (standard library only).

  test-drive.py job BASE USER PROMPT [--wait-photo]
      As Telegram user USER, through the emulator control API at BASE: /start (first time),
      send PROMPT, press "Square" (the config has one model, so the bot skips the model
      choice). With --wait-photo, wait until the bot has sent a photo for this job (60 s).
  test-drive.py provider PORT LOG
      A fake provider on PORT (IPv4 and IPv6 loopback): logs "METHOD PATH Host" of every
      request to LOG and answers 503, so a job retries and fails without a real provider.
"""

import http.server
import json
import socket
import sys
import time
import urllib.request


def call(base, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def send(base, user, body):
    body = dict(body, user={"id": user, "first_name": f"U{user}", "language_code": "en"})
    call(base, "/emulator/control/updates", body)


def messages(base, user):
    return call(base, f"/emulator/control/chats/{user}/messages")


def wait(base, user, what, pred, secs=60):
    deadline = time.time() + secs
    while time.time() < deadline:
        found = [m for m in messages(base, user) if m.get("from_bot") and pred(m)]
        if found:
            return found[-1]
        time.sleep(0.2)
    sys.exit(f"test-drive: no {what} for user {user} in {secs} s")


def press(base, user, after, label):
    def offers(m):
        return m["message_id"] > after and label in json.dumps(m.get("reply_markup"), ensure_ascii=False)

    m = wait(base, user, f"button {label!r}", offers)
    for row in m["reply_markup"]["inline_keyboard"]:
        for b in row:
            if label in b.get("text", ""):
                send(base, user, {"callback_data": b["callback_data"], "message_id": m["message_id"]})
                return
    sys.exit(f"test-drive: button {label!r} vanished")


def job(base, user, prompt, wait_photo):
    if not any(m.get("from_bot") for m in messages(base, user)):
        send(base, user, {"text": "/start"})
        wait(base, user, "welcome", lambda m: "Welcome" in (m.get("text") or ""))
    last = max((m["message_id"] for m in messages(base, user)), default=0)
    photos_before = sum(1 for m in messages(base, user) if m.get("from_bot") and m.get("photo"))
    send(base, user, {"text": prompt})
    press(base, user, last, "Square")
    if wait_photo:
        deadline = time.time() + 60
        while sum(1 for m in messages(base, user) if m.get("from_bot") and m.get("photo")) <= photos_before:
            if time.time() > deadline:
                sys.exit(f"test-drive: no photo for user {user} in 60 s")
            time.sleep(0.2)


class DualStack(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def provider(port, log):
    class Handler(http.server.BaseHTTPRequestHandler):
        def handle_any(self):
            with open(log, "a") as f:
                f.write(f"{self.command} {self.path} {self.headers.get('Host')}\n")
            self.send_response(503)
            self.send_header("content-length", "0")
            self.end_headers()

        do_GET = do_POST = do_PUT = handle_any

        def log_message(self, *args):
            pass

    DualStack(("::", port), Handler).serve_forever()


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "job":
        job(sys.argv[2], int(sys.argv[3]), sys.argv[4], "--wait-photo" in sys.argv[5:])
    elif len(sys.argv) == 4 and sys.argv[1] == "provider":
        provider(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(__doc__)
