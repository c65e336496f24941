"""keepalived's health checkers, as asyncio coroutines, and their schedule.

probe(check) runs one check and returns (ok, weight): weight is None, or
for MISC_CHECK with misc_dynamic the weight the exit status asks for (-1:
the configured one). Each waits at most connect_timeout per step (connect,
each read), as keepalived's do:

* TCP_CHECK: a TCP connection to connect_ip:connect_port (the real server
  by default) completes;
* HTTP_GET / SSL_GET: for every url, `GET path HTTP/1.0` (Host: virtualhost,
  else the address) and the whole answer: its status is one of status_code
  (2xx if none), and the MD5 of its body one of the digests if any are given.
  SSL_GET speaks TLS without verifying the certificate, as keepalived does;
* MISC_CHECK: misc_path exits 0 within misc_timeout (delay_loop if unset);
  with misc_dynamic, exit 2-255 is success at weight status - 2, 1 failure;
* UDP_CHECK: the payload is sent; without require_reply, success unless an
  ICMP error (ECONNREFUSED) comes back within connect_timeout; with it, a
  reply of min_reply_length..max_reply_length bytes, starting with the
  required bytes, must come.

schedule() is keepalived's timing (check_tcp.c and the others alike): after
a success, or a failure that exhausts the retries, the state is reported and
the next check is delay_loop later; a failure with retries left waits
delay_before_retry. The first check comes at a random point of the first
delay_loop (keepalived staggers its checkers too), and a failure of the
first check is reported at once.
"""
import asyncio
import hashlib
import random
import re
import socket
import ssl

from . import scripts

MAX_BODY = 1 << 20


async def within(seconds, aw):
    """aw, or TimeoutError after seconds. (asyncio.timeout rather than
    wait_for: Python 3.11's wait_for loses a cancellation that comes as the
    awaited operation completes, and the daemon's stop would wait for ever.)"""
    async with asyncio.timeout(seconds):
        return await aw


def _sock(c, kind=socket.SOCK_STREAM):
    v6 = ":" in c.addr      # (the checked address: an IPv6 real server's, or connect_ip)
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, kind)
    s.setblocking(False)
    if c.bindto or c.bind_port:
        s.bind((c.bindto or ("::" if v6 else "0.0.0.0"), c.bind_port))
    return s


async def tcp(c):
    loop = asyncio.get_running_loop()
    with _sock(c) as s:
        await within(c.connect_timeout, loop.sock_connect(s, (c.addr, c.port)))
    return True, None


_TLS = ssl.create_default_context()
_TLS.check_hostname = False
_TLS.verify_mode = ssl.CERT_NONE


async def _get(c, url):
    """(status, body) of one GET."""
    loop = asyncio.get_running_loop()
    s = _sock(c)
    try:
        await within(c.connect_timeout, loop.sock_connect(s, (c.addr, c.port)))
    except BaseException:
        s.close()
        raise
    host = url.virtualhost or c.virtualhost
    tls = _TLS if c.kind == "SSL_GET" else None
    r, w = await within(c.connect_timeout, asyncio.open_connection(
        sock=s, ssl=tls, server_hostname=host if tls else None))
    try:
        hdr = host or (c.addr if c.port in (80, 443) else f"{c.addr}:{c.port}")
        w.write(f"GET {url.path} HTTP/1.0\r\nUser-Agent: KeepAliveClient\r\n"
                f"Host: {hdr}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while len(data) <= MAX_BODY:
            chunk = await within(c.connect_timeout, r.read(65536))
            if not chunk:
                break
            data += chunk
    finally:
        w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/\d\.\d (\d{3})", head)
    return (int(m[1]) if m else None), body


async def http(c):
    for url in c.urls:
        status, body = await _get(c, url)
        codes = url.status_codes or ((200, 299),)
        if status is None or not any(lo <= status <= hi for lo, hi in codes):
            return False, None
        if url.digests and hashlib.md5(body).hexdigest() not in url.digests:
            return False, None
    return True, None


async def misc(c):
    code = await scripts.run(c.script, c.misc_timeout or c.delay_loop)
    if code == 0:
        return True, (-1 if c.misc_dynamic else None)
    if c.misc_dynamic and code is not None and 2 <= code <= 255:
        return True, code - 2
    return False, None


async def udp(c):
    loop = asyncio.get_running_loop()
    with _sock(c, socket.SOCK_DGRAM) as s:
        await loop.sock_connect(s, (c.addr, c.port))
        await loop.sock_sendall(s, c.payload)
        try:
            reply = await within(c.connect_timeout, loop.sock_recv(s, 65536))
        except TimeoutError:
            return c.require_reply is None, None
    if c.require_reply is None:
        return True, None
    ok = c.min_reply_length <= len(reply) <= c.max_reply_length and \
        reply.startswith(c.require_reply)
    return ok, None


PROBES = {"TCP_CHECK": tcp, "HTTP_GET": http, "SSL_GET": http, "MISC_CHECK": misc,
          "UDP_CHECK": udp}


async def probe(c):
    """One check: (ok, weight); any error or timeout is a failure."""
    try:
        return await PROBES[c.kind](c)
    except (OSError, TimeoutError, ssl.SSLError, EOFError):
        return False, None


async def schedule(c, report, up=None, first_delay=None):
    """Check c for ever, calling report(ok, weight, final) after each check:
    final when keepalived would act on it. up: the state it starts in (a
    reload keeps it), else up unless alpha."""
    retry_it, is_up, has_run = c.retry, (not c.alpha) if up is None else up, False
    await asyncio.sleep(random.uniform(0, c.delay_loop) if first_delay is None
                        else first_delay)
    while True:
        ok, weight = await probe(c)
        if ok or ((is_up or not has_run) and retry_it >= c.retry):
            retry_it, is_up, has_run = 0, ok, True
            report(ok, weight, True)
            await asyncio.sleep(c.delay_loop)
        else:
            retry_it += 1
            report(ok, weight, False)
            await asyncio.sleep(c.delay_before_retry)
