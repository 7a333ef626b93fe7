// Package wg runs one WireGuard interface per tenant network on a node:
// the kernel's when the wireguard module exists, else embedded
// wireguard-go on /dev/net/tun with its UAPI socket (in a process of its
// own that outlives the service, proc.go), so that wgctrl and `wg show`
// work on either. Peers are applied as per-peer diffs: a steady
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
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/device"
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
	// PID is the process of an embedded device that Start runs or
	// adopted (0 for a kernel device and for one in this process).
	PID int
	// Adopted: Start found the device running and took it over.
	Adopted bool
	dev     *device.Device // embedded in this process (Open) only
	uapi    net.Listener
	wgc     *wgctrl.Client
	log     *slog.Logger

	mu        sync.Mutex
	endpoints map[wgtypes.Key]string // last endpoint seen per peer
	epChanges map[wgtypes.Key]uint64 // times it changed (roaming, NAT rebinding, registry)
}

// ErrDamagedKey is a key file that exists but holds no key (truncated by
// a crash, edited by hand): never replaced by a new key, which would
// change the network's identity on every member without a rotation.
var ErrDamagedKey = errors.New("damaged key file")

// LoadKey reads the network's private key from dir, generating it (0600)
// the first time. The private key never leaves the node.
func LoadKey(dir, network string) (wgtypes.Key, error) {
	path := filepath.Join(dir, network+".key")
	if b, err := os.ReadFile(path); err == nil {
		k, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
		if err != nil {
			return k, fmt.Errorf("%w %s (%d bytes): %v; restore it from a backup, or delete it for a new key (every member must then learn it)", ErrDamagedKey, path, len(b), err)
		}
		return k, nil
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

// Open creates (or takes over) the interface and sets key and port. An
// embedded device runs in this process and ends with it (a test, a user's
// laptop); a service that must restart without taking its devices down
// uses Start.
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
		if err := d.configure(key, port); err != nil {
			d.Close()
			return nil, err
		}
	default:
		if l, lerr := netlink.LinkByName(name); lerr == nil {
			netlink.LinkDel(l) // a stale TUN of a previous process
		}
		if d.dev, d.uapi, err = serveEmbedded(name, mtu, log); err != nil {
			wgc.Close()
			return nil, err
		}
		d.Impl = Embedded
		// In process, on the calling thread: wireguard-go opens its UDP
		// sockets in the network namespace of the thread that sets the
		// port (the UAPI socket's goroutines may run anywhere).
		cfg := fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(key[:]), port)
		if err := d.dev.IpcSet(cfg); err != nil {
			d.Close()
			return nil, fmt.Errorf("configure %s: %w", name, err)
		}
	}
	return d, d.up()
}

// up sets the link up (a no-op when it is).
func (d *Device) up() error {
	l, err := netlink.LinkByName(d.Name)
	if err == nil {
		err = netlink.LinkSetUp(l)
	}
	if err != nil {
		d.Release()
		return fmt.Errorf("%s up: %w", d.Name, err)
	}
	return nil
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

// Close removes the device: the interface goes, and an embedded device's
// process (Remove) or the device in this process stops.
func (d *Device) Close() error {
	if d.dev == nil {
		return errors.Join(Remove(d.Name), d.wgc.Close())
	}
	return d.Release()
}

// Release lets go of the device and leaves it running: a kernel device
// and an embedded one in a process of its own (Start) stay, with their
// peers and sessions, for the next Start to adopt. A device in this
// process (Open) cannot outlive it and stops.
func (d *Device) Release() error {
	if d.uapi != nil {
		os.Remove(sockPath(d.Name))
		d.uapi.Close()
	}
	if d.dev != nil {
		d.dev.Close()
	}
	return d.wgc.Close()
}
