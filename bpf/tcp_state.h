/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tcp_state.h - IPVS's TCP state machine (ip_vs_proto_tcp.c: tcp_states[],
 * tcp_timeouts[], the states counted as active). No maps: the layout test
 * (tests/test_structs.py) compiles it with the host compiler and checks the
 * control plane's copies of these tables (xdplb/model.py) against it.
 */
#ifndef XDPLB_TCP_STATE_H
#define XDPLB_TCP_STATE_H

#include "xdplb.h"

/* TCP header flag bits (byte 13): the state machine's input. */
#define XDPLB_TCP_FIN		0x01
#define XDPLB_TCP_SYN		0x02
#define XDPLB_TCP_RST		0x04
#define XDPLB_TCP_ACK		0x10

/* One row of tcp_states[] packed as 11 nibbles, indexed by the old state,
 * so a transition is a shift and a mask: no table in memory, no loop. */
#define TCP_ROW(no, es, ss, sr, fw, tw, cl, cw, la, li, sa)			\
	((__u64)(no) | (__u64)(es) << 4 | (__u64)(ss) << 8 | (__u64)(sr) << 12 |	\
	 (__u64)(fw) << 16 | (__u64)(tw) << 20 | (__u64)(cl) << 24 |		\
	 (__u64)(cw) << 28 | (__u64)(la) << 32 | (__u64)(li) << 36 |		\
	 (__u64)(sa) << 40)

#define sNO IP_VS_TCP_S_NONE
#define sES IP_VS_TCP_S_ESTABLISHED
#define sSS IP_VS_TCP_S_SYN_SENT
#define sSR IP_VS_TCP_S_SYN_RECV
#define sFW IP_VS_TCP_S_FIN_WAIT
#define sTW IP_VS_TCP_S_TIME_WAIT
#define sCL IP_VS_TCP_S_CLOSE
#define sCW IP_VS_TCP_S_CLOSE_WAIT
#define sLA IP_VS_TCP_S_LAST_ACK
#define sLI IP_VS_TCP_S_LISTEN
#define sSA IP_VS_TCP_S_SYNACK

enum tcp_dir {
	TCP_DIR_INPUT = 0,	/* client -> director */
	TCP_DIR_OUTPUT,		/* real server -> client (Masq only) */
	TCP_DIR_INPUT_ONLY,	/* Route/Tunnel: replies bypass the director */
};

enum tcp_event { TCP_EV_SYN = 0, TCP_EV_FIN, TCP_EV_ACK, TCP_EV_RST };

/*             sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA */
#define IN_SYN TCP_ROW(sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR)
#define IN_FIN TCP_ROW(sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sTW)
#define IN_ACK TCP_ROW(sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES)
#define IN_RST TCP_ROW(sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sSR)

#define OUT_SYN TCP_ROW(sSS, sES, sSS, sSR, sSS, sSS, sSS, sSS, sSS, sLI, sSR)
#define OUT_FIN TCP_ROW(sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW)
#define OUT_ACK TCP_ROW(sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES)
#define OUT_RST TCP_ROW(sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL)

#define IO_SYN TCP_ROW(sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR)
#define IO_FIN TCP_ROW(sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW)
#define IO_ACK TCP_ROW(sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES)
#define IO_RST TCP_ROW(sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL)

/* A switch, not a const array: bcc cannot load programs with .rodata. */
static __always_inline __u64 tcp_row(int dir, int ev)
{
	switch (dir * 4 + ev) {
	case TCP_DIR_INPUT * 4 + TCP_EV_SYN:		return IN_SYN;
	case TCP_DIR_INPUT * 4 + TCP_EV_FIN:		return IN_FIN;
	case TCP_DIR_INPUT * 4 + TCP_EV_ACK:		return IN_ACK;
	case TCP_DIR_INPUT * 4 + TCP_EV_RST:		return IN_RST;
	case TCP_DIR_OUTPUT * 4 + TCP_EV_SYN:		return OUT_SYN;
	case TCP_DIR_OUTPUT * 4 + TCP_EV_FIN:		return OUT_FIN;
	case TCP_DIR_OUTPUT * 4 + TCP_EV_ACK:		return OUT_ACK;
	case TCP_DIR_OUTPUT * 4 + TCP_EV_RST:		return OUT_RST;
	case TCP_DIR_INPUT_ONLY * 4 + TCP_EV_SYN:	return IO_SYN;
	case TCP_DIR_INPUT_ONLY * 4 + TCP_EV_FIN:	return IO_FIN;
	case TCP_DIR_INPUT_ONLY * 4 + TCP_EV_ACK:	return IO_ACK;
	default:					return IO_RST;
	}
}

/* tcp_state_idx(): RST beats SYN beats FIN beats ACK; a segment with none of
 * them leaves set_tcp_state()'s initial IP_VS_TCP_S_CLOSE. */
static __always_inline __u8 tcp_next_state(int dir, __u8 flags, __u8 old)
{
	int ev;

	if (flags & XDPLB_TCP_RST)
		ev = TCP_EV_RST;
	else if (flags & XDPLB_TCP_SYN)
		ev = TCP_EV_SYN;
	else if (flags & XDPLB_TCP_FIN)
		ev = TCP_EV_FIN;
	else if (flags & XDPLB_TCP_ACK)
		ev = TCP_EV_ACK;
	else
		return IP_VS_TCP_S_CLOSE;
	if (old >= IP_VS_TCP_S_LAST)
		old = IP_VS_TCP_S_NONE;
	return (tcp_row(dir, ev) >> (old * 4)) & 0xf;
}

/* Which table a packet of a connection uses (IP_VS_CONN_F_NOOUTPUT). */
static __always_inline int tcp_dir_in(__u8 fwd)
{
	return fwd == IP_VS_CONN_F_MASQ || fwd == XDPLB_CONN_F_FULLNAT ? TCP_DIR_INPUT
									: TCP_DIR_INPUT_ONLY;
}

/* IPVS's default timeouts (tcp_timeouts[], udp_timeouts[]), seconds, for a
 * timeouts map slot left at 0. A switch: bcc cannot load .rodata. */
static __always_inline __u32 default_timeout(__u32 idx)
{
	switch (idx) {
	case IP_VS_TCP_S_NONE:		return 2;
	case IP_VS_TCP_S_ESTABLISHED:	return 900;
	case IP_VS_TCP_S_SYN_SENT:	return 120;
	case IP_VS_TCP_S_SYN_RECV:	return 60;
	case IP_VS_TCP_S_FIN_WAIT:	return 120;
	case IP_VS_TCP_S_TIME_WAIT:	return 120;
	case IP_VS_TCP_S_CLOSE:		return 10;
	case IP_VS_TCP_S_CLOSE_WAIT:	return 60;
	case IP_VS_TCP_S_LAST_ACK:	return 30;
	case XDPLB_TMO_UDP:		return 300;
	default:			return 120;	/* LISTEN, SYNACK */
	}
}

/* tcp_state_active_table: ESTABLISHED, SYN_SENT, SYN_RECV, SYNACK. */
static __always_inline int tcp_state_active(__u8 st)
{
	return st == IP_VS_TCP_S_ESTABLISHED || st == IP_VS_TCP_S_SYN_SENT ||
	       st == IP_VS_TCP_S_SYN_RECV || st == IP_VS_TCP_S_SYNACK;
}

#endif /* XDPLB_TCP_STATE_H */
