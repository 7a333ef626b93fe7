package firewall

import (
	"github.com/tenantnet/tenantnet/firewall/internal/store"
	"github.com/tenantnet/tenantnet/policy"
)

// The saved records, as the store keeps them. The store itself is private
// to the firewall: everything outside reads through the methods below, so
// that the maps and the state are only ever changed together (change()).
type (
	// Tenant is a tenant's saved prefixes and default policy.
	Tenant = store.Tenant
	// Port is a saved port binding (interface name, tenant, addresses).
	Port = store.Port
	// RuleConflictError says that a rule with the same match exists.
	RuleConflictError = store.RuleConflictError
)

// Tenant returns a saved tenant (an error names an unknown one).
func (fw *Firewall) Tenant(id uint32) (Tenant, error) {
	var tn Tenant
	err := fw.st.View(func(tx *store.Tx) error {
		var err error
		tn, err = tx.Tenant(id)
		return err
	})
	return tn, err
}

// Tenants returns every saved tenant, by id.
func (fw *Firewall) Tenants() ([]Tenant, error) {
	var ts []Tenant
	err := fw.st.View(func(tx *store.Tx) error {
		var err error
		ts, err = tx.Tenants()
		return err
	})
	return ts, err
}

// Rules returns the saved rules of a tenant (0: of every tenant).
func (fw *Firewall) Rules(tenant uint32) ([]policy.Rule, error) {
	var rules []policy.Rule
	err := fw.st.View(func(tx *store.Tx) error {
		var err error
		rules, err = tx.Rules(tenant)
		return err
	})
	return rules, err
}

// Rule returns one saved rule by id.
func (fw *Firewall) Rule(id uint32) (policy.Rule, error) {
	var r policy.Rule
	err := fw.st.View(func(tx *store.Tx) error {
		var err error
		r, err = tx.Rule(id)
		return err
	})
	return r, err
}

// Ports returns the saved port bindings.
func (fw *Firewall) Ports() ([]Port, error) {
	var ps []Port
	err := fw.st.View(func(tx *store.Tx) error {
		var err error
		ps, err = tx.Ports()
		return err
	})
	return ps, err
}

// CountRules is the number of saved rules.
func (fw *Firewall) CountRules() (int, error) {
	n := 0
	err := fw.st.View(func(tx *store.Tx) error { n = tx.CountRules(); return nil })
	return n, err
}

// Dirty reports whether a change of the maps was interrupted and not yet
// repaired (the next Open with the datapath repairs it).
func (fw *Firewall) Dirty() (bool, error) { return fw.dirty(), nil }
