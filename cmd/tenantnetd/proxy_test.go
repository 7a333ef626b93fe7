package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestProxyUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"proxy"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "usage: tenantnetd proxy --dir DIR") {
		t.Errorf("tenantnetd proxy without --dir: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := Main([]string{"proxy", "--dir", "/nonexistent-tn-proxy", "--status"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "proxy.sock") {
		t.Errorf("--status with no proxy: exit %d, stderr %q", code, errb.String())
	}
}
