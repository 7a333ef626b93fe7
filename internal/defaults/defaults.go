// Package defaults holds the paths and addresses every part of tenantnet
// agrees on, defined once: the node config, the loader, the firewall and
// both CLIs take their defaults from here.
package defaults

import "net/netip"

const (
	// PinDir is the bpffs directory of a node's datapath.
	PinDir = "/sys/fs/bpf/tenantnet"
	// StateDir holds the saved firewall state, the IPAM and the lock.
	StateDir = "/var/lib/tenantnet"
	// RegistryDir is the file registry's directory.
	RegistryDir = StateDir + "/registry"
	// APISocket is tenantnetd's root-only API socket.
	APISocket = "/run/tenantnet/tenantnetd.sock"
	// ConfigPath is the node configuration tenantnetd reads.
	ConfigPath = "/etc/tenantnet/node.yaml"
	// MetricsAddr is where /metrics listens.
	MetricsAddr = "127.0.0.1:9464"
)

// GatewayLL is the tenant bridge's link-local address: every workload's
// default router.
var GatewayLL = netip.MustParseAddr("fe80::1")
