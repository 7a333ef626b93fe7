// Package firewall keeps the pinned datapath maps and the saved state in
// /var/lib/tenantnet in agreement. Every change goes through the same
// steps, under an exclusive flock on the state directory (so tenantfw and
// tenantnetd never interleave):
//
//  1. validate the change completely; on any error nothing is touched;
//  2. commit it to the store together with a "dirty" mark (fsync);
//  3. write the difference to the maps (deeper stages first, see bpfmaps.Diff);
//  4. clear the mark.
//
// A crash between 2 and 4 leaves the mark; the next Open sees it and
// rebuilds the maps from the store (Reconcile). A crash before 2 changed
// nothing. So after any crash, maps and state agree again at the next
// start of either tool. After a reboot bpffs is empty: loading the
// datapath calls Reconcile, which restores everything.
package firewall

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/tenantnet/tenantnet/internal/defaults"

	"golang.org/x/sys/unix"

	"github.com/tenantnet/tenantnet/bpfmaps"
	"github.com/tenantnet/tenantnet/firewall/internal/store"
	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
)

// DefaultStateDir is where the node keeps its state.
const DefaultStateDir = defaults.StateDir

// ErrUnknownTenant is returned for a tenant that was never added.
var ErrUnknownTenant = errors.New("unknown tenant")

// Options locate the state and the datapath.
type Options struct {
	StateDir string
	PinDir   string
	// LockTimeout bounds the wait for another writer.
	LockTimeout time.Duration
	Logger      *slog.Logger
	// NoDatapath opens only the store (for commands that work without a
	// loaded datapath, and to restore before loading).
	NoDatapath bool
	// Maps, if set, are the datapath's maps already open in this process
	// (tenantnetd): used instead of opening the pins, and not closed.
	Maps *bpfmaps.Maps
	// RulesOnly opens only the rule stages (a one-rule change: AddRule,
	// DeleteRule, FindRule and reads). Anything else, and every repair
	// of the maps, opens the others first.
	RulesOnly bool
}

// Firewall is an open, locked state directory and its datapath maps.
type Firewall struct {
	st         *store.Store
	Maps       *bpfmaps.Maps // nil with NoDatapath
	log        *slog.Logger
	lock       *os.File
	dir        string // the state directory
	pinDir     string
	borrowMaps bool
	rulesOnly  bool // only the rule stages are open (Options.RulesOnly)
}

// ruleMaps are the pins a rule change writes (bpfmaps.Maps.Rules).
var ruleMaps = []string{"tn_rhost_v1", "tn_rdst_v1", "tn_rsrc_v1", "tn_rport_v1"}

// Lock takes the state directory's writer lock.
func Lock(dir string, timeout time.Duration) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, fmt.Errorf("%s is held by another writer (tenantfw or tenantnetd) for more than %s", path, timeout)
			}
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Open locks the state directory, opens the store and the pinned maps,
// and repairs the maps if a previous update was interrupted.
func Open(opts Options) (*Firewall, error) {
	if opts.StateDir == "" {
		opts.StateDir = DefaultStateDir
	}
	if opts.PinDir == "" {
		opts.PinDir = loader.DefaultPinDir
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	lock, err := Lock(opts.StateDir, opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(opts.StateDir)
	if err != nil {
		lock.Close()
		return nil, err
	}
	fw := &Firewall{st: st, log: log, lock: lock, dir: opts.StateDir, pinDir: opts.PinDir}
	if !opts.NoDatapath {
		if opts.Maps != nil {
			fw.Maps, fw.borrowMaps = opts.Maps, true
		} else {
			var only []string
			if opts.RulesOnly {
				only, fw.rulesOnly = ruleMaps, true
			}
			wm, err := loader.OpenSomeMaps(opts.PinDir, only)
			if err != nil {
				fw.Close()
				return nil, err
			}
			fw.Maps = bpfmaps.FromMaps(wm)
		}
		if fw.dirty() {
			log.Warn("a previous update of the maps was interrupted: reconciling them from the saved state")
			if err := fw.Reconcile(); err != nil {
				fw.Close()
				return nil, fmt.Errorf("reconcile after interrupted update: %w", err)
			}
		}
	}
	return fw, nil
}

// allMaps opens the maps Options.RulesOnly left closed: every change but
// a rule's, and every repair, may write any of them.
func (fw *Firewall) allMaps() error {
	if !fw.rulesOnly {
		return nil
	}
	wm, err := loader.OpenMaps(fw.pinDir)
	if err != nil {
		return err
	}
	fw.Maps.Raw().Close()
	fw.Maps, fw.rulesOnly = bpfmaps.FromMaps(wm), false
	return nil
}

// Close releases the maps, the store and the lock.
func (fw *Firewall) Close() error {
	var errs []error
	if fw.Maps != nil && !fw.borrowMaps {
		errs = append(errs, fw.Maps.Raw().Close())
	}
	if fw.st != nil {
		errs = append(errs, fw.st.Close())
	}
	if fw.lock != nil {
		errs = append(errs, fw.lock.Close()) // closing drops the flock
	}
	return errors.Join(errs...)
}

// change applies one update to the store and the maps, all or nothing:
//
//  1. mark the maps dirty (setDirty: a byte of the lock file);
//  2. in one store transaction: change the store, write the maps, commit;
//  3. clear the mark;
//  4. if the maps could not be written (a full map, say) or the commit
//     failed, the transaction is rolled back and the maps are rebuilt from
//     the unchanged store.
//
// A crash at any point leaves either the old store with the mark (the next
// Open rebuilds the maps from it) or the new store (with or without the
// mark: rebuilding then changes nothing). The mark is not fsynced: it only
// has to outlive the process (the page cache does that), since the maps
// it speaks of are in bpffs and do not outlive a reboot, after which
// loading the datapath rebuilds them anyway. A store record cost one more
// fsynced commit per change.
func (fw *Firewall) change(storePart func(*store.Tx) error, mapPart func() error) error {
	if err := fw.allMaps(); err != nil {
		return err
	}
	return fw.changeMaps(storePart, mapPart)
}

// changeMaps is change with the maps open as they are: for a rule change,
// which writes only the rule stages (Options.RulesOnly).
func (fw *Firewall) changeMaps(storePart func(*store.Tx) error, mapPart func() error) error {
	if fw.Maps == nil {
		return fw.st.Update(storePart)
	}
	if err := fw.setDirty(); err != nil {
		return err
	}
	mapsTouched := false
	err := fw.st.Update(func(tx *store.Tx) error {
		if err := storePart(tx); err != nil {
			return err
		}
		mapsTouched = true
		return mapPart()
	})
	if err == nil {
		fw.clearDirty()
		return nil
	}
	if !mapsTouched {
		// Rejected before any map was written: just clear the mark.
		fw.clearDirty()
		return err
	}
	if rerr := fw.Reconcile(); rerr != nil {
		return fmt.Errorf("%w; restoring the maps from the saved state also failed (the next run retries): %v", err, rerr)
	}
	return fmt.Errorf("%w (nothing was changed)", err)
}

// The mark that an update of the maps may have been interrupted (see
// change) is the first byte of the lock file, which every writer holds
// open and flocked: markDirty while an update is under way, markClean (or
// an empty file) otherwise. Setting and clearing it are two one-byte
// writes to a file already open; the mark file it replaces (created and
// removed in the state directory, 0.3 ms each on this ext4) cost as much
// as the store's two fdatasyncs (BENCHMARKS.md, "Where the time of a rule
// change goes").
const (
	markDirty = '1'
	markClean = '0'
)

// legacyDirtyFile is the mark of builds before the lock file held it:
// still honoured (and removed by Reconcile), as is their older mark in the
// store (store.Tx.Dirty).
const legacyDirtyFile = "maps-dirty"

func (fw *Firewall) setDirty() error {
	if _, err := fw.lock.WriteAt([]byte{markDirty}, 0); err != nil {
		return fmt.Errorf("mark the maps dirty in %s: %w", fw.lock.Name(), err)
	}
	return nil
}

// clearDirty clears the mark; a mark left behind (the write failed) only
// makes the next Open reconcile.
func (fw *Firewall) clearDirty() {
	if _, err := fw.lock.WriteAt([]byte{markClean}, 0); err != nil {
		fw.log.Warn("could not clear the dirty mark of the maps: the next run reconciles them", "file", fw.lock.Name(), "err", err)
	}
}

// dirty reports whether an update of the maps may have been interrupted,
// by this build or an older one.
func (fw *Firewall) dirty() bool {
	var b [1]byte
	if n, _ := fw.lock.ReadAt(b[:], 0); n == 1 && b[0] != markClean {
		// Anything but the clean mark: a file this build did not write
		// is repaired rather than trusted.
		return true
	}
	if _, err := os.Stat(filepath.Join(fw.dir, legacyDirtyFile)); err == nil {
		return true
	}
	var d bool
	_ = fw.st.View(func(tx *store.Tx) error { d = tx.Dirty(); return nil })
	return d
}

func (fw *Firewall) knownTenant(tx *store.Tx, id uint32) (store.Tenant, error) {
	tn, err := tx.Tenant(id)
	if errors.Is(err, store.ErrNotFound) {
		return tn, fmt.Errorf("tenant %d: %w (add it with `tenantfw tenant add --tenant %d`)", id, ErrUnknownTenant, id)
	}
	return tn, err
}

// AddTenant creates or updates a tenant: its prefixes (for isolation) and
// default policy.
func (fw *Firewall) AddTenant(tn store.Tenant) error {
	if tn.ID == 0 {
		return &policy.FieldError{Field: "tenant", Value: "0", Msg: "tenant ids start at 1"}
	}
	if tn.Inbound == policy.ActionNone {
		tn.Inbound = policy.DefaultPolicy.Inbound
	}
	if tn.Outbound == policy.ActionNone {
		tn.Outbound = policy.DefaultPolicy.Outbound
	}
	var old store.Tenant
	return fw.change(func(tx *store.Tx) error {
		others, err := tx.Tenants()
		if err != nil {
			return err
		}
		for _, o := range others {
			if o.ID == tn.ID {
				old = o
				continue
			}
			for _, p := range tn.Prefixes {
				for _, q := range o.Prefixes {
					if p.Overlaps(q) {
						return &policy.FieldError{Field: "prefix", Value: p.String(), Msg: fmt.Sprintf("overlaps %s of tenant %d", q, o.ID)}
					}
				}
			}
		}
		return tx.PutTenant(tn)
	}, func() error {
		for _, p := range tn.Prefixes {
			if err := fw.Maps.SetTenantPrefix(p, tn.ID); err != nil {
				return err
			}
		}
		for _, p := range old.Prefixes {
			if !containsPrefix(tn.Prefixes, p) {
				if err := fw.Maps.DeleteTenantPrefix(p); err != nil {
					return err
				}
			}
		}
		return fw.Maps.SetPolicy(tn.ID, tn.Policy())
	})
}

func containsPrefix(ps []netip.Prefix, p netip.Prefix) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// SetPolicy sets a known tenant's default policy; ActionNone keeps a side.
func (fw *Firewall) SetPolicy(id uint32, p policy.TenantPolicy) error {
	var tn store.Tenant
	return fw.change(func(tx *store.Tx) error {
		var err error
		if tn, err = fw.knownTenant(tx, id); err != nil {
			return err
		}
		if p.Inbound != policy.ActionNone {
			tn.Inbound = p.Inbound
		}
		if p.Outbound != policy.ActionNone {
			tn.Outbound = p.Outbound
		}
		return tx.PutTenant(tn)
	}, func() error { return fw.Maps.SetPolicy(id, tn.Policy()) })
}

// partial compiles the nodes a change at dst touches, from the rules the
// store holds now.
func partial(tx *store.Tx, tenant uint32, dir policy.Direction, dst netip.Prefix) (*bpfmaps.Compiled, []netip.Prefix, error) {
	containing, inside, err := tx.RulesAround(tenant, dir, dst)
	if err != nil {
		return nil, nil, err
	}
	targets := []netip.Prefix{dst}
	seen := map[netip.Prefix]bool{dst: true}
	for _, r := range inside {
		if !seen[r.Dst] {
			seen[r.Dst] = true
			targets = append(targets, r.Dst)
		}
	}
	c, err := bpfmaps.CompilePartial(tenant, dir, append(containing, inside...), targets)
	return c, targets, err
}

// AddRule validates and adds one rule (its id is assigned) and applies it.
func (fw *Firewall) AddRule(r policy.Rule) (policy.Rule, bpfmaps.Change, error) {
	r.ID = 0
	if err := r.Validate(); err != nil {
		return r, bpfmaps.Change{}, err
	}
	change, err := fw.changeRule(func(tx *store.Tx) (policy.Rule, error) {
		_, err := fw.knownTenant(tx, r.Tenant)
		return r, err
	}, func(tx *store.Tx) (err error) {
		r, err = tx.AddRule(r)
		return err
	})
	return r, change, err
}

// DeleteRule removes one of the tenant's rules by id; a rule with an
// owner is refused (OwnedRuleError): its owner removes it, with
// DeleteOwnedRule.
func (fw *Firewall) DeleteRule(id uint32) (policy.Rule, bpfmaps.Change, error) {
	return fw.deleteRule(id, "")
}

// DeleteOwnedRule removes a rule of owner's by id (tenantnetd's "same
// network" rules when a member leaves).
func (fw *Firewall) DeleteOwnedRule(owner string, id uint32) (policy.Rule, bpfmaps.Change, error) {
	return fw.deleteRule(id, owner)
}

// OwnedRuleError refuses a tenant's change of a rule someone else keeps.
type OwnedRuleError struct{ Rule policy.Rule }

func (e *OwnedRuleError) Error() string {
	return fmt.Sprintf("rule %d (%s) is kept by %s: it goes with what it was added for, not by hand", e.Rule.ID, e.Rule, e.Rule.Owner)
}

func (fw *Firewall) deleteRule(id uint32, owner string) (policy.Rule, bpfmaps.Change, error) {
	var r policy.Rule
	change, err := fw.changeRule(func(tx *store.Tx) (policy.Rule, error) {
		var err error
		if r, err = tx.Rule(id); err != nil {
			return r, err
		}
		if r.Owner != owner {
			return r, &OwnedRuleError{Rule: r}
		}
		return r, nil
	}, func(tx *store.Tx) error {
		_, err := tx.DeleteRule(id)
		return err
	})
	return r, change, err
}

// changeRule adds or deletes one rule: find names the rule (and refuses
// the change if it must), mutate changes the store. The maps get the
// difference of the nodes around the rule's destination, compiled before
// and after the change.
func (fw *Firewall) changeRule(find func(*store.Tx) (policy.Rule, error), mutate func(*store.Tx) error) (bpfmaps.Change, error) {
	var change bpfmaps.Change
	var before, after *bpfmaps.Compiled
	err := fw.changeMaps(func(tx *store.Tx) error {
		r, err := find(tx)
		if err != nil {
			return err
		}
		if before, _, err = partial(tx, r.Tenant, r.Dir, r.Dst); err != nil {
			return err
		}
		if err := mutate(tx); err != nil {
			return err
		}
		after, _, err = partial(tx, r.Tenant, r.Dir, r.Dst)
		return err
	}, func() error {
		var err error
		change, err = bpfmaps.Diff(fw.Maps.Rules(), before, after)
		return err
	})
	return change, err
}

// FindRule returns the stored rule with the selector of m.
func (fw *Firewall) FindRule(m policy.Match) (policy.Rule, error) {
	var r policy.Rule
	err := fw.st.View(func(tx *store.Tx) error {
		var ok bool
		var err error
		r, ok, err = tx.RuleByMatch(m)
		if err == nil && !ok {
			err = fmt.Errorf("no rule matches: %w", store.ErrNotFound)
		}
		return err
	})
	return r, err
}

// TenantRules is a tenant's desired rule set (ids are ignored).
type TenantRules struct {
	Tenant uint32
	Policy *policy.TenantPolicy
	Rules  []policy.Rule
}

// ApplyResult says what Apply did.
type ApplyResult struct {
	Tenants           int
	Kept, Added, Gone int
	Maps              bpfmaps.Change
}

// Apply replaces the rule sets (and policies, when given) of the listed
// tenants; with prune, every other tenant's rules are flushed too. The
// whole input is validated first: if anything is invalid, nothing is
// applied. Rules that stay keep their ids and their map entries are never
// rewritten, so their flows see no gap. Owned rules (tenantnetd's) are
// not part of a tenant's set: they stay, and a rule of the set with their
// match and another action is refused.
func (fw *Firewall) Apply(sets []TenantRules, prune bool) (ApplyResult, error) {
	var res ApplyResult
	seenTenant, all, err := checkSets(sets)
	if err != nil {
		return res, err
	}
	// The rules are validated as a set while the store works out the
	// difference; nothing reaches the maps (nor is committed) before the
	// answer, and an invalid input is reported as before: first, with
	// nothing applied.
	valid := make(chan error, 1)
	go func() { valid <- policy.ValidateSet(all) }()
	var verr error
	validated := false
	waitValid := func() error {
		if !validated {
			verr, validated = <-valid, true
		}
		return verr
	}
	var oldRules, newRules, pending []policy.Rule
	var policies []store.Tenant
	var tx *store.Tx // the change's: mapPart runs inside it
	err = fw.change(func(t *store.Tx) error {
		tx = t
		err := fw.applyStore(tx, sets, prune, seenTenant, &res, &oldRules, &newRules, &pending, &policies)
		if verr := waitValid(); verr != nil {
			return verr
		}
		return err
	}, func() error {
		// Storing the new rules (bbolt inserts) and compiling and writing
		// them to the maps need nothing of each other: both run at once,
		// in the same transaction, which commits only if both succeed.
		stored := make(chan error, 1)
		go func() { stored <- tx.PutNewRules(pending) }()
		err := fw.applyMaps(oldRules, newRules, policies, &res)
		return errors.Join(err, <-stored)
	})
	if verr := waitValid(); verr != nil {
		return ApplyResult{}, verr
	}
	return res, err
}

// applyStore is the store's part of Apply: the tenants' policies and the
// difference of their rule sets; the new rules get ids and are left in
// pending, stored by the maps' part (or here, without a datapath).
func (fw *Firewall) applyStore(tx *store.Tx, sets []TenantRules, prune bool, seenTenant map[uint32]bool, res *ApplyResult,
	oldRules, newRules, pending *[]policy.Rule, policies *[]store.Tenant) error {
	{
		targets := sets
		if prune {
			tenants, err := tx.Tenants()
			if err != nil {
				return err
			}
			for _, tn := range tenants {
				if !seenTenant[tn.ID] {
					targets = append(targets, TenantRules{Tenant: tn.ID})
				}
			}
		}
		for _, ts := range targets {
			tn, err := fw.knownTenant(tx, ts.Tenant)
			if err != nil {
				return err
			}
			res.Tenants++
			if ts.Policy != nil {
				if ts.Policy.Inbound != policy.ActionNone {
					tn.Inbound = ts.Policy.Inbound
				}
				if ts.Policy.Outbound != policy.ActionNone {
					tn.Outbound = ts.Policy.Outbound
				}
				if err := tx.PutTenant(tn); err != nil {
					return err
				}
				*policies = append(*policies, tn)
			}
			was, is, added, err := diffTenant(tx, ts, res)
			if err != nil {
				return err
			}
			*oldRules, *newRules = append(*oldRules, was...), append(*newRules, is...)
			*pending = append(*pending, added...)
		}
		if fw.Maps == nil {
			return tx.PutNewRules(*pending) // no mapPart
		}
		return nil
	}
}

// applyMaps writes the difference between the compiled old and new rule
// sets, and the policies.
func (fw *Firewall) applyMaps(oldRules, newRules []policy.Rule, policies []store.Tenant, res *ApplyResult) error {
	// Both sets are valid: the old one is what the store held (each
	// change to it was validated), the new one the validated input with
	// the owned rules it was checked against (diffTenant) and the ids the
	// store gave.
	before, err := bpfmaps.CompileValidated(oldRules)
	if err != nil {
		return err
	}
	after, err := bpfmaps.CompileValidated(newRules)
	if err != nil {
		return err
	}
	if res.Maps, err = bpfmaps.Diff(fw.Maps.Rules(), before, after); err != nil {
		return err
	}
	for _, tn := range policies {
		if err := fw.Maps.SetPolicy(tn.ID, tn.Policy()); err != nil {
			return err
		}
	}
	return nil
}

// checkSets checks the input of Apply before anything is touched: every
// tenant listed once, every rule inside its tenant and not owned. It
// returns the tenants listed and all rules, numbered by their place in
// the input, for policy.ValidateSet (all rules valid together).
func checkSets(sets []TenantRules) (map[uint32]bool, []policy.Rule, error) {
	n := 0
	for _, ts := range sets {
		n += len(ts.Rules)
	}
	all := make([]policy.Rule, 0, n)
	listed := map[uint32]bool{}
	id := uint32(1)
	for _, ts := range sets {
		if listed[ts.Tenant] {
			return nil, nil, fmt.Errorf("tenant %d is listed twice", ts.Tenant)
		}
		listed[ts.Tenant] = true
		for _, r := range ts.Rules {
			if r.Tenant != ts.Tenant {
				return nil, nil, fmt.Errorf("rule %s is inside tenant %d", r, ts.Tenant)
			}
			if r.Owner != "" {
				return nil, nil, fmt.Errorf("rule %s: a tenant's rule set has no owned rules (owner %s)", r, r.Owner)
			}
			r.ID = id // its place in the input, which the errors name ("rule 3: ...")
			id++
			all = append(all, r)
		}
	}
	return listed, all, nil
}

// diffTenant makes the store hold exactly the rules of ts for its tenant:
// a stored rule with the same match and action stays (its id, so its map
// entries, unchanged; only its comment follows), the others go, the new
// ones are added. It returns the tenant's rules before and after, and
// counts into res. The rules it adds (in is, with their ids) are not
// stored yet: added are for tx.PutNewRules.
func diffTenant(tx *store.Tx, ts TenantRules, res *ApplyResult) (was, is, added []policy.Rule, err error) {
	was, err = tx.Rules(ts.Tenant)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(was) == 0 {
		// Nothing stored to keep or delete: every rule is new (the set
		// has no two of a match, ValidateSet says so before anything is
		// committed). The map below was a fifth of loading 100,000 rules.
		added, err = tx.NewRuleIDs(ts.Rules)
		if err != nil {
			return nil, nil, nil, err
		}
		res.Added += len(added)
		return was, added, added, nil
	}
	// The stored rules indexed by their match, and each wanted rule's
	// stored counterpart (haveOf, -1: none): the index is of the stored
	// set, which a growing set (make bench's 10,000 to 100,000) has far
	// fewer of; indexing the wanted set took 100,000 map inserts and a
	// second lookup of every wanted rule.
	have := make(map[policy.Match]int32, len(was))
	for i, h := range was {
		have[h.Match()] = int32(i)
	}
	wantOf := make([]int32, len(was)) // the wanted rule's index + 1; 0: not wanted
	haveOf := make([]int32, len(ts.Rules))
	for j, r := range ts.Rules {
		i, ok := have[r.Match()]
		if !ok {
			haveOf[j] = -1
			continue
		}
		haveOf[j] = i
		wantOf[i] = int32(j) + 1
	}
	kept := make([]bool, len(was))
	keptWanted := 0 // kept rules the set names: not added again
	var gone []policy.Rule
	for i, h := range was {
		ok := wantOf[i] > 0
		if ok {
			keptWanted++ // undone below if it goes
		}
		var w policy.Rule
		if ok {
			w = ts.Rules[wantOf[i]-1]
		}
		switch {
		case h.Owner != "":
			// Not the tenant's to change: it stays as it is. The same
			// rule in the set is already there; another action for its
			// match is a conflict the tenant must hear about.
			if ok && w.Action != h.Action {
				return nil, nil, nil, fmt.Errorf("rule %s conflicts with %w", w, &OwnedRuleError{Rule: h})
			}
			kept[i] = true
			res.Kept++
			is = append(is, h)
		case ok && w.Action == h.Action:
			if w.Comment != h.Comment {
				if err := tx.UpdateComment(h.ID, w.Comment); err != nil {
					return nil, nil, nil, err
				}
			}
			kept[i] = true
			res.Kept++
			h.Comment = w.Comment
			is = append(is, h)
		default:
			if ok {
				keptWanted--
			}
			gone = append(gone, h)
		}
	}
	if err := tx.DeleteStoredRules(gone); err != nil {
		return nil, nil, nil, err
	}
	res.Gone += len(gone)
	fresh := make([]policy.Rule, 0, len(ts.Rules)-keptWanted)
	for j, r := range ts.Rules {
		// New, or its match's stored rule goes (another action). A
		// match twice in the set (ValidateSet refuses the set, and this
		// answer with it) adds the copy a kept rule did not take.
		if i := haveOf[j]; i < 0 || !kept[i] || wantOf[i] != int32(j)+1 {
			fresh = append(fresh, r)
		}
	}
	added, err = tx.NewRuleIDs(fresh)
	if err != nil {
		return nil, nil, nil, err
	}
	res.Added += len(added)
	return was, append(is, added...), added, nil
}

// Flush removes every rule of a tenant.
func (fw *Firewall) Flush(tenant uint32) (ApplyResult, error) {
	return fw.Apply([]TenantRules{{Tenant: tenant}}, false)
}

// Reconcile makes the maps equal to the store: rules (by a diff against
// what the kernel holds), tenant prefixes and policies. It is what runs
// after an interrupted update and after the datapath is loaded on an
// empty bpffs.
func (fw *Firewall) Reconcile() error {
	if err := fw.allMaps(); err != nil {
		return fmt.Errorf("open the maps to reconcile: %w", err)
	}
	var rules []policy.Rule
	var tenants []store.Tenant
	if err := fw.st.View(func(tx *store.Tx) error {
		var err error
		if rules, err = tx.Rules(0); err != nil {
			return err
		}
		tenants, err = tx.Tenants()
		return err
	}); err != nil {
		return err
	}
	want, err := bpfmaps.Compile(rules)
	if err != nil {
		return fmt.Errorf("saved rules do not compile: %w", err)
	}
	have, err := bpfmaps.ReadRules(fw.Maps.Rules())
	if err != nil {
		return err
	}
	ch, err := bpfmaps.Diff(fw.Maps.Rules(), have, want)
	if err != nil {
		return err
	}
	if err := fw.Maps.SyncTenants(toMapTenants(tenants)); err != nil {
		return err
	}
	if ch != (bpfmaps.Change{}) {
		fw.log.Info("reconciled rule maps with the saved state", "change", ch.String(), "rules", len(rules))
	}
	var old bool // the mark of an older build
	_ = fw.st.View(func(tx *store.Tx) error { old = tx.Dirty(); return nil })
	if old {
		if err := fw.st.Update(func(tx *store.Tx) error { return tx.SetDirty(false) }); err != nil {
			return err
		}
	}
	if err := os.Remove(filepath.Join(fw.dir, legacyDirtyFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove the mark of an older build: %w", err)
	}
	fw.clearDirty()
	return nil
}

func toMapTenants(ts []store.Tenant) map[uint32]bpfmaps.TenantState {
	out := map[uint32]bpfmaps.TenantState{}
	for _, t := range ts {
		out[t.ID] = bpfmaps.TenantState{Policy: t.Policy(), Prefixes: t.Prefixes}
	}
	return out
}

// DeleteTenant removes a tenant: its rules, prefixes and policy.
func (fw *Firewall) DeleteTenant(id uint32) error {
	var tn store.Tenant
	var rules []policy.Rule
	return fw.change(func(tx *store.Tx) error {
		var err error
		if tn, err = fw.knownTenant(tx, id); err != nil {
			return err
		}
		ports, err := tx.Ports()
		if err != nil {
			return err
		}
		for _, p := range ports {
			if p.Tenant == id {
				return fmt.Errorf("tenant %d still has port %s bound: detach it first", id, p.Ifname)
			}
		}
		if rules, err = tx.Rules(id); err != nil {
			return err
		}
		return tx.DeleteTenant(id)
	}, func() error {
		before, err := bpfmaps.Compile(rules)
		if err != nil {
			return err
		}
		if _, err := bpfmaps.Diff(fw.Maps.Rules(), before, bpfmaps.NewCompiled()); err != nil {
			return err
		}
		for _, p := range tn.Prefixes {
			if err := fw.Maps.DeleteTenantPrefix(p); err != nil {
				return err
			}
		}
		return fw.Maps.DeletePolicy(id)
	})
}

// BindPort records a port binding and writes it to the maps.
func (fw *Firewall) BindPort(p store.Port, ifindex uint32) error {
	return fw.BindPorts([]PortBinding{{Port: p, Ifindex: ifindex}})
}

// PortBinding is a port to bind with its current ifindex.
type PortBinding struct {
	Port    store.Port
	Ifindex uint32
}

// BindPorts records and writes many bindings in one change (one lock, two
// fsyncs): what a reconcile run after a reboot needs.
func (fw *Firewall) BindPorts(ps []PortBinding) error {
	if len(ps) == 0 {
		return nil
	}
	return fw.change(func(tx *store.Tx) error {
		for _, p := range ps {
			tn, err := fw.knownTenant(tx, p.Port.Tenant)
			if err != nil {
				return err
			}
			for _, a := range p.Port.Addrs {
				// A port's own link-local (LinkLocal): one address, in
				// no tenant's prefix.
				inside := len(tn.Prefixes) == 0 || a.Addr().IsLinkLocalUnicast() && a.IsSingleIP()
				for _, tp := range tn.Prefixes {
					inside = inside || (tp.Contains(a.Addr()) && tp.Bits() <= a.Bits())
				}
				if !inside {
					return &policy.FieldError{Field: "addr", Value: a.String(), Msg: fmt.Sprintf("outside the prefixes of tenant %d", p.Port.Tenant)}
				}
			}
			if err := tx.PutPort(p.Port); err != nil {
				return err
			}
		}
		return nil
	}, func() error {
		for _, p := range ps {
			if err := fw.Maps.BindPort(bpfmaps.PortBinding{Ifindex: p.Ifindex, Tenant: p.Port.Tenant, Addrs: p.Port.Addrs}); err != nil {
				return err
			}
		}
		return nil
	})
}

// UnbindPort forgets a port binding.
func (fw *Firewall) UnbindPort(ifname string, ifindex uint32) error {
	return fw.change(func(tx *store.Tx) error { return tx.DeletePort(ifname) },
		func() error { return fw.Maps.UnbindPort(ifindex) })
}

// EnsureTenant declares a tenant with its prefixes, keeping the policy it
// already has (tenantnetd calls this for every network, at every start).
func (fw *Firewall) EnsureTenant(id uint32, name string, prefixes []netip.Prefix) error {
	var tn store.Tenant
	err := fw.st.View(func(tx *store.Tx) error {
		var err error
		tn, err = tx.Tenant(id)
		return err
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		tn = store.Tenant{ID: id}
	case err != nil:
		return err
	}
	tn.Name, tn.Prefixes = name, prefixes
	return fw.AddTenant(tn)
}

// SetSameNetwork turns a tenant's "same network" rules (tenantnetd's, one
// per prefix of the tenant) off or on again, in one change: off removes
// them and records it on the tenant, so tenantnetd adds none back (at a
// restart, when members change); on adds one per prefix the tenant has.
func (fw *Firewall) SetSameNetwork(id uint32, on bool) (bpfmaps.Change, error) {
	var before, after []policy.Rule
	var change bpfmaps.Change
	err := fw.change(func(tx *store.Tx) error {
		tn, err := fw.knownTenant(tx, id)
		if err != nil {
			return err
		}
		if before, err = tx.Rules(id); err != nil {
			return err
		}
		tn.NoSameNetwork = !on
		if err := tx.PutTenant(tn); err != nil {
			return err
		}
		have := map[netip.Prefix]bool{}
		for _, r := range before {
			if r.Owner != policy.OwnerNode {
				continue
			}
			if !on {
				if _, err := tx.DeleteRule(r.ID); err != nil {
					return err
				}
				continue
			}
			have[r.Src] = true
		}
		if on {
			var add []policy.Rule
			for _, p := range tn.Prefixes {
				// A /96 of IPv6 is an IPv4 proxy's (node/proxy96.go):
				// its dials are the internet's, never "same network".
				if !have[p] && !(p.Addr().Is6() && !p.Addr().Is4In6() && p.Bits() == 96) {
					add = append(add, policy.SameNetworkRule(id, p))
				}
			}
			if _, err := tx.AddRules(add); err != nil {
				return err
			}
		}
		after, err = tx.Rules(id)
		return err
	}, func() error {
		b, err := bpfmaps.Compile(before)
		if err != nil {
			return err
		}
		a, err := bpfmaps.Compile(after)
		if err != nil {
			return err
		}
		change, err = bpfmaps.Diff(fw.Maps.Rules(), b, a)
		return err
	})
	return change, err
}
