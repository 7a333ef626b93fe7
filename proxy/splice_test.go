package proxy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/tenantnet/tenantnet/internal/testutil"
)

// TestTCPSplices runs TestTCP10MB again under strace and checks that every
// payload byte went through splice(2): 10 MiB each way, each byte spliced
// twice (socket → pipe, pipe → socket). A wrapper around either
// *net.TCPConn (a counting reader, bufio, proxyproto.Conn) would make Go
// fall back to read/write, and this sum would be zero.
func TestTCPSplices(t *testing.T) {
	testutil.RequireRoot(t)
	if os.Getenv("TN_PROXY_UNDER_STRACE") != "" {
		t.Skip("already under strace")
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("needs strace (apt-get install strace) to see the splice calls")
	}
	out := filepath.Join(t.TempDir(), "strace.txt")
	cmd := exec.Command(strace, "-f", "--seccomp-bpf", "-e", "trace=splice", "-o", out,
		os.Args[0], "-test.run", "^TestTCP10MB$", "-test.count", "1", "-test.timeout", "60s")
	cmd.Env = append(os.Environ(), "TN_PROXY_UNDER_STRACE=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("TestTCP10MB under strace: %v\n%s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// "splice(5, NULL, 23, NULL, 1048576, SPLICE_F_NONBLOCK) = 122496",
	// or "<... splice resumed>) = 1048576".
	re := regexp.MustCompile(`splice.*\) += ([0-9]+)$`)
	var spliced, calls int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			spliced += n
			calls++
		}
	}
	if want := int64(4 * 10 << 20); spliced != want {
		t.Fatalf("%d bytes spliced in %d calls, want %d (10 MiB each way, twice)", spliced, calls, want)
	}
	t.Logf("%d bytes spliced in %d calls", spliced, calls)
}
