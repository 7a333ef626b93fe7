package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Hook is an attach point of a program on an interface.
type Hook string

const (
	// HookFromWorkload is TC ingress of a workload port (packets the
	// workload sends).
	HookFromWorkload Hook = "from"
	// HookToWorkload is TC egress of a workload port.
	HookToWorkload Hook = "to"
	// HookUplink is XDP on the uplink.
	HookUplink Hook = "xdp"
	// HookFromWG is TC ingress of a tenant's WireGuard device.
	HookFromWG Hook = "wg"
	// Hook6in4Out is TC egress of the 6in4 slow path device (tn6in4).
	Hook6in4Out Hook = "6in4"
	// HookUplinkIn is TC ingress of the uplink (host routing).
	HookUplinkIn Hook = "upin"
)

var allHooks = []Hook{HookFromWorkload, HookToWorkload, HookUplink, HookFromWG, Hook6in4Out, HookUplinkIn}

// Mode is how a program is attached.
type Mode string

const (
	ModeTCX        Mode = "tcx"         // bpf_link, kernel >= 6.6
	ModeLegacyTC   Mode = "tc"          // clsact qdisc + direct-action cls_bpf
	ModeXDPDriver  Mode = "xdp-native"  // driver XDP (veth has it)
	ModeXDPGeneric Mode = "xdp-generic" // skb XDP, any driver
)

// legacySuffix marks a pin that records a legacy tc attachment: tc filters
// are not bpf_links, so the program is pinned a second time under links/
// to remember where it was attached.
const legacySuffix = "_tc"

// AttachOptions choose how to attach.
type AttachOptions struct {
	// ForceLegacyTC skips TCX even where the kernel has it (tests, and
	// operators who need tc filter tooling to see our programs).
	ForceLegacyTC bool
	// ForceGenericXDP attaches XDP in skb mode.
	ForceGenericXDP bool
}

// tcMode is the TC mode to try first; attachTC falls back to legacy tc
// where the kernel has no TCX.
func (o AttachOptions) tcMode() Mode {
	if o.ForceLegacyTC {
		return ModeLegacyTC
	}
	return ModeTCX
}

// Attachment is one program attached to one interface, as recorded by the
// pins in the links directory.
type Attachment struct {
	Ifindex int
	Hook    Hook
	Mode    Mode
	ProgID  ebpf.ProgramID
	Live    bool // the kernel still has the attachment
}

func linkPin(pinDir string, ifindex int, hook Hook) string {
	return filepath.Join(pinDir, linksDir, fmt.Sprintf("%d_%s", ifindex, hook))
}

// AttachPort attaches the workload-port programs to both directions of
// ifindex. Attaching again, or after Load of a newer build, replaces the
// programs in place: TCX links are updated atomically and legacy filters
// are replaced with NLM_F_REPLACE, so the port is never unfiltered.
func (dp *Datapath) AttachPort(ifindex int, opts AttachOptions) (Mode, error) {
	mode, err := dp.attachTC(ifindex, HookFromWorkload, opts.tcMode())
	if err != nil {
		return mode, err
	}
	return dp.attachTC(ifindex, HookToWorkload, mode)
}

// AttachWG attaches tn_from_wg to TC ingress of a tenant's WireGuard
// device, replacing it in place like AttachPort.
func (dp *Datapath) AttachWG(ifindex int, opts AttachOptions) (Mode, error) {
	if dp.WG == nil {
		return "", fmt.Errorf("attach wireguard ifindex %d: tn_from_wg is not loaded (load the datapath with this build)", ifindex)
	}
	return dp.attachTC(ifindex, HookFromWG, opts.tcMode())
}

// Attach6in4 attaches tn_6in4_out to TC egress of the 6in4 slow path
// device (sixin4.EnsureDevice), replacing it in place like AttachPort.
func (dp *Datapath) Attach6in4(ifindex int, opts AttachOptions) (Mode, error) {
	if dp.SixIn4 == nil {
		return "", fmt.Errorf("attach 6in4 ifindex %d: tn_6in4_out is not loaded (load the datapath with this build)", ifindex)
	}
	return dp.attachTC(ifindex, Hook6in4Out, opts.tcMode())
}

// AttachUplinkIn attaches tn_uplink_in (host routing from the uplink) to
// TC ingress of the uplink, replacing it in place like AttachPort.
func (dp *Datapath) AttachUplinkIn(ifindex int, opts AttachOptions) (Mode, error) {
	if dp.UplinkIn == nil {
		return "", fmt.Errorf("attach uplink ifindex %d: tn_uplink_in is not loaded (load the datapath with this build)", ifindex)
	}
	return dp.attachTC(ifindex, HookUplinkIn, opts.tcMode())
}

// DetachUplinkIn removes tn_uplink_in from ifindex (fast_path off, or no
// bpf_redirect_peer): whichever way it was attached.
func (dp *Datapath) DetachUplinkIn(ifindex int) error {
	return errors.Join(removeLink(dp.PinDir, ifindex, HookUplinkIn), removeLegacy(dp.PinDir, ifindex, HookUplinkIn))
}

// tcHook is what a TC hook attaches: the program, the TCX attach type and
// the clsact parent of its legacy filter.
func (dp *Datapath) tcHook(h Hook) (prog *ebpf.Program, attach ebpf.AttachType, parent uint32) {
	switch h {
	case HookToWorkload:
		return dp.Progs.TnToWorkload, ebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS
	case HookFromWG:
		return dp.WG, ebpf.AttachTCXIngress, netlink.HANDLE_MIN_INGRESS
	case Hook6in4Out:
		return dp.SixIn4, ebpf.AttachTCXEgress, netlink.HANDLE_MIN_EGRESS
	case HookUplinkIn:
		return dp.UplinkIn, ebpf.AttachTCXIngress, netlink.HANDLE_MIN_INGRESS
	}
	return dp.Progs.TnFromWorkload, ebpf.AttachTCXIngress, netlink.HANDLE_MIN_INGRESS
}

// Alive asks the kernel whether a recorded TC attachment still runs this
// datapath's program, looking at that one hook only: one BPF_PROG_QUERY
// for TCX, one filter dump for legacy tc. Cheap enough for every port on
// every reconcile (ListAttachments opens every pin). The program counts
// as ours by its tag (the hash of its instructions): a restart loads the
// same build again as new program instances, and the ports' links keep
// running the earlier, identical ones. A program detached by hand, or
// another build's (an upgrade), is not alive: attaching again repairs
// either without a gap.
func (dp *Datapath) Alive(a Attachment) bool {
	prog, attach, _ := dp.tcHook(a.Hook)
	if prog == nil {
		return false
	}
	dp.tagsMu.Lock()
	want, ok := dp.ownTags[prog]
	dp.tagsMu.Unlock()
	if !ok {
		if want, ok = dp.progTag(prog); !ok {
			return false
		}
		dp.tagsMu.Lock()
		if dp.ownTags == nil {
			dp.ownTags = map[*ebpf.Program]string{}
		}
		dp.ownTags[prog] = want
		dp.tagsMu.Unlock()
	}
	var ids []ebpf.ProgramID
	if a.Mode == ModeLegacyTC {
		id, ok := legacyProg(a.Ifindex, a.Hook)
		if !ok {
			return false
		}
		ids = append(ids, id)
	} else {
		var err error
		if ids, err = queryProgIDs(a.Ifindex, attach); err != nil {
			return false
		}
	}
	for _, id := range ids {
		if tag, ok := dp.tagOfID(id); ok && tag == want {
			return true
		}
	}
	return false
}

// progTag is a loaded program's name and tag.
func (dp *Datapath) progTag(prog *ebpf.Program) (string, bool) {
	info, err := prog.Info()
	if err != nil {
		return "", false
	}
	return info.Name + "/" + info.Tag, true
}

// tagOfID is the name and tag of the program with kernel id id, asked once
// per id: the thousands of ports run a handful of program instances.
func (dp *Datapath) tagOfID(id ebpf.ProgramID) (string, bool) {
	dp.tagsMu.Lock()
	defer dp.tagsMu.Unlock()
	if t, ok := dp.tags[id]; ok {
		return t, true
	}
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return "", false
	}
	defer p.Close()
	t, ok := dp.progTag(p)
	if !ok {
		return "", false
	}
	if dp.tags == nil {
		dp.tags = map[ebpf.ProgramID]string{}
	}
	dp.tags[id] = t
	return t, true
}

// attachTC attaches the program of hook h in mode, falling back from TCX
// to legacy tc when the kernel lacks TCX; it returns the mode used.
func (dp *Datapath) attachTC(ifindex int, h Hook, mode Mode) (Mode, error) {
	prog, attach, parent := dp.tcHook(h)
	if mode == ModeTCX {
		err := dp.attachTCX(ifindex, h, prog, attach)
		if errors.Is(err, ebpf.ErrNotSupported) {
			dp.log.Info("TCX not supported by this kernel, using clsact + cls_bpf", "ifindex", ifindex)
			mode = ModeLegacyTC
		} else if err != nil {
			return mode, err
		} else {
			// Both may run for an instant; never neither.
			return mode, removeLegacy(dp.PinDir, ifindex, h)
		}
	}
	if err := dp.attachLegacy(ifindex, h, prog, parent); err != nil {
		return mode, err
	}
	return mode, removeLink(dp.PinDir, ifindex, h)
}

func (dp *Datapath) attachTCX(ifindex int, h Hook, prog *ebpf.Program, attach ebpf.AttachType) error {
	pin := linkPin(dp.PinDir, ifindex, h)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		defer l.Close()
		if linkAlive(l, ifindex) {
			if err := l.Update(prog); err != nil {
				return fmt.Errorf("update %s link on ifindex %d: %w", h, ifindex, err)
			}
			return nil
		}
		// The interface went away (or its index was reused): the link is
		// defunct. Drop the pin and attach afresh.
		_ = l.Unpin()
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: attach})
	if err != nil {
		return fmt.Errorf("attach TCX %s on ifindex %d: %w", h, ifindex, err)
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pin %s link on ifindex %d: %w", h, ifindex, err)
	}
	return nil
}

func linkAlive(l link.Link, ifindex int) bool {
	info, err := l.Info()
	if err != nil {
		return false
	}
	if tcx := info.TCX(); tcx != nil {
		return int(tcx.Ifindex) == ifindex
	}
	if xdp := info.XDP(); xdp != nil {
		return int(xdp.Ifindex) == ifindex
	}
	return false
}

func (dp *Datapath) attachLegacy(ifindex int, h Hook, prog *ebpf.Program, parent uint32) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add clsact qdisc on ifindex %d: %w", ifindex, err)
	}
	info, err := prog.Info()
	if err != nil {
		return fmt.Errorf("program info: %w", err)
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex, Parent: parent, Handle: netlink.MakeHandle(0, 1),
			Protocol: unix.ETH_P_ALL, Priority: 1,
		},
		Fd: prog.FD(), Name: info.Name, DirectAction: true,
	}
	if err := netlink.FilterReplace(filter); err != nil {
		return fmt.Errorf("replace cls_bpf %s filter on ifindex %d: %w", h, ifindex, err)
	}
	pin := linkPin(dp.PinDir, ifindex, h) + legacySuffix
	_ = os.Remove(pin)
	// Pin a clone: Pin on an already pinned *Program moves its pin.
	rec, err := prog.Clone()
	if err != nil {
		return fmt.Errorf("clone program: %w", err)
	}
	defer rec.Close()
	if err := rec.Pin(pin); err != nil {
		return fmt.Errorf("record legacy attachment %s: %w", pin, err)
	}
	return nil
}

func legacyFilter(ifindex int, h Hook) *netlink.BpfFilter {
	parent := uint32(netlink.HANDLE_MIN_INGRESS)
	if h == HookToWorkload || h == Hook6in4Out {
		parent = netlink.HANDLE_MIN_EGRESS
	}
	return &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{
		LinkIndex: ifindex, Parent: parent, Handle: netlink.MakeHandle(0, 1),
		Protocol: unix.ETH_P_ALL, Priority: 1,
	}}
}

// removeLegacy deletes our cls_bpf filter and its record, if any.
func removeLegacy(pinDir string, ifindex int, h Hook) error {
	pin := linkPin(pinDir, ifindex, h) + legacySuffix
	if _, err := os.Stat(pin); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	err := netlink.FilterDel(legacyFilter(ifindex, h))
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete cls_bpf %s filter on ifindex %d: %w", h, ifindex, err)
	}
	if err := os.Remove(pin); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", pin, err)
	}
	return nil
}

// removeLink unpins (and so detaches) a TCX or XDP link.
func removeLink(pinDir string, ifindex int, h Hook) error {
	pin := linkPin(pinDir, ifindex, h)
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", pin, err)
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin %s: %w", pin, err)
	}
	return nil
}

// AttachUplink attaches the XDP prefilter to the uplink, native mode when
// the driver supports it, generic otherwise.
func (dp *Datapath) AttachUplink(ifindex int, opts AttachOptions) (Mode, error) {
	pin := linkPin(dp.PinDir, ifindex, HookUplink)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		defer l.Close()
		if linkAlive(l, ifindex) {
			if err := l.Update(dp.Uplink); err != nil {
				return "", fmt.Errorf("update XDP link on ifindex %d: %w", ifindex, err)
			}
			return xdpMode(ifindex), nil
		}
		_ = l.Unpin()
	}
	modes := []link.XDPAttachFlags{link.XDPDriverMode, link.XDPGenericMode}
	if opts.ForceGenericXDP {
		modes = modes[1:]
	}
	var errs []error
	for _, flags := range modes {
		l, err := link.AttachXDP(link.XDPOptions{Program: dp.Uplink, Interface: ifindex, Flags: flags})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		defer l.Close()
		if err := l.Pin(pin); err != nil {
			return "", fmt.Errorf("pin XDP link on ifindex %d: %w", ifindex, err)
		}
		if flags == link.XDPDriverMode {
			return ModeXDPDriver, nil
		}
		return ModeXDPGeneric, nil
	}
	return "", fmt.Errorf("attach XDP on ifindex %d: %w", ifindex, errors.Join(errs...))
}

// xdpMode asks the kernel how XDP is attached to ifindex (link info does
// not say).
func xdpMode(ifindex int) Mode {
	l, err := netlink.LinkByIndex(ifindex)
	if err == nil && l.Attrs().Xdp != nil && l.Attrs().Xdp.AttachMode == nl.XDP_ATTACHED_SKB {
		return ModeXDPGeneric
	}
	return ModeXDPDriver
}

// Detach removes every attachment of ours on ifindex.
func Detach(pinDir string, ifindex int) error {
	var errs []error
	for _, h := range allHooks {
		errs = append(errs, removeLink(pinDir, ifindex, h), removeLegacy(pinDir, ifindex, h))
	}
	return errors.Join(errs...)
}

// Detach removes this attachment.
func (a Attachment) Detach(pinDir string) error {
	if a.Mode == ModeLegacyTC {
		return removeLegacy(pinDir, a.Ifindex, a.Hook)
	}
	return removeLink(pinDir, a.Ifindex, a.Hook)
}

// ListAttachments reads the attachments recorded under pinDir, sorted by
// interface and hook.
func ListAttachments(pinDir string) []Attachment {
	entries, _ := os.ReadDir(filepath.Join(pinDir, linksDir))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return listAttachments(pinDir, names)
}

// ListRecorded lists the attachments recorded under pinDir from the pin
// names alone, without asking the kernel (Live, ProgID and the XDP mode
// are not filled in; Mode is legacy tc or a link): cheap enough to run
// over thousands of ports on every reconcile.
func ListRecorded(pinDir string) []Attachment {
	entries, _ := os.ReadDir(filepath.Join(pinDir, linksDir))
	out := make([]Attachment, 0, len(entries))
	for _, e := range entries {
		if a, ok := parseRecord(e.Name()); ok {
			out = append(out, a)
		}
	}
	return out
}

// parseRecord reads a pin name of the links directory:
// <ifindex>_<hook>, with legacySuffix for a legacy tc record.
func parseRecord(name string) (Attachment, bool) {
	mode := ModeTCX
	if strings.HasSuffix(name, legacySuffix) {
		mode, name = ModeLegacyTC, strings.TrimSuffix(name, legacySuffix)
	}
	idx, hook, ok := strings.Cut(name, "_")
	ifindex, err := strconv.Atoi(idx)
	if !ok || err != nil {
		return Attachment{}, false
	}
	return Attachment{Ifindex: ifindex, Hook: Hook(hook), Mode: mode}, true
}

// ListAttachmentsOf reads the attachments of one interface.
func ListAttachmentsOf(pinDir string, ifindex int) []Attachment {
	var names []string
	for _, h := range allHooks {
		for _, suffix := range []string{"", legacySuffix} {
			name := fmt.Sprintf("%d_%s%s", ifindex, h, suffix)
			if _, err := os.Stat(filepath.Join(pinDir, linksDir, name)); err == nil {
				names = append(names, name)
			}
		}
	}
	return listAttachments(pinDir, names)
}

func listAttachments(pinDir string, names []string) []Attachment {
	var out []Attachment
	for _, file := range names {
		a, ok := parseRecord(file)
		if !ok {
			continue
		}
		ifindex := a.Ifindex
		path := filepath.Join(pinDir, linksDir, file)
		if a.Mode == ModeLegacyTC {
			if p, err := ebpf.LoadPinnedProgram(path, nil); err == nil {
				if info, err := p.Info(); err == nil {
					a.ProgID, _ = info.ID()
				}
				p.Close()
			}
			a.Live = legacyLive(ifindex, a.Hook)
		} else if l, err := link.LoadPinnedLink(path, nil); err == nil {
			a.Mode = ModeTCX
			if info, err := l.Info(); err == nil {
				a.ProgID = info.Program
				if a.Hook == HookUplink {
					a.Mode = xdpMode(ifindex)
				}
			}
			a.Live = linkAlive(l, ifindex)
			l.Close()
		}
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Ifindex != out[j].Ifindex {
			return out[i].Ifindex < out[j].Ifindex
		}
		return out[i].Hook < out[j].Hook
	})
	return out
}

func legacyLive(ifindex int, h Hook) bool {
	_, ok := legacyProg(ifindex, h)
	return ok
}

// legacyProg is the program of our legacy tc filter for hook h, if the
// filter is there.
func legacyProg(ifindex int, h Hook) (ebpf.ProgramID, bool) {
	f := legacyFilter(ifindex, h)
	// The dump needs only the index: no lookup of the link first.
	filters, err := netlink.FilterList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ifindex}}, f.Parent)
	if err != nil {
		return 0, false
	}
	for _, x := range filters {
		if bf, ok := x.(*netlink.BpfFilter); ok && bf.Handle == f.Handle && bf.Priority == f.Priority {
			return ebpf.ProgramID(bf.Id), true
		}
	}
	return 0, false
}

// UplinkAlive asks the kernel whether ifindex still runs this datapath's
// XDP prefilter (tn_uplink, by tag as Alive): one link query. XDP taken
// off by hand (ip link set dev X xdp off, bpftool net detach) or
// replaced by another program is not alive.
func (dp *Datapath) UplinkAlive(ifindex int) bool {
	if dp.Uplink == nil {
		return false
	}
	want, ok := dp.progTag(dp.Uplink)
	if !ok {
		return false
	}
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil || l.Attrs().Xdp == nil || !l.Attrs().Xdp.Attached {
		return false
	}
	tag, ok := dp.tagOfID(ebpf.ProgramID(l.Attrs().Xdp.ProgId))
	return ok && tag == want
}
