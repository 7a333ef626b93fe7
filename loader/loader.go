// Package loader loads the tenantnet BPF objects, pins their maps,
// programs and links under a bpffs directory, and attaches the programs to
// workload ports (TCX, or clsact + cls_bpf before 6.6) and to the uplink
// (XDP). Loading again over existing pins is an upgrade: maps with the same
// schema are reused (rules and flows kept) and attached programs are
// replaced in place.
package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"

	"github.com/tenantnet/tenantnet/internal/defaults"

	"github.com/cilium/ebpf"
)

// SchemaVersion is the layout version of the pinned maps; it is the _vN
// suffix of every map name and is stored in tn_meta_v1. Keep in sync with
// TN_SCHEMA_VERSION in bpf/lib/common.h (a test checks it).
const SchemaVersion = 1

// DefaultPinDir is where a node's datapath lives.
const DefaultPinDir = defaults.PinDir

const (
	progsDir = "progs"
	linksDir = "links"
)

// ErrSchemaMismatch is returned when the pinned maps were created by a build
// with another schema and no migration to this one exists.
var ErrSchemaMismatch = errors.New("pinned maps have an incompatible schema")

// ErrNotLoaded is returned by Open when no datapath is pinned.
var ErrNotLoaded = errors.New("no tenantnet datapath is loaded")

// Options tune Load.
type Options struct {
	// PinDir is the bpffs directory for maps, programs and links.
	PinDir string
	// Logger receives what the loader decides; slog.Default() when nil.
	Logger *slog.Logger
	// SampleRate for drop events written when the maps are created
	// (1 = every drop, 0 = none). Existing maps keep theirs.
	SampleRate uint32
}

// Datapath is a loaded datapath: every map and program, pinned.
type Datapath struct {
	PinDir  string
	Maps    WorkloadMaps
	Progs   WorkloadPrograms
	Uplink  *ebpf.Program
	WG      *ebpf.Program // tn_from_wg
	log     *slog.Logger
	created bool

	tagsMu  sync.Mutex
	tags    map[ebpf.ProgramID]string // name/tag of attached program ids (Alive)
	ownTags map[*ebpf.Program]string  // name/tag of Progs, WG
}

// addedLater are maps newer builds added to schema 1 without changing any
// existing layout: pins made by an older build lack them until the next
// Load creates them, and readers must cope with their absence.
var addedLater = map[string]bool{"tn_route_v1": true, "tn_wgdev_v1": true}

var mapNameRE = regexp.MustCompile(`^tn_[a-z0-9]+_v([0-9]+)$`)

// checkSchema refuses pins of another schema. The only migration is the
// identity; add entries here (from version -> function) when a layout
// changes, and test the upgrade.
func checkSchema(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("read pin directory: %w", err)
	}
	for _, e := range entries {
		m := mapNameRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		if v, _ := strconv.Atoi(m[1]); v != SchemaVersion {
			return fmt.Errorf("%w: %s is schema v%d, this build uses v%d and has no migration; "+
				"remove %s (rules are restored from the saved state) or run the matching build",
				ErrSchemaMismatch, filepath.Join(dir, e.Name()), v, SchemaVersion, dir)
		}
	}
	meta, err := ebpf.LoadPinnedMap(filepath.Join(dir, "tn_meta_v1"), nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open pinned tn_meta_v1: %w", err)
	}
	defer meta.Close()
	var m WorkloadTnMeta
	if err := meta.Lookup(uint32(0), &m); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if m.SchemaVersion != 0 && m.SchemaVersion != SchemaVersion {
		return fmt.Errorf("%w: tn_meta_v1 says schema %d, this build uses %d",
			ErrSchemaMismatch, m.SchemaVersion, SchemaVersion)
	}
	return nil
}

// Load loads (or upgrades) the datapath pinned at opts.PinDir. Programs
// already attached keep running until Attach* replaces them.
func Load(opts Options) (*Datapath, error) {
	if opts.PinDir == "" {
		opts.PinDir = DefaultPinDir
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := ensureBPFFS(opts.PinDir); err != nil {
		return nil, err
	}
	if err := checkSchema(opts.PinDir); err != nil {
		return nil, err
	}
	_, statErr := os.Stat(filepath.Join(opts.PinDir, "tn_meta_v1"))
	created := errors.Is(statErr, os.ErrNotExist)

	spec, err := LoadWorkload()
	if err != nil {
		return nil, fmt.Errorf("parse workload object: %w", err)
	}
	var objs WorkloadObjects
	copts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opts.PinDir}}
	if err := spec.LoadAndAssign(&objs, copts); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("%w: %v", ErrSchemaMismatch, err)
		}
		return nil, fmt.Errorf("load workload programs: %w", err)
	}
	dp := &Datapath{PinDir: opts.PinDir, Maps: objs.WorkloadMaps, Progs: objs.WorkloadPrograms, log: log, created: created}

	uspec, err := LoadUplink()
	if err != nil {
		dp.Close()
		return nil, fmt.Errorf("parse uplink object: %w", err)
	}
	var uobjs UplinkObjects
	if err := uspec.LoadAndAssign(&uobjs, &ebpf.CollectionOptions{MapReplacements: dp.mapsByName()}); err != nil {
		dp.Close()
		return nil, fmt.Errorf("load uplink program: %w", err)
	}
	uobjs.UplinkMaps.Close() // replaced by ours; these handles are duplicates
	dp.Uplink = uobjs.TnUplink

	wspec, err := LoadWireguard()
	if err != nil {
		dp.Close()
		return nil, fmt.Errorf("parse wireguard object: %w", err)
	}
	var wobjs WireguardObjects
	if err := wspec.LoadAndAssign(&wobjs, &ebpf.CollectionOptions{MapReplacements: dp.mapsByName()}); err != nil {
		dp.Close()
		return nil, fmt.Errorf("load wireguard program: %w", err)
	}
	wobjs.WireguardMaps.Close()
	dp.WG = wobjs.TnFromWg

	if created {
		meta := WorkloadTnMeta{SchemaVersion: SchemaVersion, SampleRate: opts.SampleRate}
		if err := dp.Maps.TnMetaV1.Put(uint32(0), meta); err != nil {
			dp.Close()
			return nil, fmt.Errorf("write tn_meta_v1: %w", err)
		}
		log.Info("created datapath maps", "pin_dir", opts.PinDir, "schema", SchemaVersion)
	} else {
		log.Info("reusing pinned datapath maps", "pin_dir", opts.PinDir, "schema", SchemaVersion)
	}
	if err := dp.pinPrograms(); err != nil {
		dp.Close()
		return nil, err
	}
	return dp, nil
}

func (dp *Datapath) mapsByName() map[string]*ebpf.Map {
	m := dp.Maps
	return map[string]*ebpf.Map{
		"tn_meta_v1": m.TnMetaV1, "tn_ports_v1": m.TnPortsV1, "tn_srcaddr_v1": m.TnSrcaddrV1,
		"tn_prefix_v1": m.TnPrefixV1, "tn_endpoint_v1": m.TnEndpointV1, "tn_tenant_v1": m.TnTenantV1,
		"tn_rhost_v1": m.TnRhostV1, "tn_rdst_v1": m.TnRdstV1, "tn_rsrc_v1": m.TnRsrcV1, "tn_rport_v1": m.TnRportV1,
		"tn_ct_v1": m.TnCtV1, "tn_frag_v1": m.TnFragV1, "tn_stats_v1": m.TnStatsV1,
		"tn_events_v1": m.TnEventsV1, "tn_route_v1": m.TnRouteV1, "tn_wgdev_v1": m.TnWgdevV1,
	}
}

// MapsByName returns every map of the datapath by its pinned name.
func (dp *Datapath) MapsByName() map[string]*ebpf.Map { return dp.mapsByName() }

// Programs returns the programs by name.
func (dp *Datapath) Programs() map[string]*ebpf.Program {
	return map[string]*ebpf.Program{
		"tn_from_workload": dp.Progs.TnFromWorkload,
		"tn_to_workload":   dp.Progs.TnToWorkload,
		"tn_uplink":        dp.Uplink,
		"tn_from_wg":       dp.WG,
	}
}

// pinPrograms (re)pins the programs of this build, replacing older pins so
// that bpftool shows what runs and so that legacy tc filters, which hold
// only a program reference, can be found again.
func (dp *Datapath) pinPrograms() error {
	for name, p := range dp.Programs() {
		path := filepath.Join(dp.PinDir, progsDir, name)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("unpin old %s: %w", name, err)
		}
		if err := p.Pin(path); err != nil {
			return fmt.Errorf("pin %s: %w", name, err)
		}
	}
	return nil
}

// Close releases this process's handles. Pins, and so the datapath, stay.
func (dp *Datapath) Close() error {
	var errs []error
	for _, m := range dp.mapsByName() {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	for _, p := range dp.Programs() {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	return errors.Join(errs...)
}

// Remove detaches every program this datapath attached (as recorded by its
// pins) and deletes the pin directory. It is the explicit cleanup: a
// graceful stop of the node service never calls it.
func Remove(pinDir string) error {
	var errs []error
	for _, a := range ListAttachments(pinDir) {
		if err := a.Detach(pinDir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(pinDir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", pinDir, err))
	}
	return errors.Join(errs...)
}

// OpenMaps opens the pinned maps of a loaded datapath without loading any
// program: what tenantfw needs to edit them. It fails with ErrNotLoaded
// when nothing is pinned at pinDir, and with ErrSchemaMismatch when the
// pins are of another schema.
func OpenMaps(pinDir string) (*WorkloadMaps, error) {
	if _, err := os.Stat(filepath.Join(pinDir, "tn_meta_v1")); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s (start tenantnetd, or run `tenantfw datapath load`)", ErrNotLoaded, pinDir)
	} else if errors.Is(err, os.ErrPermission) {
		return nil, fmt.Errorf("%s: %w (run as root)", pinDir, err)
	}
	if err := checkSchema(pinDir); err != nil {
		return nil, err
	}
	var m WorkloadMaps
	byName := map[string]**ebpf.Map{
		"tn_meta_v1": &m.TnMetaV1, "tn_ports_v1": &m.TnPortsV1, "tn_srcaddr_v1": &m.TnSrcaddrV1,
		"tn_prefix_v1": &m.TnPrefixV1, "tn_endpoint_v1": &m.TnEndpointV1, "tn_tenant_v1": &m.TnTenantV1,
		"tn_rhost_v1": &m.TnRhostV1, "tn_rdst_v1": &m.TnRdstV1, "tn_rsrc_v1": &m.TnRsrcV1, "tn_rport_v1": &m.TnRportV1,
		"tn_ct_v1": &m.TnCtV1, "tn_frag_v1": &m.TnFragV1, "tn_stats_v1": &m.TnStatsV1, "tn_events_v1": &m.TnEventsV1,
		"tn_route_v1": &m.TnRouteV1, "tn_wgdev_v1": &m.TnWgdevV1,
	}
	for name, dst := range byName {
		mp, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), nil)
		if errors.Is(err, os.ErrNotExist) && addedLater[name] {
			continue // pinned by an older build of this schema; Load adds it
		}
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("open pinned %s: %w", name, err)
		}
		*dst = mp
	}
	// A same-named pin of another layout must never be written through.
	// Comparing sizes with the generated types is enough here (and saves
	// parsing the BPF object on every CLI start): Load checks the rest.
	for _, c := range []struct {
		m          *ebpf.Map
		key, value any
	}{
		{m.TnPortsV1, uint32(0), WorkloadTnPort{}}, {m.TnSrcaddrV1, WorkloadTnSrcaddrKey{}, uint32(0)},
		{m.TnPrefixV1, WorkloadTnPrefixKey{}, uint32(0)}, {m.TnEndpointV1, WorkloadTnEndpointKey{}, WorkloadTnEndpoint{}},
		{m.TnTenantV1, uint32(0), WorkloadTnTenant{}}, {m.TnRhostV1, WorkloadTnRhostKey{}, WorkloadTnRdstVal{}},
		{m.TnRdstV1, WorkloadTnRdstKey{}, WorkloadTnRdstVal{}}, {m.TnRsrcV1, WorkloadTnRsrcKey{}, WorkloadTnRsrcVal{}},
		{m.TnRportV1, WorkloadTnRportKey{}, WorkloadTnRportVal{}}, {m.TnCtV1, WorkloadTnCtKey{}, WorkloadTnCtVal{}},
		{m.TnFragV1, WorkloadTnFragKey{}, WorkloadTnFragVal{}}, {m.TnStatsV1, WorkloadTnStatsKey{}, WorkloadTnStatsVal{}},
		{m.TnMetaV1, uint32(0), WorkloadTnMeta{}},
		{m.TnRouteV1, WorkloadTnRouteKey{}, WorkloadTnRoute{}}, {m.TnWgdevV1, uint32(0), WorkloadTnPort{}},
	} {
		if c.m == nil {
			continue // addedLater and not pinned yet
		}
		if int(c.m.KeySize()) != binary.Size(c.key) || int(c.m.ValueSize()) != binary.Size(c.value) {
			m.Close()
			return nil, fmt.Errorf("%w: %s has key/value sizes %d/%d, this build uses %d/%d", ErrSchemaMismatch,
				c.m.String(), c.m.KeySize(), c.m.ValueSize(), binary.Size(c.key), binary.Size(c.value))
		}
	}
	return &m, nil
}

// Open returns the pinned datapath (maps and programs) without loading
// anything: for attaching more ports to a running datapath.
func Open(pinDir string) (*Datapath, error) {
	wm, err := OpenMaps(pinDir)
	if err != nil {
		return nil, err
	}
	dp := &Datapath{PinDir: pinDir, Maps: *wm, log: slog.Default()}
	for name, dst := range map[string]**ebpf.Program{
		"tn_from_workload": &dp.Progs.TnFromWorkload, "tn_to_workload": &dp.Progs.TnToWorkload, "tn_uplink": &dp.Uplink,
		"tn_from_wg": &dp.WG,
	} {
		p, err := ebpf.LoadPinnedProgram(filepath.Join(pinDir, progsDir, name), nil)
		if errors.Is(err, os.ErrNotExist) && name == "tn_from_wg" {
			continue // pinned by an older build
		}
		if err != nil {
			dp.Close()
			return nil, fmt.Errorf("open pinned program %s: %w", name, err)
		}
		*dst = p
	}
	return dp, nil
}
