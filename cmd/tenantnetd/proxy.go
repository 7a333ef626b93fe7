package main

// The hidden `proxy` command: the IPv4 proxy in a process of its own,
// started by tenantnetd's proxy supervisor (proxyd.Start) so that proxied
// connections outlive tenantnetd. Not in the command table (tenantnetd
// starts it), but `tenantnetd proxy --dir DIR --status|--stop` is for
// operators: docs/operations.md.

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/tenantnet/tenantnet/config"
	"github.com/tenantnet/tenantnet/proxyd"
)

func proxyMain(args []string, stdout, stderr io.Writer) int {
	return proxyd.Main(args, stdout, stderr)
}

// startProxy starts the supervisor of the IPv4 proxy process when this
// node sells IPv4 (ipv4_pool), or when a proxy process is left from
// before (adopted, so that the next apply can empty it); nil otherwise.
// The supervisor's Close leaves the proxy serving.
func startProxy(cfg *config.Node, log *slog.Logger) (*proxyd.Supervisor, error) {
	dir := proxyd.DirFor(cfg.StateDir)
	if len(cfg.IPv4Pool) == 0 && !proxyd.Running(dir) {
		return nil, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return proxyd.Start(proxyd.Config{Binary: exe, Dir: dir, Logger: log})
}
