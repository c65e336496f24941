"""Tiny backend server of the lab: `python -m xdplb.httpd N [--port P] [--udp P]`.

Every GET gets the body `This is service #N` (and a newline), like the seed's
pods. A request with an `X-Want-Addr: 1` header also gets two headers that
tell what the server's socket saw: X-Server-Addr (its local address: the VIP
under direct routing, its own address under Masq) and X-Client-Addr (the
peer: the real client, as IPVS never rewrites the source). With --udp, every datagram is echoed back
prefixed with `service #N: `. It listens on 127.0.0.1 unless --bind says
otherwise (the lab passes 0.0.0.0: its backends live in namespaces of their own).
"""
import argparse
import ipaddress
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


SERVER = "xdplb-rs"
WANT_ADDR = "X-Want-Addr"  # request header asking for the two address headers


def endpoint(sockaddr):
    """addr:port as a client writes it: [addr]:port for IPv6, an IPv4 client
    of a dual-stack socket (::ffff:a.b.c.d) as IPv4."""
    addr, port = sockaddr[:2]
    if addr.startswith("::ffff:") and "." in addr:
        addr = addr[len("::ffff:"):]
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def make_handler(number):
    body = f"This is service #{number}\n".encode()

    class Handler(BaseHTTPRequestHandler):
        def version_string(self):
            return SERVER

        def _head(self, payload=b""):
            # Only Server and Content-Length, in one segment with the body: the
            # seed's byte counts (344 bytes out per request) come out the same.
            self.send_response_only(200)
            self.send_header("Server", SERVER)
            self.send_header("Content-Length", str(len(body)))
            if self.headers.get(WANT_ADDR):
                self.send_header("X-Server-Addr", endpoint(self.connection.getsockname()))
                self.send_header("X-Client-Addr", endpoint(self.client_address))
            self._headers_buffer.append(b"\r\n" + payload)
            self.flush_headers()

        def do_GET(self):  # noqa: N802 (http.server's naming)
            self._head(body)

        def do_HEAD(self):  # noqa: N802
            self._head()

        def log_message(self, *args):
            pass

    return Handler


class Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


class Server6(Server):
    """An IPv6 socket; bound to :: it serves IPv4 clients too (dual stack)."""
    address_family = socket.AF_INET6


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def udp_echo(number, port, host="127.0.0.1"):
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    prefix = f"service #{number}: ".encode()

    def loop():
        while True:
            data, peer = sock.recvfrom(65535)
            sock.sendto(prefix + data, peer)

    threading.Thread(target=loop, daemon=True).start()
    return sock


def _address(text):
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def _port(text):
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port (1-65535): {text!r}")
    return int(text)


def main(argv=None):
    p = argparse.ArgumentParser(prog="xdplb-httpd", description=__doc__.splitlines()[0])
    p.add_argument("number", type=int, help="N of `This is service #N`")
    p.add_argument("--port", type=_port, default=80, help="TCP port for HTTP (default 80)")
    p.add_argument("--udp", type=_port, metavar="PORT", help="also echo UDP datagrams on PORT")
    p.add_argument("--bind", default="127.0.0.1", type=_address,
                   help="IP address to listen on (default 127.0.0.1; 0.0.0.0 for every "
                        "IPv4 address; :: for every address, IPv4 and IPv6, as the lab's "
                        "backends do in their own namespaces)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.udp:
        udp_echo(args.number, args.udp, args.bind)
    cls = Server6 if _family(args.bind) == socket.AF_INET6 else Server
    server = cls((args.bind, args.port), make_handler(args.number))
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
