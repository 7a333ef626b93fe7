package datapath_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/internal/packet"
	"github.com/tenantnet/tenantnet/policy"
)

// The 6in4 decapsulation in tn_uplink (bpf/lib/decap6in4.h), one node
// playing both ends: it is the exit of tenant C's member M (M's /64
// 2001:db8:c::/64 behind the tunnel 192.0.2.1 <- 198.51.100.10) and of
// another member N (2001:db8:e::/64 behind 192.0.2.1 <- 198.51.100.20),
// and, as an ipv4-only member itself, holds tenant A's /64
// 2001:db8:a::/64 (standardEnv's) from its exit 203.0.113.1 at its
// address 192.0.2.9.
var (
	exitLocal   = netip.MustParseAddr("192.0.2.1")
	exitLocal2  = netip.MustParseAddr("192.0.2.2") // the exit's second endpoint: M's other /64
	memberM     = netip.MustParseAddr("198.51.100.10")
	memberN     = netip.MustParseAddr("198.51.100.20")
	memberLocal = netip.MustParseAddr("192.0.2.9")
	theExit     = netip.MustParseAddr("203.0.113.1")
	stranger4   = netip.MustParseAddr("198.51.100.66")
	mHost       = netip.MustParseAddr("2001:db8:c::42")
	nHost       = netip.MustParseAddr("2001:db8:e::42")
	inet6       = netip.MustParseAddr("2600:1f18::80")
)

const tenantC = 3

func decapEnv(t *testing.T) *env {
	e := standardEnv(t)
	e.tenantPrefix("2001:db8:c::/64", tenantC)
	e.tenantPrefix("2001:db8:e::/64", tenantC)
	tun := []bpfmaps.Tunnel6in4{
		{Prefix: netip.MustParsePrefix("2001:db8:c::/64"), Tenant: tenantC, Remote: memberM, Local: exitLocal, Ifindex: uplink, MTU: 1480},
		{Prefix: netip.MustParsePrefix("2001:db8:e::/64"), Tenant: tenantC, Remote: memberN, Local: exitLocal, Ifindex: uplink, MTU: 1480},
		{Prefix: netip.MustParsePrefix("2001:db8:a::/64"), Tenant: tenantA, Mine: true, Remote: theExit, Local: memberLocal, Ifindex: uplink, MTU: 1480},
		{Prefix: netip.MustParsePrefix("2001:db8:f::/64"), Tenant: tenantC, Remote: memberM, Local: exitLocal2, Ifindex: uplink, MTU: 1480},
	}
	if _, err := e.maps.SyncTunnels6in4(tun); err != nil {
		t.Fatal(err)
	}
	return e
}

// decapOuter is how a 6in4 frame is wrapped, and how it is corrupted.
type decapOuter struct {
	src, dst  netip.Addr
	tos       uint8
	fragOff   uint16 // 8-byte units
	more      bool
	ihl       uint8  // 0: 5
	version   uint8  // 0: 4
	totDelta  int    // added to the IPv4 total length
	ipPad     int    // bytes after the inner packet inside the IPv4 packet
	framePad  int    // bytes after the IPv4 packet in the frame
	truncate  int    // cut the frame to this many bytes
	innerTC   uint8  // the inner traffic class
	innerVers uint8  // 0: 6
	badSum    uint16 // XORed into the header checksum
}

// wrap6in4 puts the IPv6 packet of a frame (from its IP header on) into
// an IPv4 header with protocol 41 and returns the frame and the inner
// frame a decapsulator should leave (the same MACs, ethertype IPv6).
func wrap6in4(o decapOuter, inner packet.Spec) (frame, want []byte) {
	in := packet.IPv6(inner)
	if o.innerTC != 0 {
		binary.BigEndian.PutUint32(in[0:], 6<<28|uint32(o.innerTC)<<20|binary.BigEndian.Uint32(in[0:])&0xfffff)
	}
	want = append(packet.Build(packet.Spec{Src: inner.Src, Dst: inner.Dst})[:14:14], in...)
	if o.innerVers != 0 {
		in[0] = o.innerVers<<4 | in[0]&0xf
	}
	ip := make([]byte, 20, 20+len(in)+o.ipPad)
	ihl, ver := o.ihl, o.version
	if ihl == 0 {
		ihl = 5
	}
	if ver == 0 {
		ver = 4
	}
	ip[0] = ver<<4 | ihl
	ip[1] = o.tos
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(in)+o.ipPad+o.totDelta))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	fo := o.fragOff & 0x1fff
	if o.more {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(ip[6:], fo)
	ip[8], ip[9] = 64, 41
	copy(ip[12:], o.src.AsSlice())
	copy(ip[16:], o.dst.AsSlice())
	binary.BigEndian.PutUint16(ip[10:], ^ipSum(ip[:20])^o.badSum)
	ip = append(append(ip, in...), make([]byte, o.ipPad)...)
	frame = append(append(append([]byte{}, want[:12]...), 0x08, 0x00), ip...)
	frame = append(frame, make([]byte, o.framePad)...)
	if o.truncate > 0 {
		frame = frame[:o.truncate]
	}
	return frame, want
}

type ckey struct {
	tenant uint32
	dir    policy.Direction
	reason policy.Reason
}

// countersBytes returns every counter's packets and bytes.
func (e *env) countersBytes() (map[ckey]uint64, map[ckey]uint64) {
	e.t.Helper()
	cs, err := e.maps.Counters(0)
	if err != nil {
		e.t.Fatal(err)
	}
	out, by := map[ckey]uint64{}, map[ckey]uint64{}
	for _, c := range cs {
		out[ckey{c.Tenant, c.Dir, c.Reason}] = c.Packets
		by[ckey{c.Tenant, c.Dir, c.Reason}] = c.Bytes
	}
	return out, by
}

// runXDP runs tn_uplink on a frame and returns its return code, the
// frame it left and the counters that moved (by how much: packets, and
// bytes).
func (e *env) runXDP(frame []byte) (uint32, []byte, map[ckey]uint64, map[ckey]uint64, error) {
	before, bytesBefore := e.countersBytes()
	opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
	ret, err := e.dp.Uplink.Run(opts)
	out := opts.DataOut
	if err != nil {
		return 0, nil, nil, nil, fmt.Errorf("test run: %w", err)
	}
	moved, movedBytes := map[ckey]uint64{}, map[ckey]uint64{}
	after, bytesAfter := e.countersBytes()
	for k, n := range after {
		if n != before[k] {
			moved[k] = n - before[k]
			movedBytes[k] = bytesAfter[k] - bytesBefore[k]
		}
	}
	return ret, out, moved, movedBytes, nil
}

// sixin4Case is one frame for tn_uplink and what it must do: the return
// code, the counters that move (each by one, no other), and for a pass
// the frame left (nil: the frame untouched).
type sixin4Case struct {
	name   string
	frame  []byte
	ret    uint32
	counts []ckey
	out    []byte
}

func decapOK(tenant uint32) ckey { return ckey{tenant, policy.Dir6in4, policy.PassDecap} }
func drop6(tenant uint32, r policy.Reason) ckey {
	return ckey{tenant, policy.Dir6in4, r}
}

func runSixin4(t *testing.T, e *env, cases []sixin4Case) {
	t.Helper()
	e.inNS(func() error {
		for _, c := range cases {
			ret, out, moved, movedBytes, err := e.runXDP(c.frame)
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
				continue
			}
			if ret != c.ret {
				t.Errorf("%s: return %d, want %d (counters moved: %v)", c.name, ret, c.ret, moved)
			}
			want := map[ckey]uint64{}
			for _, k := range c.counts {
				want[k]++
			}
			if fmt.Sprint(moved) != fmt.Sprint(want) {
				t.Errorf("%s: counters moved %v, want %v", c.name, moved, want)
			}
			// The tunnel's verdict counts the frame as it came in
			// (its outer header too), taken out of the tunnel or not.
			for k, n := range want {
				if k.dir == policy.Dir6in4 && movedBytes[k] != n*uint64(len(c.frame)) {
					t.Errorf("%s: counter %v +%d bytes, want %d (the frame as it came in)", c.name, k, movedBytes[k], n*uint64(len(c.frame)))
				}
			}
			if c.ret != xdpPass {
				continue
			}
			wantOut := c.out
			if wantOut == nil {
				wantOut = c.frame
			}
			if !bytes.Equal(out, wantOut) {
				t.Errorf("%s: frame out (%d bytes)\n%x\nwant (%d bytes)\n%x", c.name, len(out), out, len(wantOut), wantOut)
			}
		}
		return nil
	})
}

func TestSixin4DecapAccepted(t *testing.T) {
	e := decapEnv(t)
	var cases []sixin4Case
	add := func(name string, o decapOuter, in packet.Spec, counts ...ckey) {
		f, w := wrap6in4(o, in)
		cases = append(cases, sixin4Case{name: name, frame: f, ret: xdpPass, counts: counts, out: w})
	}
	fromM := decapOuter{src: memberM, dst: exitLocal}
	fromExit := decapOuter{src: theExit, dst: memberLocal}
	// The exit: its member's packet for the internet comes out as the
	// inner frame and goes on to the kernel's routing.
	add("exit side: member to the internet", fromM, tcp(mHost, inet6, 40000, 443, synF), decapOK(tenantC))
	add("exit side: the other member", decapOuter{src: memberN, dst: exitLocal}, tcp(nHost, inet6, 40000, 443, synF), decapOK(tenantC))
	// RFC 4213 3.6: the length is the inner one; padding inside the IPv4
	// packet and after it (Ethernet's minimum frame) is cut off.
	o := fromM
	o.ipPad, o.framePad = 7, 13
	add("exit side: padded, trimmed", o, packet.Spec{Src: mHost, Dst: inet6, Proto: 59}, decapOK(tenantC))
	o = fromM
	o.framePad = 1
	add("exit side: a padding byte", o, icmp6(mHost, inet6, 128), decapOK(tenantC))
	// The member: the internet's packet for its workload, through the
	// exit, prefiltered as if it came natively (rule 1 lets port 8080 in).
	add("member side: internet to an open port", fromExit, tcp(inet6, a1v6, 40100, 8080, synF), decapOK(tenantA))
	add("member side: ICMPv6 error to the workload", fromExit, icmp6(inet6, a1v6, 2), decapOK(tenantA))
	// ECN: outer CE onto an ECT inner sets CE there; nothing else moves.
	o = fromExit
	o.tos, o.innerTC = 0x03, 0xb8|0x02 // EF, ECT(0)
	f, w := wrap6in4(o, tcp(inet6, a1v6, 40104, 8080, synF))
	w[15] |= 0x30
	cases = append(cases, sixin4Case{name: "member side: CE onto ECT(0)", frame: f, ret: xdpPass, counts: []ckey{decapOK(tenantA)}, out: w})
	o.tos = 0x02 // ECT(0) outer: the inner is left as it is
	add("member side: ECT decapOuter, inner kept", o, tcp(inet6, a1v6, 40105, 8080, synF), decapOK(tenantA))
	runSixin4(t, e, cases)
}

func TestSixin4DecapAttacks(t *testing.T) {
	e := decapEnv(t)
	var cases []sixin4Case
	add := func(name string, o decapOuter, in packet.Spec, ret uint32, counts ...ckey) {
		f, _ := wrap6in4(o, in)
		cases = append(cases, sixin4Case{name: name, frame: f, ret: ret, counts: counts})
	}
	drop := func(name string, o decapOuter, in packet.Spec, counts ...ckey) {
		add(name, o, in, xdpDrop, counts...)
	}
	fromM := decapOuter{src: memberM, dst: exitLocal}
	fromExit := decapOuter{src: theExit, dst: memberLocal}
	good := tcp(mHost, inet6, 40000, 443, synF)

	// The outer addresses.
	drop("unregistered IPv4 to the exit's endpoint", decapOuter{src: stranger4, dst: exitLocal}, good, drop6(0, policy.Drop6in4Peer))
	drop("the exit's address, to the member's endpoint", decapOuter{src: theExit, dst: exitLocal}, tcp(inet6, a1v6, 1, 8080, synF), drop6(0, policy.Drop6in4Peer))
	drop("a member, to the other tunnel's local end", decapOuter{src: memberM, dst: memberLocal}, good, drop6(0, policy.Drop6in4Peer))
	// The right peer, an inner source outside its delegation.
	drop("member M as member N", fromM, tcp(nHost, inet6, 40000, 443, synF), drop6(0, policy.Drop6in4Inner))
	drop("member M's /64 by its other tunnel (another local end)", decapOuter{src: memberM, dst: exitLocal2}, good, drop6(0, policy.Drop6in4Inner))
	drop("member M as the exit's own /64", fromM, tcp(a1v6, inet6, 40000, 443, synF), drop6(0, policy.Drop6in4Inner))
	drop("member M as the exit's other tenant", fromM, tcp(b1v6, inet6, 40000, 443, synF), drop6(0, policy.Drop6in4Inner))
	drop("member M as a random address", fromM, tcp(inet6, ext6, 40000, 443, synF), drop6(0, policy.Drop6in4Inner))
	drop("member M from a link-local", fromM, tcp(netip.MustParseAddr("fe80::1"), inet6, 40000, 443, synF), drop6(0, policy.Drop6in4Inner))
	// The right peer and source, to what is not routed through a tunnel.
	for _, d := range []string{"ff02::1", "ff05::2", "fe80::1", "::1", "::ffff:10.0.0.1"} {
		drop("member M to "+d, fromM, tcp(mHost, netip.MustParseAddr(d), 40000, 443, synF), drop6(tenantC, policy.Drop6in4Inner))
	}
	// Hop limit 255 is ND's proof of an on-link sender (RFC 4861): a
	// tunnel's end would rewrite this node's neighbours on the uplink.
	nd := packet.Spec{Src: mHost, Dst: netip.MustParseAddr("2001:db8:ffff::1"), Proto: 58, ICMPType: 136, NDTarget: netip.MustParseAddr("fe80::beef"), HopLimit: 255}
	drop("member M: a neighbour advertisement (hop limit 255)", fromM, nd, drop6(tenantC, policy.Drop6in4Inner))
	hl := good
	hl.HopLimit = 255
	drop("member M: hop limit 255", fromM, hl, drop6(tenantC, policy.Drop6in4Inner))
	nd = packet.Spec{Src: inet6, Dst: a1v6, Proto: 58, ICMPType: 136, NDTarget: netip.MustParseAddr("fe80::1"), HopLimit: 255}
	drop("the exit: a neighbour advertisement (hop limit 255)", fromExit, nd, drop6(tenantA, policy.Drop6in4Inner))
	hl.HopLimit = 254
	f, w := wrap6in4(fromM, hl)
	cases = append(cases, sixin4Case{name: "member M: hop limit 254", frame: f, ret: xdpPass, counts: []ckey{decapOK(tenantC)}, out: w})
	// The right peer and source, to a tenant's prefix: cleartext.
	drop("member M to a workload of the exit", fromM, tcp(mHost, a1v6, 40000, 8080, synF), drop6(tenantC, policy.Drop6in4Leak))
	drop("member M to member N", fromM, tcp(mHost, nHost, 40000, 22, synF), drop6(tenantC, policy.Drop6in4Leak))
	drop("member M to itself", fromM, tcp(mHost, netip.MustParseAddr("2001:db8:c::1"), 40000, 22, synF), drop6(tenantC, policy.Drop6in4Leak))
	// The member, from its exit: only for its /64, only from the internet.
	drop("exit to an address not the member's", fromExit, tcp(inet6, mHost, 1, 2, synF), drop6(0, policy.Drop6in4Inner))
	drop("exit to the member from a tenant's source", fromExit, tcp(b1v6, a1v6, 1, 8080, synF), drop6(tenantA, policy.Drop6in4Inner))
	drop("exit to the member from its own /64", fromExit, tcp(a2v6, a1v6, 1, 8080, synF), drop6(tenantA, policy.Drop6in4Inner))
	for _, s := range []string{"ff02::1", "::1", "::", "::10.0.0.1", "::ffff:10.0.0.1", "fe80::99"} {
		drop("exit to the member from "+s, fromExit, tcp(netip.MustParseAddr(s), a1v6, 1, 8080, synF), drop6(tenantA, policy.Drop6in4Inner))
	}
	// Fragments, first and later, of the right peer: never reassembled.
	o := fromM
	o.more = true
	drop("first fragment", o, good, drop6(0, policy.Drop6in4Frag))
	o.more, o.fragOff = false, 185
	drop("last fragment", o, good, drop6(0, policy.Drop6in4Frag))
	o = decapOuter{src: stranger4, dst: exitLocal, more: true, fragOff: 3}
	drop("a stranger's fragment", o, good, drop6(0, policy.Drop6in4Frag))
	// Malformed headers and lengths.
	o = fromM
	o.ihl = 6
	drop("ihl 6", o, good, drop6(0, policy.DropMalform))
	o.ihl = 4
	drop("ihl 4", o, good, drop6(0, policy.DropMalform))
	o = fromM
	o.innerVers = 4
	drop("inner version 4", o, good, drop6(0, policy.DropMalform))
	o = fromM
	o.truncate = 14 + 20 + 30
	drop("truncated inner header", o, good, drop6(0, policy.DropMalform))
	o.truncate = 14 + 20 + 50
	drop("truncated inner payload", o, good, drop6(0, policy.DropMalform))
	o = fromM
	o.totDelta = 1
	drop("total length beyond the frame", o, good, drop6(0, policy.DropMalform))
	o.totDelta = -1
	drop("total length short of the inner packet", o, good, drop6(0, policy.DropMalform))
	o = fromM
	o.badSum = 0x0100
	drop("a wrong header checksum", o, good, drop6(0, policy.DropMalform))
	o = fromM
	o.version = 5
	drop("decapOuter version 5", o, good, drop6(0, policy.DropMalform))
	// ECN: CE on a sender that does not do ECN (as sit: dropped).
	o = decapOuter{src: theExit, dst: memberLocal, tos: 0x03}
	drop("CE onto Not-ECT", o, tcp(inet6, a1v6, 40100, 8080, synF), drop6(tenantA, policy.DropMalform))

	// Not ours: protocol 41 to an address that is no endpoint of ours
	// (an operator's own tunnel) passes as it came, counted nowhere.
	add("protocol 41 to another address", decapOuter{src: memberM, dst: netip.MustParseAddr("192.0.2.200")}, good, xdpPass)
	o = decapOuter{src: stranger4, dst: netip.MustParseAddr("192.0.2.200"), more: true}
	add("a fragment to another address", o, good, xdpPass)

	// Decapsulated, then prefiltered like native traffic: the member's
	// workload has no rule for port 23.
	add("member side: internet to a closed port", fromExit, tcp(inet6, a1v6, 40101, 23, synF), xdpDrop,
		decapOK(tenantA), ckey{tenantA, policy.DirPrefilter, policy.DropDefault})
	add("member side: a deny rule's source", fromExit, tcp(bad6, a1v6, 40102, 8080, synF), xdpDrop,
		decapOK(tenantA), ckey{tenantA, policy.DirPrefilter, policy.DropPolicy})
	runSixin4(t, e, cases)
}

// TestSixin4DecapMultiBuffer: a 6in4 frame larger than a page (a jumbo
// uplink) arrives in several buffers (xdp.frags); the headers are in the
// first, the trim of the padding works on the last.
func TestSixin4DecapMultiBuffer(t *testing.T) {
	e := decapEnv(t)
	o := decapOuter{src: memberM, dst: exitLocal, framePad: 3}
	in := packet.Spec{Src: mHost, Dst: inet6, Proto: 17, Sport: 5000, Dport: 5001, Payload: 6000}
	f, w := wrap6in4(o, in)
	runSixin4(t, e, []sixin4Case{{name: "6 KB over 6in4", frame: f, ret: xdpPass, counts: []ckey{decapOK(tenantC)}, out: w}})
}
