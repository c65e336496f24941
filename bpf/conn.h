/* SPDX-License-Identifier: GPL-2.0 */
/*
 * conn.h - the connection table: entries, their keys and timeouts, and the
 * two maps that hold them (conns, conns_assured; IPv6's conns6,
 * conns6_assured: see xdplb.h; af, a constant, says which): lookup (of
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

/* A connection's key, of either family. */
union conn_key_any {
	struct conn_key v4;
	struct conn_key6 v6;
};

/* p's key in its family's tables. */
static __always_inline void *pkt_conn_key(struct pkt *p, const int af)
{
	return af == XDPLB_AF_INET6 ? (void *)&p->key6 : (void *)&p->key;
}

/* The real server's address of entry c: one word for IPv4, four for IPv6
 * (a conn6's, which starts with the conn). */
static __always_inline const __be32 *conn_raddr(const struct conn *c, const int af)
{
	return af == XDPLB_AF_INET6 ? ((const struct conn6 *)c)->addr6 : &c->addr;
}

/* The table operations of one family (af) and table (assured). */
static __always_inline struct conn *conn_table_get(void *k, const int af, const int assured)
{
	if (af == XDPLB_AF_INET6)
		return assured ? (struct conn *)conns6_assured.lookup(k)
			       : (struct conn *)conns6.lookup(k);
	return assured ? conns_assured.lookup(k) : conns.lookup(k);
}

/* v: a struct conn6 for IPv6, a struct conn (or a conn6, its first part)
 * for IPv4. */
static __always_inline int conn_table_put(void *k, void *v, const int af, const int assured)
{
	if (af == XDPLB_AF_INET6)
		return assured ? conns6_assured.update(k, v) : conns6.update(k, v);
	return assured ? conns_assured.update(k, v) : conns.update(k, v);
}

static __always_inline void conn_table_del(void *k, const int af, const int assured)
{
	if (af == XDPLB_AF_INET6) {
		if (assured)
			conns6_assured.delete(k);
		else
			conns6.delete(k);
	} else if (assured) {
		conns_assured.delete(k);
	} else {
		conns.delete(k);
	}
}

/* The entry of k: assured first (where established traffic finds it), then
 * the LRU. *assured says which table holds it. */
static __always_inline struct conn *conn_lookup(void *k, int *assured, const int af)
{
	struct conn *c = conn_table_get(k, af, 1);

	*assured = c != NULL;
	return c ? c : conn_table_get(k, af, 0);
}

/* Could addr be a masquerading real server's? (rs_filter, xdplb.h) */
static __always_inline int rs_maybe(__be32 addr)
{
	__u32 bit = rs_filter_bit(bpf_ntohl(addr)), word = bit >> 6;
	__u64 *w = rs_filter.lookup(&word);

	return w && (*w >> (bit & 63)) & 1;
}

/* Is c the Masq connection of reply p, from exactly its real server? (A
 * source-NATed one's replies go to its local address: fnat_out.) */
static __always_inline int conn_is_reply_of(const struct conn *c, const struct pkt *p,
					    const int af)
{
	if (!c || c->dir != XDPLB_DIR_IN || c->fwd != IP_VS_CONN_F_MASQ ||
	    c->port != p->key.sport || c->lport)
		return 0;
	if (af == XDPLB_AF_INET6)
		return addr6_eq(((const struct conn6 *)c)->addr6, p->key6.saddr);
	return c->addr == p->key.saddr;
}

/* The local address a source-NATed entry c was lent (one word, or four:
 * a conn6's). */
static __always_inline const __be32 *conn_laddr(const struct conn *c, const int af)
{
	return af == XDPLB_AF_INET6 ? ((const struct conn6 *)c)->laddr6 : &c->laddr;
}

/* The reply tuple a source-NATed connection c (protocol proto) was lent:
 * its fnat_out (fnat_out6) key. */
static __always_inline void fnat_key(const struct conn *c, __u8 proto, union conn_key_any *mk,
				     const int af)
{
	if (af == XDPLB_AF_INET6) {
		__builtin_memcpy(mk->v6.saddr, ((const struct conn6 *)c)->addr6, 16);
		__builtin_memcpy(mk->v6.daddr, ((const struct conn6 *)c)->laddr6, 16);
		mk->v6.sport = c->port;
		mk->v6.dport = c->lport;
		mk->v6.proto = proto;
		return;
	}
	mk->v4.saddr = c->addr;
	mk->v4.daddr = c->laddr;
	mk->v4.sport = c->port;
	mk->v4.dport = c->lport;
	mk->v4.proto = proto;
}

/* The connection of a reply to a local address (real server -> laddr:lport)
 * through fnat_out (fnat_out6), if the entry it names was lent exactly
 * this tuple (a mapping left by an evicted entry, or by an entry since
 * replaced, leads nowhere). *ik: the entry's key. */
static __always_inline struct conn *fnat_reply_lookup(const struct pkt *p,
						      union conn_key_any *ik, int *assured,
						      const int af)
{
	struct conn *c;
	void *k;

	if (af == XDPLB_AF_INET6) {
		k = fnat_out6.lookup((void *)&p->key6);
		if (!k)
			return NULL;
		__builtin_memcpy(&ik->v6, k, sizeof(ik->v6));
	} else {
		k = fnat_out.lookup((void *)&p->key);
		if (!k)
			return NULL;
		__builtin_memcpy(&ik->v4, k, sizeof(ik->v4));
	}
	c = conn_lookup(ik, assured, af);
	if (!c || c->dir != XDPLB_DIR_IN || !c->lport || c->lport != p->key.dport ||
	    c->port != p->key.sport)
		return NULL;
	if (af == XDPLB_AF_INET6)
		return addr6_eq(((const struct conn6 *)c)->addr6, p->key6.saddr) &&
		       addr6_eq(((const struct conn6 *)c)->laddr6, p->key6.daddr) ? c : NULL;
	return c->addr == p->key.saddr && c->laddr == p->key.daddr ? c : NULL;
}

/* The connection of a reply (real server -> client): a source-NATed one's
 * through fnat_out, else the client's tuple to each service rs_table lists
 * for the real server's addr:port (then for a port-zero destination, under
 * port 0), until one names a Masq connection to exactly this real server.
 * *ik: the entry's key. */
static __always_inline struct conn *conn_reply_lookup4(const struct pkt *p, struct conn_key *ik,
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
			c = conn_lookup(ik, assured, XDPLB_AF_INET);
			if (conn_is_reply_of(c, p, XDPLB_AF_INET))
				return c;
		}
	}
	return NULL;
}

/* The same through rs_table6, for IPv6 (the key types differ). */
static __always_inline struct conn *conn_reply_lookup6(const struct pkt *p, struct conn_key6 *ik,
						       int *assured)
{
	struct rs_key6 rk = {};
	struct rs_svcs6 *rs;
	struct conn *c;
	int i, j;

	__builtin_memcpy(rk.addr, p->key6.saddr, 16);
	rk.proto = p->key.proto;
	__builtin_memcpy(ik->saddr, p->key6.daddr, 16);
	ik->sport = p->key.dport;
	ik->proto = p->key.proto;
	for (j = 0; j < 2; j++) {
		rk.port = j ? 0 : p->key.sport;
		rs = rs_table6.lookup(&rk);
		if (!rs)
			continue;
		for (i = 0; i < XDPLB_RS_SVC_MAX; i++) {
			if (i >= rs->n)
				break;
			__builtin_memcpy(ik->daddr, rs->svc[i].addr, 16);
			ik->dport = rs->svc[i].port ? rs->svc[i].port : p->key.sport;
			c = conn_lookup(ik, assured, XDPLB_AF_INET6);
			if (conn_is_reply_of(c, p, XDPLB_AF_INET6))
				return c;
		}
	}
	return NULL;
}

static __always_inline struct conn *conn_reply_lookup(const struct pkt *p,
						      union conn_key_any *ik, int *assured,
						      const int af)
{
	struct conn *c = fnat_reply_lookup(p, ik, assured, af);

	if (c)
		return c;
	if (af == XDPLB_AF_INET6)
		return conn_reply_lookup6(p, &ik->v6, assured);
	return conn_reply_lookup4(p, &ik->v4, assured);
}

/* Move the entry c of k to the other table: copied in first, then deleted,
 * so a concurrent lookup finds one or the other. Non-zero: the insert
 * failed and the entry stays where it was. */
static __always_inline int conn_move(void *k, struct conn *c, int to_assured, const int af)
{
	struct conn6 copy;

	if (af == XDPLB_AF_INET6)
		copy = *(struct conn6 *)c;
	else
		copy.c = *c;
	if (conn_table_put(k, &copy, af, to_assured))
		return -1;
	conn_table_del(k, af, !to_assured);
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
						     int to_assured, const int af)
{
	void *k = pkt_conn_key(p, af);

	if (conn_move(k, c, to_assured, af)) {
		if (to_assured)
			count(XDPLB_CNT_ASSURE_FULL);
		return NULL;
	}
	return conn_table_get(k, af, to_assured);
}

/* Give back the reply tuple mk (fnat_key) a source-NATed connection was
 * lent (none when its port is 0): read before its entry is deleted (a
 * deleted element of a preallocated map may be reused at once by another
 * CPU). */
static __always_inline void fnat_forget(union conn_key_any *mk, const int af)
{
	if (af == XDPLB_AF_INET6) {
		if (mk->v6.dport)
			fnat_out6.delete(&mk->v6);
	} else if (mk->v4.dport) {
		fnat_out.delete(&mk->v4);
	}
}

/* An IN entry idle past its timeout: the kernel's timer would have removed
 * it. Uncount it (once: the first CPU to flag it does) and delete it; the
 * packet is then handled as if there were none. */
static __always_inline void conn_expire(struct pkt *p, struct conn *c, int assured, const int af)
{
	union conn_key_any mk = {};
	__u32 slot = c->dest_slot;
	struct dest *d;

	if (!__sync_lock_test_and_set(&c->last_seen, 0))
		return;		/* another CPU expired it */
	d = dest_of_conn(c);
	if (d)
		dest_unbind(slot, d, conn_kind(p->key.proto, c->state));
	if (c->lport)
		fnat_key(c, p->key.proto, &mk, af);
	conn_table_del(pkt_conn_key(p, af), af, assured);
	fnat_forget(&mk, af);
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
