"""IPv6's shapes for the frame generator (frames.py): extension-header chains
before TCP/UDP, of the kinds the data path walks (hop-by-hop, routing,
destination options: at most four) and of those it must not (ESP, AH and
other kinds, a fifth walked one, a fragment header among them), datagrams
cut into fragments (a fragment header after the unfragmentable part), and
mutations of IPv6's own fields (version, payload length, next header, an
extension header's length). Pure functions of a seeded random.Random."""
import struct

from .wire import (EXT_MAX, EXT_WALKED, NH_FRAGMENT, NH_HOP, NH_ROUTING, ext_header, ipv6,
                   ipv6_next)

# Next headers parse_pkt6 must not walk, by the name a frame kind counts.
NOT_WALKED = {"fragment": 44, "esp": 50, "ah": 51, "no-next-header": 59, "mobility": 135,
              "experimental": 253}


def _options(rng, n):
    """n bytes of options: PadN, or junk (the receiver judges options)."""
    if rng.random() < 0.7:
        return bytes((1, n - 2)) + b"\0" * (n - 2) if n >= 2 else b"\0" * n
    return rng.randbytes(n)


def _header(rng, kind, nh, inner):
    """Extension header kind (a next-header value) in front of inner, its
    next header nh."""
    if kind == NH_ROUTING:      # type, segments left, reserved, addresses
        n = rng.randint(0, 3)
        return bytes((nh, 2 * n, rng.choice((0, 2, 3, 4)), rng.randint(0, n))) + \
            b"\0" * 4 + rng.randbytes(16 * n) + inner
    if kind in EXT_WALKED:      # hop-by-hop, destination options
        ln = rng.choice((0, 0, 1, rng.randint(0, 4)))
        return ext_header(nh, ln, _options(rng, 6 + 8 * ln)) + inner
    if kind == 44:              # first, later, atomic
        frag = rng.choice((1, 0, rng.randint(1, 0x1FFF) << 3 | rng.randint(0, 1)))
        return struct.pack("!BBHI", nh, 0, frag, rng.getrandbits(32)) + inner
    if kind == 50:              # SPI, sequence number, then "ciphertext"
        return rng.randbytes(8) + inner
    if kind == 51:              # 24 bytes: payload length 24 / 4 - 2
        return struct.pack("!BBH", nh, 4, 0) + rng.randbytes(20) + inner
    if kind == 59:              # nothing follows; the bytes are ignored
        return inner
    ln = rng.randint(0, 2)
    return bytes((nh, ln)) + rng.randbytes(6 + 8 * ln) + inner


def ext_chain(rng, last, inner):
    """(IPv6 header's next header, extension headers + inner, kind of chain
    or None): mostly none; walked ones (1 to EXT_MAX, ours), more than
    EXT_MAX walked, or one of NOT_WALKED among walked ones (not ours). last:
    inner's own next-header value."""
    r = rng.random()
    if r < 0.55:
        return last, inner, None
    if r < 0.8:
        kinds, name = [rng.choice(EXT_WALKED) for _ in range(rng.randint(1, EXT_MAX))], \
            "ext-walked"
    elif r < 0.86:
        kinds = [rng.choice(EXT_WALKED) for _ in range(rng.randint(EXT_MAX + 1, EXT_MAX + 3))]
        name = "ext-more-than-four"
    else:
        bad = rng.choice(sorted(NOT_WALKED))
        kinds = [rng.choice(EXT_WALKED) for _ in range(rng.randint(0, 2))] + [NOT_WALKED[bad]]
        kinds += [rng.choice(EXT_WALKED) for _ in range(rng.randint(0, 1))]
        name = f"ext-{bad}"
    nh, body = last, inner
    for kind in reversed(kinds):
        body, nh = _header(rng, kind, nh, body), kind
    return nh, body, name


def fragments(rng, src, dst, proto, seg, ident, l2):
    """seg (a TCP or UDP segment) cut as its sender's stack cuts it: frames
    (l2 + IPv6, now and then walked extension headers (the unfragmentable
    part, in every fragment), a fragment header (ident), data of multiples
    of 8 bytes but the last)."""
    exts, nh = b"", NH_FRAGMENT
    if rng.random() < 0.2:
        for kind in [rng.choice(EXT_WALKED) for _ in range(rng.randint(1, EXT_MAX))]:
            exts, nh = _header(rng, kind, nh, exts), kind
    frames, off = [], 0
    while off < len(seg):
        n = min(len(seg) - off, 8 * rng.choice((1, 2, 3, rng.randint(1, 150))))
        fh = struct.pack("!BBHI", proto, 0, off | (off + n < len(seg)), ident)
        frames.append(bytearray(l2 + ipv6(src, dst, nh, seg[off:off + n], exts + fh)))
        off += n
    return frames


def overlap(rng, f):
    """A later IPv6 fragment f moved 8 or 16 bytes into its datagram, over
    its first fragment's TCP (UDP) header; False if f is not one."""
    h = ipv6_next(f)
    if h is None or h[4] is None or not h[4][0]:
        return False
    at = h[3] - 6      # the fragment header's offset field
    f[at:at + 2] = (rng.choice((8, 16)) | h[4][1]).to_bytes(2, "big")
    return True


def payload_length_wrong(rng, f, l3):
    """Set f's IPv6 payload length to a wrong value: 0 (a jumbogram's),
    one off, past the frame, short of the headers, any."""
    n = len(f)
    plen = f[l3 + 4] << 8 | f[l3 + 5]
    v = rng.choice((0, plen - 1, plen + 1, plen - 8, plen + 8, n - l3 - 40 + 1, 1, 7, 8, 20,
                    0xFFFF, rng.randrange(0x10000)))
    f[l3 + 4:l3 + 6] = (v & 0xFFFF).to_bytes(2, "big")


def mutate6_field(rng, f, l3, op):
    """One of IPv6's own fields mutated (op: 0-4); False when f is too short
    for it."""
    n = len(f)
    if n < l3 + 40:
        return False
    if op == 0:     # version, traffic class
        f[l3] = rng.randrange(16) << 4 | (f[l3] & 15)
    elif op == 1:
        payload_length_wrong(rng, f, l3)
    elif op == 2:   # next header
        f[l3 + 6] = rng.choice((6, 17, 58, NH_HOP, NH_ROUTING, 60, 44, 50, 51, 59, 135, 255,
                                rng.randrange(256)))
    elif op == 3:   # the first extension header's length, or its next header
        if n < l3 + 42 or f[l3 + 6] not in EXT_WALKED:
            return False
        f[l3 + 40 + rng.randint(0, 1)] = rng.choice((0, 1, 2, 0xFF, 6, 17, 60, 44,
                                                     rng.randrange(256)))
    else:           # TCP's data offset, UDP's length
        h = ipv6_next(f)
        if h is None or h[2] not in (6, 17) or h[4] or n < h[3] + 14:
            return False
        l4 = h[3]
        if h[2] == 17:
            f[l4 + 4:l4 + 6] = rng.choice((0, 7, 8, 9, 0xFFFF, rng.randrange(0x10000))
                                          ).to_bytes(2, "big")
        else:
            f[l4 + 12] = rng.randrange(16) << 4 | (f[l4 + 12] & 15)
    return True
