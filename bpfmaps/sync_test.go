package bpfmaps

import (
	"errors"
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/tenantnet/tenantnet/policy"

	"github.com/tenantnet/tenantnet/loader"
)

// The Go constants mirror enums of bpf/lib/common.h that bpf2go cannot
// generate (they name no struct field's type). Keep them in step.
func TestConstantsMatchC(t *testing.T) {
	src, err := os.ReadFile("../bpf/lib/common.h")
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("source tree not here (a test binary run elsewhere, e.g. in the kernel matrix VM)")
	}
	if err != nil {
		t.Fatal(err)
	}
	c := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^\s*(TN_[A-Z_0-9]+)\s*=\s*([0-9]+),`).FindAllStringSubmatch(string(src), -1) {
		c[m[1]], _ = strconv.Atoi(m[2])
	}
	if m := regexp.MustCompile(`#define TN_SCHEMA_VERSION ([0-9]+)`).FindStringSubmatch(string(src)); m == nil || m[1] != strconv.Itoa(loader.SchemaVersion) {
		t.Errorf("TN_SCHEMA_VERSION %v, loader.SchemaVersion %d", m, loader.SchemaVersion)
	}
	want := map[string]int{
		"TN_PASS_CT": int(policy.PassCT), "TN_PASS_RULE": int(policy.PassRule), "TN_PASS_DEFAULT": int(policy.PassDefault),
		"TN_PASS_CONTROL": int(policy.PassControl), "TN_PASS_FRAG": int(policy.PassFrag), "TN_DROP_FIRST": int(policy.DropFirst),
		"TN_DROP_TRUNCATED": int(policy.DropTrunc), "TN_DROP_MALFORMED": int(policy.DropMalform), "TN_DROP_EXT_LIMIT": int(policy.DropExtLimit),
		"TN_DROP_L3_PROTO": int(policy.DropL3Proto), "TN_DROP_NO_PORT": int(policy.DropNoPort), "TN_DROP_SPOOF": int(policy.DropSpoof),
		"TN_DROP_ROGUE_RA": int(policy.DropRogueRA), "TN_DROP_CROSS_TENANT": int(policy.DropCross), "TN_DROP_FRAG_UNTRACKED": int(policy.DropFrag),
		"TN_DROP_POLICY": int(policy.DropPolicy), "TN_DROP_DEFAULT": int(policy.DropDefault),
		"TN_PASS_REDIRECT": int(policy.PassRedirect), "TN_PASS_STACK": int(policy.PassStack), "TN_DROP_WG_SOURCE": int(policy.DropWGSource),
		"TN_DROP_WG_DEST": int(policy.DropWGDest), "TN_DROP_ROUTE": int(policy.DropRoute),
		"TN_DIR_IN": int(policy.DirIn), "TN_DIR_OUT": int(policy.DirOut), "TN_DIR_PREFILTER": int(policy.DirPrefilter),
		"TN_DIR_WG": int(policy.DirWG), "TN_DIR_FAST": int(policy.DirFast),
		"TN_ROUTE_LOCAL": int(RouteLocal), "TN_ROUTE_WG": int(RouteWG), "TN_ROUTE_EXIT": int(RouteExit), "TN_ROUTE_DROP": int(RouteDrop),
		"TN_ACT_NONE": int(policy.ActionNone), "TN_ACT_ALLOW": int(policy.ActionAllow), "TN_ACT_DENY": int(policy.ActionDeny),
	}
	for name, v := range want {
		if got, ok := c[name]; !ok || got != v {
			t.Errorf("%s: C has %d (found %v), Go has %d", name, got, ok, v)
		}
	}
	if n := c["TN_REASON_MAX"]; n != int(policy.DropRoute)+1 {
		t.Errorf("a reason was added in C (TN_REASON_MAX %d): add it to policy/reason.go", n)
	}
}
