package main

// The hidden `proxy` command: the IPv4 proxy in a process of its own,
// started by tenantnetd's proxy supervisor (proxyd.Start) so that proxied
// connections outlive tenantnetd. Not in the command table (tenantnetd
// starts it), but `tenantnetd proxy --dir DIR --status|--stop` is for
// operators: docs/operations.md.

import (
	"io"

	"github.com/tenantnet/tenantnet/proxyd"
)

func proxyMain(args []string, stdout, stderr io.Writer) int {
	return proxyd.Main(args, stdout, stderr)
}
