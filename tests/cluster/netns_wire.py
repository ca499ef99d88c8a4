"""A delay line between two network interfaces: the "cable" of the two-hosts harness when its
link is shaped (cluster_fixture.TwoHosts with delay_ms).

    netns_wire.py IF_A IF_B --delay-ms 1

Every Ethernet frame that arrives on IF_A leaves on IF_B `delay_ms` later, and the other way
round, in order (AF_PACKET sockets; one receiving and one sending thread per direction). It
exists because this machine's kernel has no netem qdisc (CONFIG_NET_SCH_NETEM is not set:
`tc qdisc add ... netem` answers "Specified qdisc kind is unknown"); the rate limit stays in the
kernel (tc tbf on each host's end, set by the harness). The hosts' ends compute checksums in
software and do no segmentation offload (ethtool -K pf0 tx off tso off gso off), so every
frame that arrives here is finished and fits the MTU.

Prints one line when both directions run ("wire: IF_A <-> IF_B, delay D ms"), and on SIGTERM
the frames and bytes it forwarded each way.
"""
import argparse
import collections
import signal
import socket
import sys
import threading
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4   # a frame this socket (or another on the interface) sent
QUEUE_LIMIT = 20000   # frames in flight per direction; more are dropped, as netem's limit


def open_socket(interface):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((interface, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    return s


class Direction:
    def __init__(self, name, source, target, delay):
        self.name, self.source, self.target, self.delay = name, source, target, delay
        self.queue = collections.deque()
        self.ready = threading.Condition()
        self.frames = self.bytes = self.dropped = 0

    def receive(self):
        while True:
            frame, address = self.source.recvfrom(65536)
            if address[2] == PACKET_OUTGOING:
                continue
            due = time.monotonic() + self.delay
            with self.ready:
                if len(self.queue) >= QUEUE_LIMIT:
                    self.dropped += 1
                    continue
                self.queue.append((due, frame))
                self.ready.notify()

    def send(self):
        while True:
            with self.ready:
                while not self.queue:
                    self.ready.wait()
                due, frame = self.queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            with self.ready:
                self.queue.popleft()
            try:
                self.target.send(frame)
                self.frames += 1
                self.bytes += len(frame)
            except OSError:
                self.dropped += 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args()
    a, b = open_socket(args.a), open_socket(args.b)
    delay = args.delay_ms / 1000.0
    directions = [Direction(f"{args.a}->{args.b}", a, b, delay),
                  Direction(f"{args.b}->{args.a}", b, a, delay)]
    for d in directions:
        threading.Thread(target=d.receive, daemon=True).start()
        threading.Thread(target=d.send, daemon=True).start()

    def report(signum, frame):
        for d in directions:
            print(f"wire {d.name}: {d.frames} frames, {d.bytes} bytes, {d.dropped} dropped",
                  flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, report)
    signal.signal(signal.SIGINT, report)
    print(f"wire: {args.a} <-> {args.b}, delay {args.delay_ms} ms", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
