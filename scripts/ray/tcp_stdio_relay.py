"""Relays stdin/stdout to a TCP port: an SSH ProxyCommand for an sshd on a non-default port.

Ray's cluster launcher has no SSH port setting, only `auth.ssh_proxy_command`, so a test (or a
node whose sshd does not listen on 22) reaches it with

    auth:
      ssh_proxy_command: python3 scripts/ray/tcp_stdio_relay.py 127.0.0.1 2222

(`nc 127.0.0.1 2222` does the same where netcat is installed.) Standard library only.
"""

from __future__ import annotations

import os
import select
import socket
import sys


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    sock = socket.create_connection((host, port), timeout=30)
    sock.settimeout(None)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    readers: list[object] = [stdin, sock]
    while readers:
        ready, _, _ = select.select(readers, [], [])
        if stdin in ready:
            data = os.read(stdin, 65536)
            if data:
                sock.sendall(data)
            else:  # ssh closed its end: pass the EOF on, keep reading the server's last bytes
                readers.remove(stdin)
                sock.shutdown(socket.SHUT_WR)
        if sock in ready:
            data = sock.recv(65536)
            if not data:
                break
            _write_all(stdout, data)
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
