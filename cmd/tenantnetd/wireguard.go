package main

// The hidden `wireguard-go` command: one embedded WireGuard device in a
// process of its own, started by tenantnetd (wg.Start) so that the device
// outlives tenantnetd's restarts. Not in the command table: it is not for
// people, and it needs the descriptor wg.Start passes it.

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/wg"
)

// wireguardGo runs `tenantnetd wireguard-go --interface NAME --mtu N` and
// returns the exit code.
func wireguardGo(args []string, stderr io.Writer) int {
	fs := pflag.NewFlagSet(wg.HelperCommand, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("interface", "", "the device's name")
	mtu := fs.Int("mtu", 1420, "the device's MTU")
	if err := fs.Parse(args); err != nil || *name == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: tenantnetd wireguard-go --interface NAME [--mtu N] (started by tenantnetd run)")
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := wg.Serve(*name, *mtu, log); err != nil {
		log.Error("wireguard-go", "device", *name, "err", err)
		return 1
	}
	return 0
}
