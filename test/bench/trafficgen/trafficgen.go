// Package trafficgen is the bench's packet generator and sink: frames
// injected with BPF_PROG_RUN in live-frame mode (BPF_F_TEST_XDP_LIVE_FRAMES,
// Linux 5.18+; the kernel's xdp-trafficgen works this way) on the sender's
// veth, and a TC program in the workload that counts and drops them. Neither
// end has a socket, so the figure between them is the node's.
package trafficgen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/internal/packet"
)

// xdpMd is struct xdp_md, the context BPF_PROG_RUN takes for XDP: the
// frames enter as if received on IngressIfindex, which XDP_TX sends them
// out of.
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// hdrLen is TG_HDR_LEN: Ethernet, IPv6 and UDP headers, which tg_xmit
// writes back into every frame before it sends it.
const hdrLen = 14 + 40 + 8

// Objects are the loaded generator and sink.
type Objects struct{ objs TrafficgenObjects }

// Load loads the programs; the sink counts UDP packets to sinkPort.
func Load(sinkPort uint16) (*Objects, error) {
	spec, err := LoadTrafficgen()
	if err != nil {
		return nil, fmt.Errorf("trafficgen spec: %w", err)
	}
	if err := spec.Variables["sink_port"].Set(sinkPort); err != nil {
		return nil, fmt.Errorf("set sink_port: %w", err)
	}
	o := &Objects{}
	if err := spec.LoadAndAssign(&o.objs, nil); err != nil {
		return nil, fmt.Errorf("load trafficgen: %w", err)
	}
	return o, nil
}

func (o *Objects) Close() error { return o.objs.Close() }

// Send injects n copies of frame out of the interface ifindex of the
// calling thread's namespace (the caller locks the thread there) and
// returns how many frames the kernel ran. Frames the receiving veth has
// no room for are dropped by the kernel, as a NIC's would be.
func (o *Objects) Send(ifindex int, frame []byte, n uint32) error {
	if len(frame) < hdrLen {
		return fmt.Errorf("frame of %d bytes: want at least the %d of the headers", len(frame), hdrLen)
	}
	var h [64]byte
	copy(h[:], frame[:hdrLen])
	if err := o.objs.TgHdr.Put(uint32(0), h); err != nil {
		return fmt.Errorf("write the frame's headers: %w", err)
	}
	_, err := o.objs.TgXmit.Run(&ebpf.RunOptions{
		Data:      frame,
		Context:   xdpMd{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifindex)},
		Repeat:    n,
		Flags:     unix.BPF_F_TEST_XDP_LIVE_FRAMES,
		BatchSize: 64,
	})
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("live frames on ifindex %d (needs Linux 5.18+ and a peer with NAPI: XDP or GRO on): %w", ifindex, err)
		}
		return fmt.Errorf("live frames on ifindex %d: %w", ifindex, err)
	}
	return nil
}

// Flood sends frame out of ifindex until d has passed, in chunks, on the
// calling thread (which the caller has locked in the sender's namespace),
// and returns the frames sent.
func (o *Objects) Flood(ifindex int, frame []byte, d time.Duration) (uint64, error) {
	// 16,384 frames are a few milliseconds: the deadline is kept closely
	// and an interrupted run loses little.
	const chunk = 1 << 14
	var sent uint64
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := o.Send(ifindex, frame, chunk); err != nil {
			return sent, err
		}
		sent += chunk
	}
	return sent, nil
}

// Sink is the counting program attached to an interface.
type Sink struct {
	l    link.Link
	objs *Objects
}

// AttachSink attaches the sink to TC ingress (tcx) of ifindex in the calling
// thread's namespace.
func (o *Objects) AttachSink(ifindex int) (*Sink, error) {
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: o.objs.TgSink, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return nil, fmt.Errorf("attach sink to tcx ingress of ifindex %d: %w", ifindex, err)
	}
	return &Sink{l: l, objs: o}, nil
}

// Count returns the packets the sink counted (and dropped) so far.
func (s *Sink) Count() (uint64, error) {
	var per []uint64
	if err := s.objs.objs.TgCount.Lookup(uint32(0), &per); err != nil {
		return 0, fmt.Errorf("read sink count: %w", err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

func (s *Sink) Close() error { return s.l.Close() }

// UDP6Frame builds an Ethernet/IPv6/UDP frame with a payload of plen bytes
// and a valid checksum (conntrack checks it).
func UDP6Frame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16, plen int) []byte {
	ip := packet.IPv6(packet.Spec{Src: src, Dst: dst, Proto: unix.IPPROTO_UDP, Sport: sport, Dport: dport, Payload: plen})
	f := make([]byte, 14, 14+len(ip))
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:], unix.ETH_P_IPV6)
	return append(f, ip...)
}
