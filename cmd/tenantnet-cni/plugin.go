package main

// The plugin's commands. Each asks tenantnetd over its API socket and
// answers in the CNI spec's format; tenantnetd does the work (the port,
// its datapath, the address, reconcile), so that a workload made by a
// container runtime is exactly one made with `tenantnetd workload add`.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/api"
	"github.com/tenantnet/tenantnet/internal/defaults"
	"github.com/tenantnet/tenantnet/ipam"
)

// netConf is the plugin's network configuration (a conflist's plugin
// entry).
type netConf struct {
	types.PluginConf
	// Network is the tenant network (tenantnetd's network id) the
	// container joins. Required: no default network, so that a config
	// without one attaches nowhere rather than somewhere.
	Network string `json:"network"`
	// APISocket is tenantnetd's API socket (default: the node's).
	APISocket string `json:"api_socket,omitempty"`
}

// parseConf reads and checks the configuration: errors are code 7
// (invalid network config), or 6 when it is not JSON.
func parseConf(stdin []byte, withPrev bool) (*netConf, error) {
	c := &netConf{}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "tenantnet-cni: network configuration is not JSON", err.Error())
	}
	if c.Network == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, `tenantnet-cni: the configuration names no tenant network ("network": "<tenantnetd network id>")`, "")
	}
	if err := ipam.ValidID(c.Network); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "tenantnet-cni: network", err.Error())
	}
	if c.APISocket == "" {
		c.APISocket = defaults.APISocket
	}
	if withPrev && c.RawPrevResult != nil {
		if err := version.ParsePrevResult(&c.PluginConf); err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "tenantnet-cni: prevResult", err.Error())
		}
	}
	return c, nil
}

// workloadID is the tenantnetd workload of an attachment: the CNI
// network's name and the attachment's key (container id, interface) in a
// hash, so that any container id fits ipam.ValidID, two configurations
// never share a workload, and GC can tell this configuration's workloads
// (cni-<config>-) from every other one's and from workloads made by hand.
func workloadID(confName, containerID, ifname string) string {
	return configPrefix(confName) + hash(containerID+"\x00"+ifname, 12)
}

func configPrefix(confName string) string { return "cni-" + hash(confName, 4) + "-" }

func hash(s string, n int) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:n])
}

// apiError turns an API call's failure into a CNI error: tenantnetd not
// answering is 11 (try again later: the runtime may retry), a network
// tenantnetd does not have is 7 (the configuration names it), anything
// else 999 with tenantnetd's message.
func apiError(what string, err error) error {
	var ae *api.APIError
	if !errors.As(err, &ae) {
		return types.NewError(types.ErrTryAgainLater, "tenantnet-cni: "+what+": tenantnetd unreachable", err.Error())
	}
	return types.NewError(types.ErrInternal, "tenantnet-cni: "+what, ae.Msg)
}

// network returns the tenant network, or code 7 when the node has none
// of that name.
func network(c *api.Client, conf *netConf) (api.NetworkInfo, error) {
	ns, err := c.Networks()
	if err != nil {
		return api.NetworkInfo{}, apiError("list networks", err)
	}
	for _, n := range ns {
		if n.ID == conf.Network {
			return n, nil
		}
	}
	return api.NetworkInfo{}, types.NewError(types.ErrInvalidNetworkConfig,
		fmt.Sprintf("tenantnet-cni: network %q: tenantnetd has no such network on this node (tenantnetd network add --id %s)", conf.Network, conf.Network), "")
}

func checkArgs(args *skel.CmdArgs) error {
	if err := ipam.ValidIfname(args.IfName); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "tenantnet-cni: CNI_IFNAME", err.Error())
	}
	if args.ContainerID == "" {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "tenantnet-cni: CNI_CONTAINERID is empty", "")
	}
	return nil
}

// netnsID is the identity (device, inode) of the namespace at path, as
// tenantnetd records it.
func netnsID(path string) (ipam.NetnsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return ipam.NetnsID{}, types.NewError(types.ErrInvalidNetNS, "tenantnet-cni: CNI_NETNS "+path, err.Error())
	}
	return ipam.NetnsID{Dev: st.Dev, Ino: st.Ino}, nil
}

// inside is the workload's interface as the kernel has it in its
// namespace: what the result reports, and what CHECK verifies.
type inside struct {
	mac    string
	mtu    int
	addrs  []netip.Prefix
	defGW  netip.Addr // the default route's gateway (invalid: none)
	exists bool
}

func look(nsPath, ifname string) (inside, error) {
	var in inside
	nsh, err := netns.GetFromPath(nsPath)
	if err != nil {
		return in, types.NewError(types.ErrInvalidNetNS, "tenantnet-cni: open "+nsPath, err.Error())
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
	if err != nil {
		return in, fmt.Errorf("netlink in %s: %w", nsPath, err)
	}
	defer h.Close()
	l, err := h.LinkByName(ifname)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return in, nil
		}
		return in, fmt.Errorf("%s in %s: %w", ifname, nsPath, err)
	}
	in.exists, in.mac, in.mtu = true, l.Attrs().HardwareAddr.String(), l.Attrs().MTU
	as, err := h.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		return in, fmt.Errorf("addresses of %s in %s: %w", ifname, nsPath, err)
	}
	for _, a := range as {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			ones, _ := a.Mask.Size()
			in.addrs = append(in.addrs, netip.PrefixFrom(ip.Unmap(), ones))
		}
	}
	rs, err := h.RouteList(l, netlink.FAMILY_V6)
	if err != nil {
		return in, fmt.Errorf("routes of %s in %s: %w", ifname, nsPath, err)
	}
	for _, r := range rs {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			if gw, ok := netip.AddrFromSlice(r.Gw); ok {
				in.defGW = gw
			}
		}
	}
	return in, nil
}

// result is the spec's result for a workload: its interface in the
// sandbox, its /64 address with the gateway, and the default route.
func result(conf *netConf, args *skel.CmdArgs, w api.WorkloadInfo, in inside) (*current.Result, error) {
	gw, err := netip.ParseAddr(w.Gateway)
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "tenantnet-cni: gateway "+w.Gateway, err.Error())
	}
	r := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if conf.PrevResult != nil {
		// Chained after another plugin: what it made stays in the result.
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return nil, types.NewError(types.ErrDecodingFailure, "tenantnet-cni: prevResult", err.Error())
		}
		r = prev
	}
	idx := len(r.Interfaces)
	r.Interfaces = append(r.Interfaces, &current.Interface{Name: args.IfName, Mac: in.mac, Mtu: in.mtu, Sandbox: args.Netns})
	r.IPs = append(r.IPs, &current.IPConfig{Interface: &idx,
		Address: net.IPNet{IP: w.Addr.AsSlice(), Mask: net.CIDRMask(64, 128)}, Gateway: gw.AsSlice()})
	r.Routes = append(r.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, GW: gw.AsSlice()})
	return r, nil
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData, true)
	if err != nil {
		return err
	}
	if err := checkArgs(args); err != nil {
		return err
	}
	if _, err := netnsID(args.Netns); err != nil {
		return err
	}
	c := api.NewClient(conf.APISocket)
	if _, err := network(c, conf); err != nil {
		return err
	}
	id := workloadID(conf.Name, args.ContainerID, args.IfName)
	w, err := c.AddWorkload(api.WorkloadRequest{ID: id, Network: conf.Network, Netns: args.Netns, Ifname: args.IfName})
	if err != nil {
		var ae *api.APIError
		if errors.As(err, &ae) && ae.Code == http.StatusNotFound {
			// The network went between the two calls.
			return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("tenantnet-cni: network %q", conf.Network), ae.Msg)
		}
		return apiError("attach workload "+id, err)
	}
	in, err := look(args.Netns, args.IfName)
	if err == nil && !in.exists {
		err = fmt.Errorf("tenantnetd attached workload %s, but %s is not in %s", id, args.IfName, args.Netns)
	}
	if err != nil {
		// Nothing half-made: the runtime sees the error and the
		// workload is gone.
		if derr := c.DeleteWorkload(id); derr != nil {
			err = fmt.Errorf("%w (and undoing: %v)", err, derr)
		}
		return wrapInternal(err)
	}
	r, err := result(conf, args, w, in)
	if err != nil {
		return err
	}
	return types.PrintResult(r, conf.CNIVersion)
}

// cmdDel detaches the workload: a workload tenantnetd does not have (never
// added, deleted already, its namespace gone) is success, so that DEL can
// be repeated; tenantnetd unreachable is not (11), since its port and
// address would stay behind.
func cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData, false)
	if err != nil {
		return err
	}
	if err := checkArgs(args); err != nil {
		return err
	}
	id := workloadID(conf.Name, args.ContainerID, args.IfName)
	err = api.NewClient(conf.APISocket).DeleteWorkload(id)
	var ae *api.APIError
	if err == nil || errors.As(err, &ae) && ae.Code == http.StatusNotFound {
		return nil
	}
	return apiError("detach workload "+id, err)
}

// cmdCheck verifies that the attachment is as ADD made it: tenantnetd has
// the workload on the configured network, in this very namespace (by
// identity, not path), with the address the previous result reported,
// and the interface in the namespace has it, with the default route via
// the gateway.
func cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData, true)
	if err != nil {
		return err
	}
	if err := checkArgs(args); err != nil {
		return err
	}
	nsid, err := netnsID(args.Netns)
	if err != nil {
		return err
	}
	c := api.NewClient(conf.APISocket)
	id := workloadID(conf.Name, args.ContainerID, args.IfName)
	ws, err := c.Workloads()
	if err != nil {
		return apiError("list workloads", err)
	}
	var w *api.WorkloadInfo
	for i := range ws {
		if ws[i].ID == id {
			w = &ws[i]
		}
	}
	fail := func(format string, a ...any) error {
		return types.NewError(types.ErrInternal, "tenantnet-cni: check "+id+": "+fmt.Sprintf(format, a...), "")
	}
	switch {
	case w == nil:
		return types.NewError(types.ErrUnknownContainer, "tenantnet-cni: check: tenantnetd has no workload "+id+" for container "+args.ContainerID, "")
	case w.Network != conf.Network:
		return fail("attached to network %s, the configuration names %s", w.Network, conf.Network)
	case w.NetnsID != (ipam.NetnsID{}) && w.NetnsID != nsid:
		return fail("attached to namespace %s (%s), not to CNI_NETNS %s (%s)", w.Netns, w.NetnsID, args.Netns, nsid)
	case w.InsideIf() != args.IfName:
		return fail("attached as %s, not %s", w.InsideIf(), args.IfName)
	}
	if conf.PrevResult != nil {
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, "tenantnet-cni: prevResult", err.Error())
		}
		found := false
		for _, ip := range prev.IPs {
			if a, ok := netip.AddrFromSlice(ip.Address.IP); ok && a.Unmap() == w.Addr {
				found = true
			}
		}
		if !found {
			return fail("the previous result does not hold the workload's address %s", w.Addr)
		}
	}
	in, err := look(args.Netns, args.IfName)
	if err != nil {
		return wrapInternal(err)
	}
	gw, _ := netip.ParseAddr(w.Gateway)
	switch {
	case !in.exists:
		return fail("no %s in %s", args.IfName, args.Netns)
	case !hasPrefix(in.addrs, netip.PrefixFrom(w.Addr, 64)):
		return fail("%s in %s lacks %s/64 (has %v)", args.IfName, args.Netns, w.Addr, in.addrs)
	case in.defGW != gw:
		return fail("default route in %s via %v, want via %s", args.Netns, in.defGW, gw)
	}
	return nil
}

func hasPrefix(ps []netip.Prefix, p netip.Prefix) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// cmdStatus (spec 1.1): ready for ADD when tenantnetd answers and has the
// network; else 50 (plugin not available).
func cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData, false)
	if err != nil {
		return err
	}
	if _, err := network(api.NewClient(conf.APISocket), conf); err != nil {
		var e *types.Error
		if errors.As(err, &e) {
			return types.NewError(types.ErrPluginNotAvailable, e.Msg, e.Details)
		}
		return types.NewError(types.ErrPluginNotAvailable, "tenantnet-cni", err.Error())
	}
	return nil
}

// cmdGC (spec 1.1) detaches this configuration's workloads (cni-<config>-
// ids) that are not among the runtime's valid attachments: those a lost
// DEL left behind. Workloads of other configurations and those made with
// `tenantnetd workload add` are never touched.
func cmdGC(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData, false)
	if err != nil {
		return err
	}
	valid := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		valid[workloadID(conf.Name, a.ContainerID, a.IfName)] = true
	}
	c := api.NewClient(conf.APISocket)
	ws, err := c.Workloads()
	if err != nil {
		return apiError("list workloads", err)
	}
	var errs []error
	for _, w := range ws {
		if !strings.HasPrefix(w.ID, configPrefix(conf.Name)) || valid[w.ID] {
			continue
		}
		var ae *api.APIError
		if err := c.DeleteWorkload(w.ID); err != nil && !(errors.As(err, &ae) && ae.Code == http.StatusNotFound) {
			errs = append(errs, fmt.Errorf("detach %s: %w", w.ID, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return apiError("gc", err)
	}
	return nil
}

// wrapInternal makes a plain error a CNI error (999), keeping a CNI
// error's own code.
func wrapInternal(err error) error {
	var e *types.Error
	if errors.As(err, &e) {
		return err
	}
	if errors.Is(err, syscall.ENOENT) {
		return types.NewError(types.ErrInvalidNetNS, "tenantnet-cni", err.Error())
	}
	return types.NewError(types.ErrInternal, "tenantnet-cni", err.Error())
}

func main() {
	// Spec 1.1 adds STATUS and GC; 0.4.0 and 1.0.0 runtimes (podman 4.3
	// vendors a libcni of 1.0.0) get their result converted by the
	// library.
	about := "tenantnet-cni: attach containers to tenantnet networks through tenantnetd"
	if e := skel.PluginMainFuncsWithError(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus, GC: cmdGC},
		version.PluginSupports("0.4.0", "1.0.0", "1.1.0"), about); e != nil {
		if err := e.Print(); err != nil {
			fmt.Fprintln(os.Stderr, "tenantnet-cni: write the error:", err)
		}
		os.Exit(1)
	}
}
