#!/usr/bin/env python3
"""graceful_server stops on SIGTERM within a bound, with 100 idle clients, and leaks nothing.

Runs `graceful_server --port 0 --idle-ms 60000`, connects 100 clients, checks that each one
is served (one echoed line), leaves them idle, sends SIGTERM, and checks that:
- the server exits with status 0 within 5 s, saying no descriptor is left;
- every client received the goodbye "bye: server shutting down" and then end of stream.
Usage: graceful_server_sigterm.py PATH/TO/graceful_server
"""
import re
import signal
import socket
import subprocess
import sys
import time

CLIENTS = 100
BOUND_S = 5.0


def read_line(s):
    data = b''
    while not data.endswith(b'\n'):
        chunk = s.recv(1)
        if not chunk:
            break
        data += chunk
    return data.decode()


def main():
    server = subprocess.Popen([sys.argv[1], '--port', '0', '--idle-ms', '60000'],
                              stdout=subprocess.PIPE, text=True)
    try:
        first = server.stdout.readline()
        port = int(re.search(r'127\.0\.0\.1:(\d+)', first).group(1))
        clients = []
        for i in range(CLIENTS):
            s = socket.create_connection(('127.0.0.1', port), timeout=10)
            s.sendall(f'hello {i}\n'.encode())
            clients.append(s)
        for i, s in enumerate(clients):
            line = read_line(s)
            if line != f'echo: hello {i}\n':
                sys.exit(f'client {i}: unexpected echo {line!r}')
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        rest, _ = server.communicate(timeout=BOUND_S)
        took = time.monotonic() - started
        if server.returncode != 0:
            sys.exit(f'server exited with {server.returncode}:\n{rest}')
        if 'exit: 0 descriptor(s) left' not in rest:
            sys.exit(f'server left descriptors:\n{rest}')
        for i, s in enumerate(clients):
            line = read_line(s)
            if line != 'bye: server shutting down\n':
                sys.exit(f'client {i}: expected the goodbye, got {line!r}')
            if s.recv(1) != b'':
                sys.exit(f'client {i}: no end of stream after the goodbye')
            s.close()
        print(f'ok: {CLIENTS} idle clients, SIGTERM to exit in {took * 1000:.0f} ms, every goodbye received')
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


if __name__ == '__main__':
    main()
