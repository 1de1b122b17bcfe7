#!/usr/bin/env python3
"""framed_kv's server must not allocate a frame's announced length up front.

Runs `framed_kv --serve`, opens 200 connections that each send only a 4-byte header
announcing a 64 KiB frame, and checks that the server's resident memory grows by a few KiB
per connection, not by the 64 KiB each header announces (13 MB in all). Then completes
one of those frames (a 64 KiB SET, in pieces) and reads the value back, so the buffer that
grows as bytes arrive is shown to reach the full length.
Usage: framed_kv_idle_headers.py PATH/TO/framed_kv   (Linux: reads /proc/PID/status)
"""
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

CONNECTIONS = 200
BATCH = 50
ANNOUNCED = 64 * 1024          # framed_kv's max_payload
LIMIT_PER_CONNECTION = 16 * 1024  # bytes of server memory an idle connection may cost


def rss_bytes(pid):
    with open(f'/proc/{pid}/status') as f:
        return int(re.search(r'^VmRSS:\s+(\d+) kB', f.read(), re.M).group(1)) * 1024


def frame(payload):
    return struct.pack('>I', len(payload)) + payload


def read_reply(s):
    def exactly(n):
        data = b''
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                raise RuntimeError('the server closed the connection')
            data += chunk
        return data
    (n,) = struct.unpack('>I', exactly(4))
    return exactly(n)


def request(s, text):
    s.sendall(frame(text))
    return read_reply(s)


def main():
    if not os.path.exists('/proc/self/status'):
        print('skip: needs /proc/PID/status')
        return 77
    server = subprocess.Popen([sys.argv[1], '--serve'], stdout=subprocess.PIPE, text=True)
    sockets = []
    try:
        port = int(re.search(r'listening on 127\.0\.0\.1:(\d+)', server.stdout.readline()).group(1))

        # Reads the server's output all along (a full pipe would block it), counting its
        # "accepted" lines.
        seen = threading.Condition()
        counts = {'accepted': 0, 'open': True}

        def drain():
            for line in server.stdout:
                with seen:
                    counts['accepted'] += line.startswith('server: accepted')
                    seen.notify_all()
            with seen:
                counts['open'] = False
                seen.notify_all()
        threading.Thread(target=drain, daemon=True).start()

        def accepted(total):  # waits until the server has accepted `total` connections
            with seen:
                if not seen.wait_for(lambda: counts['accepted'] >= total or not counts['open'], timeout=20):
                    raise RuntimeError('the server did not accept the connections in time')
                if counts['accepted'] < total:
                    raise RuntimeError('the server exited')

        def connect():
            s = socket.create_connection(('127.0.0.1', port), timeout=10)
            sockets.append(s)
            return s

        # Warm up (first allocations of the reactor, the store, the allocator's arenas).
        warm = connect()
        accepted(1)
        assert request(warm, b'SET warm up') == b'OK'
        time.sleep(0.2)
        before = rss_bytes(server.pid)

        idle = []
        for i in range(CONNECTIONS):
            s = connect()
            s.sendall(struct.pack('>I', ANNOUNCED))
            idle.append(s)
            # In batches: more than listen_queue_size (128) connections waiting to be
            # accepted would be reset, which a slow (busy) server could let happen.
            if (i + 1) % BATCH == 0 or i + 1 == CONNECTIONS:
                accepted(1 + i + 1)
        # The server reads in readiness order: once a later request is answered, the
        # headers sent before it have been read and their payload reads started.
        assert request(warm, b'GET warm') == b'up'
        time.sleep(0.2)
        after = rss_bytes(server.pid)

        per_connection = (after - before) / CONNECTIONS
        print(f'server RSS {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB with {CONNECTIONS} connections '
              f'that each sent a header announcing {ANNOUNCED} bytes: '
              f'{per_connection / 1024:.1f} KiB per connection (limit {LIMIT_PER_CONNECTION // 1024} KiB)')

        # One of them completes its frame, in pieces; the value comes back whole.
        s = idle[0]
        value = b'v' * (ANNOUNCED - len(b'SET big '))
        payload = b'SET big ' + value
        for at in range(0, len(payload), 10000):
            s.sendall(payload[at:at + 10000])
            time.sleep(0.01)
        assert read_reply(s) == b'OK'
        assert request(s, b'GET big') == value
        print('a 64 KiB frame sent in pieces on one of them: stored and read back whole')

        if per_connection > LIMIT_PER_CONNECTION:
            print('FAILED: the server allocates what a header announces before the bytes arrive')
            return 1
        return 0
    finally:
        for s in sockets:
            s.close()
        server.terminate()
        server.wait()


if __name__ == '__main__':
    sys.exit(main())
