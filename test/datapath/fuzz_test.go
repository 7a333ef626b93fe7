package datapath_test

import (
	"net/netip"
	"testing"

	"github.com/tenantnet/tenantnet/internal/packet"
	"github.com/tenantnet/tenantnet/model"
)

// FuzzDatapath feeds arbitrary frames to the three programs of the standard
// environment and requires the model's verdict. Run it for longer with
//
//	sudo go test ./test/datapath -run '^$' -fuzz FuzzDatapath -fuzztime 10m
//
// The first byte picks the hook and port, the second the interface a packet
// for tn_to_workload arrived by; the rest is the frame. Tenant B has a
// quota of 8 flows and 2 fragmented datagrams.
func FuzzDatapath(f *testing.F) {
	seeds := []packet.Spec{
		tcp(ext6, a1v6, 40000, 8080, synF),
		tcp(ext4, a1v4, 40000, 8080, synF),
		nd(a1ll, netip.MustParseAddr("ff02::1"), 136, ll6),
		nd(unsp6, netip.MustParseAddr("ff02::1:ff00:1"), 135, a1v6),
		icmpErr(ext6, a1v6, 2, tcp(a1v6, ext6, 41000, 443, ackF)),
		icmpErr(ext4, a1v4, 3, tcp(a1v4, ext4, 8080, 40000, ackF)),
		{Src: ext6, Dst: a1v6, Proto: 6, Dport: 8080, Ext: []packet.Ext{{Type: 43, Len: 24}}, SegsLeft: 1},
		tcpSeq(ext6, a1v6, 443, 40000, rstF|ackF, 77, 1001),
		{Src: ext6, Dst: a1v6, Proto: 6, Payload: 64, Ext: []packet.Ext{{Type: 0, Len: 16}, {Type: 44, FragOffset: 10, ID: 99}}},
		{Src: ext4, Dst: a1v4, Proto: 17, Dport: 5000, IPv4Opts: 8},
		{EthType: 0x0806, ARPSender: a1v4, Dst: a1v4},
		tcp(ext6, a2v6, 40000, 22, synF), // A2's address: wrong-port on any other port
		icmpErr(a1v6, bad6, 1, packet.Spec{Src: ext6, Dst: a1v6, Proto: 17, Sport: 9, Dport: 5500}),
	}
	for i, s := range seeds {
		f.Add(append([]byte{byte(i), byte(i)}, packet.Build(s)...))
	}
	e := standardEnv(f)
	// A small quota for tenant B, so that ct-quota is reached.
	e.quota(tenantB, 8, 2)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2+34 {
			return // the kernel's test run minimum for TC frames
		}
		e.t = t
		sel, frame := data[0], data[2:]
		arrivals := append([]uint32{0, uplink, wgA, wgB}, e.ports...)
		arrival := arrivals[int(data[1])%len(arrivals)]
		if len(frame) > 1514 {
			return // the test run refuses frames near a page; MTU is enough
		}
		if len(frame) < 54 && frame[12] == 0x86 && frame[13] == 0xdd {
			return
		}
		hook := model.Hook(int(sel) % 3)
		port := int(sel>>2) % len(e.ports)
		e.inNS(func() error {
			if _, err := e.checkFrom(hook, e.ports[port], arrival, frame); err != nil {
				t.Fatalf("hook %d port %d arrival %d frame %x: %v", hook, port, arrival, frame, err)
			}
			return nil
		})
	})
}
