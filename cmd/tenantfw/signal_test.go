package main

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/internal/testutil"
)

// The test binary is tenantfw itself (main, its signal set-up included)
// when mainEnv is set: the signal tests run it as a process of its own.
const mainEnv = "TENANTFW_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		os.Args = append(os.Args[:1], strings.Split(os.Getenv(mainEnv+"_ARGS"), "\n")...)
		main()
		return
	}
	os.Exit(m.Run())
}

func tenantfwProcess(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), mainEnv+"=1", mainEnv+"_ARGS="+strings.Join(args, "\n"))
	return cmd
}

// SIGTERM and SIGINT do not cut a change short (they never did: a change
// runs to its end, and what a kill leaves is repaired by the next run),
// now that tenantfw ignores them instead of catching them. The change
// here waits for the writer lock, which the test holds: the signals land
// while it waits, and it must end with the lock's error, not the signal.
func TestSignalsDoNotStopAChange(t *testing.T) {
	testutil.RequireRoot(t)
	state := t.TempDir()
	lock, err := firewall.Lock(state, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	cmd := tenantfwProcess(t, "rule", "add", "--tenant", "1", "--action", "allow", "--wait", "1500ms",
		"--state-dir", state, "--pin-dir", t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	for _, s := range []os.Signal{syscall.SIGTERM, os.Interrupt} {
		if err := cmd.Process.Signal(s); err != nil {
			t.Fatalf("signal %v: %v", s, err)
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("tenantfw rule add: %v, want it to fail on the held lock; stderr %q", err, stderr.String())
	}
	if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() {
		t.Fatalf("tenantfw rule add was stopped by %v in the middle of a change", ws.Signal())
	}
	if !strings.Contains(stderr.String(), "held by another writer") {
		t.Fatalf("tenantfw rule add: %v: %q, want the lock's error", err, stderr.String())
	}
}

// monitor is the command that asks for Ctrl-C: it stops on it, exit 0.
func TestMonitorStopsOnInterrupt(t *testing.T) {
	dp := testutil.Load(t)
	cmd := tenantfwProcess(t, "monitor", "--pin-dir", dp.PinDir, "--state-dir", t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer cmd.Process.Kill()
	// The header comes after the ring buffer is open and the signals are
	// caught.
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || !strings.HasPrefix(line, "TIME") {
		t.Fatalf("monitor's first line %q: %v", line, err)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("monitor after Ctrl-C: %v, want exit 0", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("monitor still running 5 s after Ctrl-C")
	}
}
