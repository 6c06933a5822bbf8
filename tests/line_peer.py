"""Drive line-protocol ICE peers from Python (a copy of the interop harness's driver, for the tests)."""
import queue, subprocess, sys, threading, time

class LinePeer:
    def __init__(self, argv, name):
        self.name = name
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, bufsize=1)
        self.q = queue.Queue()
        self.lines = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.p.stdout:
            line = line.rstrip("\n")
            print(f"[{self.name}] {line}", flush=True)
            self.lines.append(line)
            self.q.put(line)

    def expect(self, prefix, timeout=10):
        end = time.time() + timeout
        while True:
            line = self.q.get(timeout=max(0.01, end - time.time()))
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def send(self, line):
        self.p.stdin.write(line + "\n"); self.p.stdin.flush()

    def close(self):
        try: self.send("quit")
        except Exception: pass
        try: self.p.wait(3)
        except subprocess.TimeoutExpired: self.p.kill()

def wire(a, b, timeout=15):
    """Exchange ufrag/pwd/candidates (a is controlling), return when both connected."""
    creds = {}
    for x in (a, b):
        creds[x] = (x.expect("ufrag "), x.expect("pwd "))
    for x, y in ((a, b), (b, a)):
        while True:
            line = x.q.get(timeout=timeout)
            if line.startswith("candidate "): y.send(line)
            elif line == "gathered": break
    b.send("remote %s %s" % creds[a]); a.send("remote %s %s" % creds[b])
    a.expect("connected", timeout); b.expect("connected", timeout)

if __name__ == "__main__":
    # usage: line_peer.py 'CMD_A...' 'CMD_B...'   (A controlling, B controlled+echo)
    import shlex
    a = LinePeer(shlex.split(sys.argv[1]), "A"); b = LinePeer(shlex.split(sys.argv[2]), "B")
    try:
        wire(a, b)
        a.send("send hello-from-A")
        got = a.expect("recv ", 5)
        assert got == "hello-from-A", got
        print("ROUNDTRIP OK")
    finally:
        a.close(); b.close()
