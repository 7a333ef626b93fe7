// Package wg runs one WireGuard interface per tenant network on a node:
// the kernel's when the wireguard module exists, else embedded
// wireguard-go on /dev/net/tun with its UAPI socket, so that wgctrl and
// `wg show` work on either. Peers are applied as per-peer diffs: a steady
// state rewrites nothing (rewriting all peers drops sessions).
package wg

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Impl says which WireGuard runs.
type Impl string

const (
	Kernel   Impl = "kernel"
	Embedded Impl = "wireguard-go"
)

// Name is the interface name of a network's WireGuard device. The UAPI
// socket of wireguard-go (/var/run/wireguard/<name>.sock) is shared by
// every network namespace of the machine, so the name carries a tag of the
// node id: several nodes on one machine (the demo, the tests) never clash.
func Name(num uint32, nodeID string) string {
	h := sha256.Sum256([]byte(nodeID))
	return fmt.Sprintf("tg%x%s", num, hex.EncodeToString(h[:2]))
}

// Peer is a wanted peer.
type Peer struct {
	PublicKey  wgtypes.Key
	Endpoint   netip.AddrPort
	AllowedIPs []netip.Prefix
	Keepalive  time.Duration
}

// Device is a running WireGuard interface.
type Device struct {
	Name string
	Impl Impl
	dev  *device.Device // embedded only
	uapi net.Listener
	wgc  *wgctrl.Client
	log  *slog.Logger

	mu        sync.Mutex
	endpoints map[wgtypes.Key]string // last endpoint seen per peer
	epChanges map[wgtypes.Key]uint64 // times it changed (roaming, NAT rebinding, registry)
}

// LoadKey reads the network's private key from dir, generating it (0600)
// the first time. The private key never leaves the node.
func LoadKey(dir, network string) (wgtypes.Key, error) {
	path := filepath.Join(dir, network+".key")
	if b, err := os.ReadFile(path); err == nil {
		return wgtypes.ParseKey(string(b))
	} else if !errors.Is(err, os.ErrNotExist) {
		return wgtypes.Key{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return wgtypes.Key{}, err
	}
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, err
	}
	return k, writeFileAtomic(path, []byte(k.String()))
}

// Open creates (or takes over) the interface and sets key and port.
func Open(name string, key wgtypes.Key, port, mtu int, log *slog.Logger) (*Device, error) {
	wgc, err := wgctrl.New()
	if err != nil {
		return nil, err
	}
	d := &Device{Name: name, wgc: wgc, log: log}
	// The kernel's WireGuard, where the module exists.
	err = netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}})
	switch {
	case err == nil || errors.Is(err, os.ErrExist):
		d.Impl = Kernel
	default:
		if l, lerr := netlink.LinkByName(name); lerr == nil {
			netlink.LinkDel(l) // a stale TUN of a previous process
		}
		if err := d.openEmbedded(mtu); err != nil {
			wgc.Close()
			return nil, err
		}
	}
	if d.dev != nil {
		// In process, on the calling thread: wireguard-go opens its UDP
		// sockets in the network namespace of the thread that sets the
		// port (the UAPI socket's goroutines may run anywhere).
		cfg := fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(key[:]), port)
		if err := d.dev.IpcSet(cfg); err != nil {
			d.Close()
			return nil, fmt.Errorf("configure %s: %w", name, err)
		}
	} else {
		p := port
		if err := wgc.ConfigureDevice(name, wgtypes.Config{PrivateKey: &key, ListenPort: &p}); err != nil {
			d.Close()
			return nil, fmt.Errorf("configure %s: %w", name, err)
		}
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		d.Close()
		return nil, err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Device) openEmbedded(mtu int) error {
	t, err := tun.CreateTUN(d.Name, mtu)
	if err != nil {
		return fmt.Errorf("create tun %s: %w", d.Name, err)
	}
	logger := &device.Logger{Verbosef: device.DiscardLogf, Errorf: func(format string, a ...any) {
		d.log.Warn("wireguard-go", "device", d.Name, "msg", fmt.Sprintf(format, a...))
	}}
	d.dev = device.NewDevice(t, conn.NewDefaultBind(), logger)
	f, err := ipc.UAPIOpen(d.Name)
	if err != nil {
		d.dev.Close()
		return fmt.Errorf("uapi %s: %w", d.Name, err)
	}
	// Not ipc.UAPIListen: it spends an inotify instance per device
	// (fs.inotify.max_user_instances, 128 by default, is shared by every
	// process of the user) to notice the socket file being deleted. We
	// own the socket; a plain listener is enough.
	d.uapi, err = net.FileListener(f)
	f.Close()
	if err != nil {
		d.dev.Close()
		return fmt.Errorf("uapi listen %s: %w", d.Name, err)
	}
	go func() {
		for {
			c, err := d.uapi.Accept()
			if err != nil {
				return
			}
			go d.dev.IpcHandle(c)
		}
	}()
	d.Impl = Embedded
	return d.dev.Up()
}

// PublicKey of the device.
func (d *Device) PublicKey() (wgtypes.Key, error) {
	dev, err := d.wgc.Device(d.Name)
	if err != nil {
		return wgtypes.Key{}, err
	}
	return dev.PublicKey, nil
}

// State returns the device as wgctrl sees it (peers, handshakes, bytes).
func (d *Device) State() (*wgtypes.Device, error) {
	st, err := d.wgc.Device(d.Name)
	if err == nil {
		d.observe(st.Peers)
	}
	return st, err
}

// observe counts endpoint changes of the peers; it runs on every read of
// the device (each reconcile and each scrape), so a change that is undone
// between two reads goes unseen.
func (d *Device) observe(peers []wgtypes.Peer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.endpoints == nil {
		d.endpoints, d.epChanges = map[wgtypes.Key]string{}, map[wgtypes.Key]uint64{}
	}
	seen := map[wgtypes.Key]bool{}
	for _, p := range peers {
		seen[p.PublicKey] = true
		if p.Endpoint == nil {
			continue
		}
		ep := p.Endpoint.String()
		if old, ok := d.endpoints[p.PublicKey]; ok && old != ep {
			d.epChanges[p.PublicKey]++
		}
		d.endpoints[p.PublicKey] = ep
	}
	for k := range d.endpoints {
		if !seen[k] {
			delete(d.endpoints, k)
			delete(d.epChanges, k)
		}
	}
}

// EndpointChanges returns how often the peer's endpoint changed since the
// device started (or the peer was added).
func (d *Device) EndpointChanges(k wgtypes.Key) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.epChanges[k]
}

func samePrefixes(a []net.IPNet, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	var as, bs []string
	for _, x := range a {
		as = append(as, x.String())
	}
	for _, x := range b {
		bs = append(bs, x.String())
	}
	sort.Strings(as)
	sort.Strings(bs)
	for i := range as {
		if as[i] != bs[i] {
			return false
		}
	}
	return true
}

// SetPeers applies the wanted peers as a diff and returns how many peers
// it touched. An unchanged peer is not written. A peer's endpoint is
// updated only if it has not completed a handshake in the last three
// minutes (a roaming peer's live endpoint beats the registry's).
func (d *Device) SetPeers(want []Peer) (int, error) {
	cur, err := d.State()
	if err != nil {
		return 0, err
	}
	have := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range cur.Peers {
		have[p.PublicKey] = p
	}
	var cfg []wgtypes.PeerConfig
	wanted := map[wgtypes.Key]bool{}
	for _, p := range want {
		wanted[p.PublicKey] = true
		h, ok := have[p.PublicKey]
		ka := p.Keepalive
		pc := wgtypes.PeerConfig{PublicKey: p.PublicKey, ReplaceAllowedIPs: true}
		for _, a := range p.AllowedIPs {
			pc.AllowedIPs = append(pc.AllowedIPs, net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())})
		}
		// A peer without an endpoint (a user's laptop) is reached at
		// wherever it last spoke from.
		var ep *net.UDPAddr
		if p.Endpoint.IsValid() {
			ep = net.UDPAddrFromAddrPort(p.Endpoint)
		}
		recent := ok && !h.LastHandshakeTime.IsZero() && time.Since(h.LastHandshakeTime) < 3*time.Minute
		changed := !ok || !samePrefixes(h.AllowedIPs, p.AllowedIPs) || h.PersistentKeepaliveInterval != ka ||
			(ep != nil && !recent && (h.Endpoint == nil || h.Endpoint.String() != ep.String()))
		if !changed {
			continue
		}
		if ep != nil && (!recent || !ok) {
			pc.Endpoint = ep
		}
		pc.PersistentKeepaliveInterval = &ka
		cfg = append(cfg, pc)
	}
	for k := range have {
		if !wanted[k] {
			cfg = append(cfg, wgtypes.PeerConfig{PublicKey: k, Remove: true})
		}
	}
	if len(cfg) == 0 {
		return 0, nil
	}
	return len(cfg), d.wgc.ConfigureDevice(d.Name, wgtypes.Config{Peers: cfg})
}

// Close stops the device (embedded: the interface goes with it).
func (d *Device) Close() error {
	if d.uapi != nil {
		d.uapi.Close()
		os.Remove(filepath.Join("/var/run/wireguard", d.Name+".sock"))
	}
	if d.dev != nil {
		d.dev.Close()
	}
	if d.Impl == Kernel {
		if l, err := netlink.LinkByName(d.Name); err == nil {
			netlink.LinkDel(l)
		}
	}
	return d.wgc.Close()
}
