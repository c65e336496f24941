/* SPDX-License-Identifier: GPL-2.0 */
/*
 * conn.h - the connection table: entries, their keys and timeouts, and the
 * two maps that hold them (conns, conns_assured: see xdplb.h): lookup (of
 * a client's packet, and through rs_table of a real server's reply), the
 * move between them, expiry, and the settings that end or make connections
 * (conn_reuse_mode, expire_nodest_conn, sloppy_tcp).
 */
#ifndef XDPLB_CONN_H
#define XDPLB_CONN_H

#include "hash.h"
#include "maps.h"
#include "parse.h"
#include "service.h"
#include "stats.h"
#include "tcp_state.h"

/* An entry's own timeout, seconds (0: never set by the data path: the
 * sweep applies the state's default). */
static __always_inline __u32 conn_get_timeout(const struct conn *c)
{
	return (__u32)c->timeout_hi << 16 | c->timeout_lo;
}

static __always_inline void conn_set_timeout(struct conn *c, __u32 t)
{
	if (t > 0xffffff)
		t = 0xffffff;
	c->timeout_lo = (__u16)t;
	c->timeout_hi = (__u8)(t >> 16);
}

/* Has an entry been idle longer than its timeout? */
static __always_inline int conn_expired(const struct conn *c, __u64 now)
{
	__u32 t = conn_get_timeout(c);

	return t && (__s64)(now - c->last_seen) > (__s64)((__u64)t * 1000000000ULL);
}

/* The timeout of timeouts map slot idx: set with --set, else IPVS's default. */
static __always_inline __u32 timeout_of(__u32 idx)
{
	__u32 *t = timeouts.lookup(&idx);

	if (t && *t)
		return *t;
	return default_timeout(idx);
}

static __always_inline __u32 conn_timeout(__u8 proto, __u8 state)
{
	return timeout_of(proto == IPPROTO_UDP ? XDPLB_TMO_UDP : state);
}

/* The entry of k: assured first (where established traffic finds it), then
 * the LRU. *assured says which table holds it. */
static __always_inline struct conn *conn_lookup(struct conn_key *k, int *assured)
{
	struct conn *c = conns_assured.lookup(k);

	*assured = c != NULL;
	return c ? c : conns.lookup(k);
}

/* Could addr be a masquerading real server's? (rs_filter, xdplb.h) */
static __always_inline int rs_maybe(__be32 addr)
{
	__u32 bit = rs_filter_bit(bpf_ntohl(addr)), word = bit >> 6;
	__u64 *w = rs_filter.lookup(&word);

	return w && (*w >> (bit & 63)) & 1;
}

/* The connection of a reply (real server -> client): the client's tuple to
 * each service rs_table lists for the real server's addr:port (then for a
 * port-zero destination, under port 0), until one names a Masq connection
 * to exactly this real server. *ik: the entry's key. */
static __always_inline struct conn *conn_reply_lookup(const struct pkt *p, struct conn_key *ik,
						      int *assured)
{
	struct rs_key rk = {};
	struct rs_svcs *rs;
	struct conn *c;
	int i, j;

	rk.addr = p->key.saddr;
	rk.proto = p->key.proto;
	ik->saddr = p->key.daddr;
	ik->sport = p->key.dport;
	ik->proto = p->key.proto;
	for (j = 0; j < 2; j++) {
		rk.port = j ? 0 : p->key.sport;
		rs = rs_table.lookup(&rk);
		if (!rs)
			continue;
		for (i = 0; i < XDPLB_RS_SVC_MAX; i++) {
			if (i >= rs->n)
				break;
			ik->daddr = rs->svc[i].addr;
			ik->dport = rs->svc[i].port ? rs->svc[i].port : p->key.sport;
			c = conn_lookup(ik, assured);
			if (c && c->dir == XDPLB_DIR_IN && c->fwd == IP_VS_CONN_F_MASQ &&
			    c->addr == p->key.saddr && c->port == p->key.sport)
				return c;
		}
	}
	return NULL;
}

/* Move the entry c of k to the other table: copied in first, then deleted,
 * so a concurrent lookup finds one or the other. Non-zero: the insert
 * failed and the entry stays where it was. */
static __always_inline int conn_move(struct conn_key *k, struct conn *c, int to_assured)
{
	struct conn copy = *c;

	if (to_assured) {
		if (conns_assured.update(k, &copy))
			return -1;
		conns.delete(k);
	} else {
		if (conns.update(k, &copy))
			return -1;
		conns_assured.delete(k);
	}
	return 0;
}

/* Should a connection change table, at this packet from its client?
 * TCP is assured when ESTABLISHED and goes back to the LRU once it has
 * closed (its TIME_WAIT / CLOSE entry only catches stragglers); UDP is
 * assured once it outlives a last_seen grain. A failed move is retried at
 * the next state change or refresh, not on every packet. */
static __always_inline int conn_wants_move(const struct pkt *p, const struct conn *c,
					   int assured, int changed, int refreshed)
{
	if (p->key.proto != IPPROTO_TCP)
		return !assured && refreshed;
	if (assured)
		return c->state == IP_VS_TCP_S_TIME_WAIT || c->state == IP_VS_TCP_S_CLOSE;
	return (changed || refreshed) && c->state == IP_VS_TCP_S_ESTABLISHED;
}

/* Move the connection of p (entry c) to the other table. Returns the
 * entry in its new table, or NULL if it could not move (it is still c). */
static __always_inline struct conn *conn_set_assured(struct pkt *p, struct conn *c,
						     int to_assured)
{
	if (conn_move(&p->key, c, to_assured)) {
		if (to_assured)
			count(XDPLB_CNT_ASSURE_FULL);
		return NULL;
	}
	return to_assured ? conns_assured.lookup(&p->key) : conns.lookup(&p->key);
}

/* An IN entry idle past its timeout: the kernel's timer would have removed
 * it. Uncount it (once: the first CPU to flag it does) and delete it; the
 * packet is then handled as if there were none. */
static __always_inline void conn_expire(struct pkt *p, struct conn *c, int assured)
{
	__u32 slot = c->dest_slot;
	struct dest *d;

	if (!__sync_lock_test_and_set(&c->last_seen, 0))
		return;		/* another CPU expired it */
	d = dest_of_conn(c);
	if (d)
		dest_unbind(slot, d, conn_kind(p->key.proto, c->state));
	if (assured)
		conns_assured.delete(&p->key);
	else
		conns.delete(&p->key);
}

/* One of IPVS's settings: sysctl[idx] (xdplb.h). */
static __always_inline int vs_sysctl(__u32 idx)
{
	__u32 *v = sysctl.lookup(&idx);

	return v && *v;
}

/* conn_reuse_mode on: a new SYN on a TIME_WAIT or CLOSE entry ends it and
 * is scheduled as a new connection. */
static __always_inline int conn_reuse(const struct pkt *p, const struct conn *c)
{
	if ((p->tcp_flags & (XDPLB_TCP_SYN | XDPLB_TCP_ACK | XDPLB_TCP_RST)) != XDPLB_TCP_SYN ||
	    p->key.proto != IPPROTO_TCP ||
	    (c->state != IP_VS_TCP_S_TIME_WAIT && c->state != IP_VS_TCP_S_CLOSE))
		return 0;
	return vs_sysctl(XDPLB_SYSCTL_CONN_REUSE_MODE);
}

/* expire_nodest_conn on: the connection's destination is gone (d NULL), so
 * the packet ends it and is handled as untracked. */
static __always_inline int conn_nodest_expires(const struct dest *d)
{
	return !d && vs_sysctl(XDPLB_SYSCTL_EXPIRE_NODEST_CONN);
}

/* Does IPVS schedule this packet of an untracked flow? TCP: a SYN
 * (ip_vs_tcp's conn_schedule), or with sloppy_tcp anything but a RST. */
static __always_inline int conn_schedules(const struct pkt *p)
{
	__u8 f = p->tcp_flags & (XDPLB_TCP_SYN | XDPLB_TCP_ACK | XDPLB_TCP_RST);

	if (p->key.proto != IPPROTO_TCP || f == XDPLB_TCP_SYN)
		return 1;
	return !(f & XDPLB_TCP_RST) && vs_sysctl(XDPLB_SYSCTL_SLOPPY_TCP);
}

#endif /* XDPLB_CONN_H */
