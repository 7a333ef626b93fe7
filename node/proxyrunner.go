package node

import "github.com/tenantnet/tenantnet/proxy"

// ProxyRunner serves the node's exposures (issue 17). In tenantnetd it is
// the supervisor of the proxy process (proxyd): the proxy outlives
// tenantnetd, so that a kill -9, a restart or an upgrade of the node
// service cuts no proxied connection.
type ProxyRunner interface {
	// Apply makes the running mappings exactly ms, by proxy.Key: new
	// ones listen, changed ones are replaced, the others are removed.
	// Mappings that fail are named in the error; the rest are applied.
	Apply(ms []proxy.Mapping) error
	// Stats are the counters of every running mapping.
	Stats() ([]proxy.Stats, error)
}

// ProxyRestarts is a ProxyRunner that starts its proxy again when it
// dies or hangs (proxyd's supervisor), and counts why.
type ProxyRestarts interface {
	Restarts() map[string]uint64
}
