package bpfmaps

import (
	"errors"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"

	"github.com/tenantnet/tenantnet/loader"
	"github.com/tenantnet/tenantnet/policy"
)

// v pairs a constant bpf2go generated from a C enum with its Go mirror.
func v[G, M ~uint8 | ~uint16 | ~uint32 | ~int64](gen G, mirror M) [2]int64 {
	return [2]int64{int64(gen), int64(mirror)}
}

// The Go constants that mirror C enums of bpf/lib/common.h by hand
// (policy's, which may not import loader; see policy/reason.go) or derive
// from bpf2go's output (this package's) match the generated constants,
// and every enumerator of the C enums (read from the object's BTF, so the
// test needs no source tree) has a mirror here: nothing can drift either
// way. The model's copies are checked in model/consts_test.go.
func TestConstantsMatchC(t *testing.T) {
	sec := func(proto, state uint8) int64 { return int64(timeout(proto, state) / time.Second) }
	want := map[string]map[string][2]int64{
		"tn_reason": {
			"TN_PASS_CT":             v(loader.WorkloadTnReasonTN_PASS_CT, policy.PassCT),
			"TN_PASS_RULE":           v(loader.WorkloadTnReasonTN_PASS_RULE, policy.PassRule),
			"TN_PASS_DEFAULT":        v(loader.WorkloadTnReasonTN_PASS_DEFAULT, policy.PassDefault),
			"TN_PASS_CONTROL":        v(loader.WorkloadTnReasonTN_PASS_CONTROL, policy.PassControl),
			"TN_PASS_FRAG":           v(loader.WorkloadTnReasonTN_PASS_FRAG, policy.PassFrag),
			"TN_PASS_REDIRECT":       v(loader.WorkloadTnReasonTN_PASS_REDIRECT, policy.PassRedirect),
			"TN_PASS_STACK":          v(loader.WorkloadTnReasonTN_PASS_STACK, policy.PassStack),
			"TN_PASS_RELATED":        v(loader.WorkloadTnReasonTN_PASS_RELATED, policy.PassRelated),
			"TN_PASS_ENCAP":          v(loader.WorkloadTnReasonTN_PASS_ENCAP, policy.PassEncap),
			"TN_PASS_DECAP":          v(loader.WorkloadTnReasonTN_PASS_DECAP, policy.PassDecap),
			"TN_DROP_FIRST":          v(loader.WorkloadTnReasonTN_DROP_FIRST, policy.DropFirst),
			"TN_DROP_TRUNCATED":      v(loader.WorkloadTnReasonTN_DROP_TRUNCATED, policy.DropTrunc),
			"TN_DROP_MALFORMED":      v(loader.WorkloadTnReasonTN_DROP_MALFORMED, policy.DropMalform),
			"TN_DROP_EXT_LIMIT":      v(loader.WorkloadTnReasonTN_DROP_EXT_LIMIT, policy.DropExtLimit),
			"TN_DROP_L3_PROTO":       v(loader.WorkloadTnReasonTN_DROP_L3PROTO, policy.DropL3Proto),
			"TN_DROP_NO_PORT":        v(loader.WorkloadTnReasonTN_DROP_NO_PORT, policy.DropNoPort),
			"TN_DROP_SPOOF":          v(loader.WorkloadTnReasonTN_DROP_SPOOF, policy.DropSpoof),
			"TN_DROP_ROGUE_RA":       v(loader.WorkloadTnReasonTN_DROP_ROGUE_RA, policy.DropRogueRA),
			"TN_DROP_CROSS_TENANT":   v(loader.WorkloadTnReasonTN_DROP_CROSS_TENANT, policy.DropCross),
			"TN_DROP_FRAG_UNTRACKED": v(loader.WorkloadTnReasonTN_DROP_FRAG_UNTRACKED, policy.DropFrag),
			"TN_DROP_POLICY":         v(loader.WorkloadTnReasonTN_DROP_POLICY, policy.DropPolicy),
			"TN_DROP_DEFAULT":        v(loader.WorkloadTnReasonTN_DROP_DEFAULT, policy.DropDefault),
			"TN_DROP_WG_SOURCE":      v(loader.WorkloadTnReasonTN_DROP_WG_SOURCE, policy.DropWGSource),
			"TN_DROP_WG_DEST":        v(loader.WorkloadTnReasonTN_DROP_WG_DEST, policy.DropWGDest),
			"TN_DROP_ROUTE":          v(loader.WorkloadTnReasonTN_DROP_ROUTE, policy.DropRoute),
			"TN_DROP_INTERNAL":       v(loader.WorkloadTnReasonTN_DROP_INTERNAL, policy.DropInternal),
			"TN_DROP_SPOOF_PATH":     v(loader.WorkloadTnReasonTN_DROP_SPOOF_PATH, policy.DropSpoofPath),
			"TN_DROP_CT_QUOTA":       v(loader.WorkloadTnReasonTN_DROP_CT_QUOTA, policy.DropCTQuota),
			"TN_DROP_ND_SPOOF":       v(loader.WorkloadTnReasonTN_DROP_ND_SPOOF, policy.DropNDSpoof),
			"TN_DROP_ROUTING_HDR":    v(loader.WorkloadTnReasonTN_DROP_ROUTING_HDR, policy.DropRoutingHdr),
			"TN_DROP_WRONG_PORT":     v(loader.WorkloadTnReasonTN_DROP_WRONG_PORT, policy.DropWrongPort),
			"TN_DROP_6IN4_PEER":      v(loader.WorkloadTnReasonTN_DROP_6IN4PEER, policy.Drop6in4Peer),
			"TN_DROP_6IN4_INNER":     v(loader.WorkloadTnReasonTN_DROP_6IN4INNER, policy.Drop6in4Inner),
			"TN_DROP_6IN4_FRAG":      v(loader.WorkloadTnReasonTN_DROP_6IN4FRAG, policy.Drop6in4Frag),
			"TN_DROP_6IN4_LEAK":      v(loader.WorkloadTnReasonTN_DROP_6IN4LEAK, policy.Drop6in4Leak),
			"TN_REASON_MAX":          v(loader.WorkloadTnReasonTN_REASON_MAX, policy.Reasons()[len(policy.Reasons())-1]+1),
		},
		"tn_dir": {
			"TN_DIR_IN":        v(loader.WorkloadTnDirTN_DIR_IN, policy.DirIn),
			"TN_DIR_OUT":       v(loader.WorkloadTnDirTN_DIR_OUT, policy.DirOut),
			"TN_DIR_PREFILTER": v(loader.WorkloadTnDirTN_DIR_PREFILTER, policy.DirPrefilter),
			"TN_DIR_WG":        v(loader.WorkloadTnDirTN_DIR_WG, policy.DirWG),
			"TN_DIR_FAST":      v(loader.WorkloadTnDirTN_DIR_FAST, policy.DirFast),
			"TN_DIR_6IN4":      v(loader.WorkloadTnDirTN_DIR_6IN4, policy.Dir6in4),
		},
		"tn_action": {
			"TN_ACT_NONE":  v(loader.WorkloadTnActionTN_ACT_NONE, policy.ActionNone),
			"TN_ACT_ALLOW": v(loader.WorkloadTnActionTN_ACT_ALLOW, policy.ActionAllow),
			"TN_ACT_DENY":  v(loader.WorkloadTnActionTN_ACT_DENY, policy.ActionDeny),
		},
		"tn_route_kind": {
			"TN_ROUTE_LOCAL": v(loader.WorkloadTnRouteKindTN_ROUTE_LOCAL, RouteLocal),
			"TN_ROUTE_WG":    v(loader.WorkloadTnRouteKindTN_ROUTE_WG, RouteWG),
			"TN_ROUTE_EXIT":  v(loader.WorkloadTnRouteKindTN_ROUTE_EXIT, RouteExit),
			"TN_ROUTE_6IN4":  v(loader.WorkloadTnRouteKindTN_ROUTE_6IN4, Route6in4),
			"TN_ROUTE_HOST":  v(loader.WorkloadTnRouteKindTN_ROUTE_HOST, RouteHost),
			"TN_ROUTE_DROP":  v(loader.WorkloadTnRouteKindTN_ROUTE_DROP, RouteDrop),
		},
		"tn_route_flags": {
			"TN_ROUTE_F_REDIRECT": v(loader.WorkloadTnRouteFlagsTN_ROUTE_F_REDIRECT, routeRedirect),
		},
		"tn_rdst_flags": {
			"TN_RDST_HAS_SRC": v(loader.WorkloadTnRdstFlagsTN_RDST_HAS_SRC, rdstHasSrc),
		},
		"tn_ct_state": {
			"TN_CT_NEW":         v(loader.WorkloadTnCtStateTN_CT_NEW, ctNew),
			"TN_CT_ESTABLISHED": v(loader.WorkloadTnCtStateTN_CT_ESTABLISHED, ctEstablished),
			"TN_CT_CLOSING":     v(loader.WorkloadTnCtStateTN_CT_CLOSING, ctClosing),
		},
		"tn_timeout": {
			"TN_CT_TCP_SYN_S":     v(loader.WorkloadTnTimeoutTN_CT_TCP_SYN_S, sec(policy.ProtoTCP, ctNew)),
			"TN_CT_TCP_EST_S":     v(loader.WorkloadTnTimeoutTN_CT_TCP_EST_S, sec(policy.ProtoTCP, ctEstablished)),
			"TN_CT_TCP_CLOSING_S": v(loader.WorkloadTnTimeoutTN_CT_TCP_CLOSING_S, sec(policy.ProtoTCP, ctClosing)),
			"TN_CT_UDP_NEW_S":     v(loader.WorkloadTnTimeoutTN_CT_UDP_NEW_S, sec(policy.ProtoUDP, ctNew)),
			"TN_CT_UDP_EST_S":     v(loader.WorkloadTnTimeoutTN_CT_UDP_EST_S, sec(policy.ProtoUDP, ctEstablished)),
			"TN_CT_ICMP_S":        v(loader.WorkloadTnTimeoutTN_CT_ICMP_S, sec(policy.ProtoICMPv6, ctEstablished)),
			"TN_CT_OTHER_S":       v(loader.WorkloadTnTimeoutTN_CT_OTHER_S, sec(47, ctNew)),
			// Fragments are not read back by Go: only the model keeps them.
			"TN_FRAG_TIMEOUT_S": v(loader.WorkloadTnTimeoutTN_FRAG_TIMEOUT_S, loader.WorkloadTnTimeoutTN_FRAG_TIMEOUT_S),
		},
		"tn_quota": {
			"TN_CT_QUOTA_DEFAULT":   v(loader.WorkloadTnQuotaTN_CT_QUOTA_DEFAULT, DefaultCTQuota),
			"TN_FRAG_QUOTA_DEFAULT": v(loader.WorkloadTnQuotaTN_FRAG_QUOTA_DEFAULT, DefaultFragQuota),
			// Only the model reads the window (model/consts_test.go).
			"TN_CT_TCP_WINDOW": v(loader.WorkloadTnQuotaTN_CT_TCP_WINDOW, loader.WorkloadTnQuotaTN_CT_TCP_WINDOW),
		},
		"tn_error": {
			"TN_ERR_STATS_FULL":  v(loader.WorkloadTnErrorTN_ERR_STATS_FULL, int64(0)),
			"TN_ERR_EVENTS_LOST": v(loader.WorkloadTnErrorTN_ERR_EVENTS_LOST, int64(1)),
			// Losses has a field for every error.
			"TN_ERR_MAX": v(loader.WorkloadTnErrorTN_ERR_MAX, int64(reflect.TypeFor[Losses]().NumField())),
		},
	}

	spec, err := loader.LoadWorkload()
	if err != nil {
		t.Fatal(err)
	}
	for enum, consts := range want {
		var e *btf.Enum
		if err := spec.Types.TypeByName(enum, &e); err != nil {
			t.Errorf("enum %s: %v (keep it in BTF: bpf/workload.c's tn_btf_types)", enum, err)
			continue
		}
		inC := map[string]bool{}
		for _, ev := range e.Values {
			inC[ev.Name] = true
			c, ok := consts[ev.Name]
			switch {
			case !ok:
				t.Errorf("%s %s = %d has no Go mirror: add it here and where Go needs it", enum, ev.Name, ev.Value)
			case uint64(c[0]) != ev.Value:
				t.Errorf("%s: generated %d, C %d: run make generate", ev.Name, c[0], ev.Value)
			case c[0] != c[1]:
				t.Errorf("%s: C %d, Go mirror %d", ev.Name, c[0], c[1])
			}
		}
		for name := range consts {
			if !inC[name] {
				t.Errorf("%s: Go mirrors %s, which the C enum lacks", enum, name)
			}
		}
	}

	// Every reason is listed, named, and only the drops drop.
	var e *btf.Enum
	if err := spec.Types.TypeByName("tn_reason", &e); err == nil {
		var fromC []policy.Reason
		for _, ev := range e.Values {
			if ev.Name != "TN_DROP_FIRST" && ev.Name != "TN_REASON_MAX" {
				fromC = append(fromC, policy.Reason(ev.Value))
			}
		}
		if !slices.Equal(fromC, policy.Reasons()) {
			t.Errorf("policy.Reasons() %v, C has %v", policy.Reasons(), fromC)
		}
		for _, r := range fromC {
			if _, err := policy.ParseReason(r.String()); err != nil {
				t.Errorf("reason %d has no name: %v", r, err)
			}
		}
	}

	src, err := os.ReadFile("../bpf/lib/common.h")
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("source tree not here for TN_SCHEMA_VERSION (a test binary run elsewhere, e.g. in the kernel matrix VM)")
	}
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`#define TN_SCHEMA_VERSION ([0-9]+)`).FindStringSubmatch(string(src)); m == nil || m[1] != strconv.Itoa(loader.SchemaVersion) {
		t.Errorf("TN_SCHEMA_VERSION %v, loader.SchemaVersion %d", m, loader.SchemaVersion)
	}
}
