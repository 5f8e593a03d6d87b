"""Drives `rangedb repl` through a real pseudo-terminal, as a user would:
waits for each prompt, types a line, and prints the session as it
appeared on the terminal (escape sequences and carriage returns removed).

usage: repl_pty.py <rangedb binary> <endpoints>   (lines to type on stdin)
"""
import os
import pty
import re
import select
import sys
import time

ESC = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def main():
    binary, endpoints = sys.argv[1], sys.argv[2]
    lines = sys.stdin.read().splitlines()
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(binary, [binary, "--endpoints", endpoints, "repl"])
    out = b""

    def read_until(pred, limit=30.0):
        nonlocal out
        end = time.time() + limit
        while time.time() < end:
            if pred(out):
                return True
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    return pred(out)
                if not chunk:
                    return pred(out)
                out += chunk
        return pred(out)

    def at_prompt(b):
        text = ESC.sub(b"", b).replace(b"\r", b"")
        return text.endswith(b"> ")

    for line in lines:
        if not read_until(at_prompt):
            sys.stderr.write("no prompt; got: %r\n" % out[-300:])
            sys.exit(2)
        os.write(fd, line.encode() + b"\r")
        # Wait for the echo so the next prompt check sees new output.
        read_until(lambda b: b.rstrip().endswith(line.encode()) or not at_prompt(b), 5.0)
    read_until(lambda b: b"Goodbye!" in b)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    text = ESC.sub(b"", out).replace(b"\r", b"").decode("utf-8", "replace")
    sys.stdout.write(text)


main()
