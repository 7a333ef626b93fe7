package proxyd

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/tenantnet/tenantnet/proxy"
)

// Main runs `<binary> proxy ARGS` (the proxy process, or with --status or
// --stop a client of it) and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet(Command, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "the proxy's directory: control socket, pid file, log (tenantnetd: <state_dir>/proxy)")
	takeover := fs.Bool("takeover", false, "take the listening sockets of the proxy serving --dir over and make it drain (an upgrade)")
	drain := fs.Duration("drain-timeout", DefaultDrainTimeout, "how long this process keeps its connections once a successor has taken over")
	maxConns := fs.Int("max-conns", 0, "node-wide cap of TCP connections plus UDP sessions (0: from RLIMIT_NOFILE)")
	evict := fs.Duration("udp-evict-idle", 0, "idle time before a UDP session may be evicted at a cap (0: 2s)")
	keepalive := fs.String("keepalive", "", "TCP keepalive of both legs: enable,idle,interval,count (default true,1m,15s,4)")
	status := fs.Bool("status", false, "print the running proxy's version and counters as JSON, and exit")
	stop := fs.Bool("stop", false, "stop every proxy process of --dir for good (its connections are closed), and exit")
	if err := fs.Parse(args); err != nil || *dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: tenantnetd proxy --dir DIR [--takeover] [--drain-timeout D] [--max-conns N] | --status | --stop")
		return 2
	}
	switch {
	case *status:
		v, st, err := Status(*dir)
		if err != nil {
			fmt.Fprintln(stderr, "tenantnetd proxy:", err)
			return 1
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(struct {
			Version Version       `json:"version"`
			Stats   []proxy.Stats `json:"stats"`
		}{v, st})
		return 0
	case *stop:
		n, err := Stop(*dir)
		if err != nil {
			fmt.Fprintln(stderr, "tenantnetd proxy:", err)
			return 1
		}
		fmt.Fprintf(stdout, "stopped %d proxy processes\n", n)
		return 0
	}
	opts := proxy.Options{MaxConns: *maxConns, UDPEvictIdle: *evict}
	if *keepalive != "" {
		ka, err := parseKeepAlive(*keepalive)
		if err != nil {
			fmt.Fprintln(stderr, "tenantnetd proxy: --keepalive:", err)
			return 2
		}
		opts.KeepAlive = ka
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := Serve(ServeConfig{Dir: *dir, Takeover: *takeover, DrainTimeout: *drain, Options: opts, Logger: log}); err != nil {
		log.Error("proxy", "err", err)
		return 1
	}
	return 0
}

func parseKeepAlive(s string) (net.KeepAliveConfig, error) {
	f := strings.Split(s, ",")
	if len(f) != 4 {
		return net.KeepAliveConfig{}, fmt.Errorf("%q: want enable,idle,interval,count", s)
	}
	en, err1 := strconv.ParseBool(f[0])
	idle, err2 := time.ParseDuration(f[1])
	iv, err3 := time.ParseDuration(f[2])
	n, err4 := strconv.Atoi(f[3])
	for _, err := range []error{err1, err2, err3, err4} {
		if err != nil {
			return net.KeepAliveConfig{}, fmt.Errorf("%q: %w", s, err)
		}
	}
	return net.KeepAliveConfig{Enable: en, Idle: idle, Interval: iv, Count: n}, nil
}
