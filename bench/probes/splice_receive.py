"""Probe (not part of the module): does receiving with splice(2) into a file on a huge=always
tmpfs cost the kernel less than recv(2) into a mapping of it? A recv into a new page of the
mapping faults it in, and the kernel clears the page (2 MiB) before the copy; a write(2) -- and
a splice from a pipe into the file is one -- skips that clearing for the bytes it covers, and
clears only the rest of a new 2 MiB page. Interleaved rounds, 2 GiB over loopback TCP from a
forked sender in 512 KiB sends; prints one JSON line per receive (the receiver's user and
system CPU seconds) and the medians of the per-round ratios.

  mount -t tmpfs -o size=6G,huge=always none /mnt/huge   # root
  python3 bench/probes/splice_receive.py /mnt/huge [rounds]

Modes: recv (recv_into a MAP_SHARED mapping, MSG_WAITALL, 512 KiB a call); splice-fill
(socket -> pipe until 512 KiB are in it, then pipe -> file at the offset); splice-once (one
socket -> pipe call, whatever it brought, then pipe -> file). The pipe is 1 MiB
(/proc/sys/fs/pipe-max-size for users without CAP_SYS_RESOURCE). splice-fill is not safe
for the module: a pipe whose slots run out before its bytes (small socket fragments) makes
the next socket -> pipe call wait for room no one will make.
"""
import fcntl
import json
import mmap
import os
import resource
import socket
import statistics
import sys

SIZE = 2 << 30
CHUNK = 512 << 10
F_SETPIPE_SZ = 1031


def receive(mode: str, directory: str) -> dict:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    pid = os.fork()
    if pid == 0:
        out = socket.create_connection(listener.getsockname())
        data = memoryview(os.urandom(CHUNK))
        for _ in range(SIZE // CHUNK):
            out.sendall(data)
        out.close()
        os._exit(0)
    conn, _ = listener.accept()
    path = os.path.join(directory, "splice-probe.bin")
    if os.path.exists(path):
        os.unlink(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, SIZE)
    before = resource.getrusage(resource.RUSAGE_SELF)
    if mode == "recv":
        mapping = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        view = memoryview(mapping)
        got = 0
        while got < SIZE:
            got += conn.recv_into(view[got:got + CHUNK], 0, socket.MSG_WAITALL)
        view.release()
        mapping.close()
    else:
        pipe_out, pipe_in = os.pipe()
        fcntl.fcntl(pipe_in, F_SETPIPE_SZ, 1 << 20)
        got = 0
        while got < SIZE:
            want = min(CHUNK, SIZE - got)
            in_pipe = os.splice(conn.fileno(), pipe_in, want, flags=os.SPLICE_F_MOVE)
            while mode == "splice-fill" and in_pipe < want:
                in_pipe += os.splice(conn.fileno(), pipe_in, want - in_pipe, flags=os.SPLICE_F_MOVE)
            offset = got
            while in_pipe > 0:
                moved = os.splice(pipe_out, fd, in_pipe, offset_dst=offset, flags=os.SPLICE_F_MOVE)
                in_pipe -= moved
                offset += moved
            got = offset
        os.close(pipe_out)
        os.close(pipe_in)
    after = resource.getrusage(resource.RUSAGE_SELF)
    os.waitpid(pid, 0)
    os.close(fd)
    os.unlink(path)
    conn.close()
    listener.close()
    return {
        "mode": mode,
        "userSeconds": round(after.ru_utime - before.ru_utime, 3),
        "systemSeconds": round(after.ru_stime - before.ru_stime, 3),
    }


def main() -> None:
    directory = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    ratios = {"splice-fill": [], "splice-once": []}
    for r in range(rounds):
        modes = ["recv", "splice-fill", "splice-once"]
        results = {}
        for mode in modes if r % 2 == 0 else modes[::-1]:
            results[mode] = receive(mode, directory)
            print(json.dumps({"round": r, **results[mode]}), flush=True)
        for mode in ratios:
            ratios[mode].append(results[mode]["systemSeconds"] / results["recv"]["systemSeconds"])
    print(json.dumps({mode: round(statistics.median(v), 3) for mode, v in ratios.items()} | {"of": "recv system CPU"}))


if __name__ == "__main__":
    main()
