package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/tenantnet/tenantnet/firewall"
	"github.com/tenantnet/tenantnet/internal/cli"
	"github.com/tenantnet/tenantnet/policy"
)

// RulesFile is the YAML of `tenantfw apply -f` (docs/tenantfw.md).
type RulesFile struct {
	Tenants []TenantRulesYAML `yaml:"tenants"`
}

// TenantRulesYAML is one tenant's desired rule set.
type TenantRulesYAML struct {
	Tenant uint32      `yaml:"tenant"`
	Policy *PolicyYAML `yaml:"policy,omitempty"`
	Rules  []RuleYAML  `yaml:"rules"`
}

// PolicyYAML is a default policy.
type PolicyYAML struct {
	Inbound  string `yaml:"inbound,omitempty"`
	Outbound string `yaml:"outbound,omitempty"`
}

// RuleYAML is one rule; omitted fields mean any (dir: in).
type RuleYAML struct {
	Dir     string `yaml:"dir"`
	Proto   string `yaml:"proto"`
	Port    any    `yaml:"port"`
	Dst     string `yaml:"dst"`
	Src     string `yaml:"src"`
	Action  string `yaml:"action"`
	Comment string `yaml:"comment"`
}

// parseRulesFile decodes and validates the whole file; errors name the
// tenant, the rule's position and the field.
func parseRulesFile(b []byte) ([]firewall.TenantRules, error) {
	f, err := decodeRulesFile(b)
	if err != nil {
		return nil, err
	}
	return rulesFromFile(f)
}

// decodeRulesFile reads the YAML: the common layout without the YAML
// parser (fastRulesFile), anything else with it.
func decodeRulesFile(b []byte) (RulesFile, error) {
	if f, ok := fastRulesFile(b); ok {
		return f, nil
	}
	return yamlRulesFile(b)
}

func yamlRulesFile(b []byte) (RulesFile, error) {
	var f RulesFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return f, fmt.Errorf("%s", strings.Join(te.Errors, "; "))
		}
		return f, fmt.Errorf("parse: %w", err)
	}
	return f, nil
}

func rulesFromFile(f RulesFile) ([]firewall.TenantRules, error) {
	var out []firewall.TenantRules
	for ti, t := range f.Tenants {
		if t.Tenant == 0 {
			return nil, fmt.Errorf("tenants[%d]: tenant: missing or 0", ti)
		}
		tr := firewall.TenantRules{Tenant: t.Tenant}
		if t.Policy != nil {
			p := &policy.TenantPolicy{}
			var err error
			if t.Policy.Inbound != "" {
				if p.Inbound, err = policy.ParseAction(t.Policy.Inbound); err != nil {
					return nil, fmt.Errorf("tenant %d: policy.inbound %s: want allow or deny", t.Tenant, t.Policy.Inbound)
				}
			}
			if t.Policy.Outbound != "" {
				if p.Outbound, err = policy.ParseAction(t.Policy.Outbound); err != nil {
					return nil, fmt.Errorf("tenant %d: policy.outbound %s: want allow or deny", t.Tenant, t.Policy.Outbound)
				}
			}
			tr.Policy = p
		}
		tr.Rules = make([]policy.Rule, 0, len(t.Rules))
		for ri, y := range t.Rules {
			r, err := y.rule(t.Tenant)
			if err != nil {
				return nil, fmt.Errorf("tenant %d rules[%d]: %w", t.Tenant, ri, err)
			}
			tr.Rules = append(tr.Rules, r)
		}
		out = append(out, tr)
	}
	return out, nil
}

func (y RuleYAML) rule(tenant uint32) (policy.Rule, error) {
	r := policy.Rule{Tenant: tenant, Comment: y.Comment}
	var err error
	dir := y.Dir
	if dir == "" {
		dir = "in"
	}
	if r.Dir, err = policy.ParseDirection(dir); err != nil {
		return r, fmt.Errorf("dir %s: want in or out", y.Dir)
	}
	proto := y.Proto
	if proto == "" {
		proto = "any"
	}
	if r.Proto, err = policy.ParseProto(proto); err != nil {
		return r, fmt.Errorf("proto %s: want tcp, udp, icmp, icmpv6 or any", y.Proto)
	}
	port := "any"
	switch p := y.Port.(type) {
	case nil:
	case int:
		port = strconv.Itoa(p)
	case string:
		port = p
	default:
		return r, fmt.Errorf("port %v: want a number, a range A-B or any", y.Port)
	}
	if r.PortLo, r.PortHi, err = policy.ParsePorts(port); err != nil {
		return r, err
	}
	if r.Dst, err = policy.ParsePrefix(y.Dst); err != nil {
		return r, fmt.Errorf("dst: %w", err)
	}
	if r.Src, err = policy.ParsePrefix(y.Src); err != nil {
		return r, fmt.Errorf("src: %w", err)
	}
	if r.Action, err = policy.ParseAction(y.Action); err != nil {
		return r, fmt.Errorf("action %q: want allow or deny", y.Action)
	}
	return r, r.Validate()
}

func applyCmd() *command {
	var file string
	var prune, dryRun bool
	return &command{
		Name: "apply", Summary: "replace tenants' rule sets from a YAML file, as a diff",
		Usage: "-f rules.yaml [--prune] [--dry-run]",
		Example: `  tenantfw apply -f rules.yaml          # replaces the rules of the tenants in the file
  tenantfw apply -f rules.yaml --prune  # ... and flushes every tenant not in it

  rules.yaml:
    tenants:
      - tenant: 7
        policy: {inbound: deny, outbound: allow}
        rules:
          - {dir: in, proto: tcp, port: 8080, dst: "2001:db8:7::10", action: allow, comment: web}
          - {dir: in, proto: tcp, port: 22, src: 203.0.113.0/24, action: allow}
          - {dir: out, proto: tcp, port: 25, action: deny}`,
		Flags: func(fs *pflag.FlagSet, _ *Env) {
			fs.StringVarP(&file, "file", "f", "", "rules file (YAML; - for stdin)")
			fs.BoolVar(&prune, "prune", false, "also flush the rules of every tenant the file does not list")
			fs.BoolVar(&dryRun, "dry-run", false, "validate only")
		},
		Run: func(env *Env, fs *pflag.FlagSet, args []string) error {
			if err := cli.NoArgs(args); err != nil {
				return err
			}
			if file == "" {
				return cli.Usagef("-f is required")
			}
			var b []byte
			var err error
			if file == "-" {
				b, err = readAll(os.Stdin)
			} else {
				b, err = os.ReadFile(file)
			}
			if err != nil {
				return err
			}
			sets, err := parseRulesFile(b)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			if dryRun {
				n := 0
				for _, s := range sets {
					n += len(s.Rules)
				}
				fmt.Fprintf(env.Stdout, "%s: %d tenants, %d rules: valid\n", file, len(sets), n)
				return nil
			}
			fw, err := openFirewall(env, false)
			if err != nil {
				return err
			}
			defer fw.Close()
			res, err := fw.Apply(sets, prune)
			if err != nil {
				return fmt.Errorf("%s: %w (nothing was applied)", file, err)
			}
			if env.Output == "json" {
				return cli.JSON(env.Stdout, map[string]any{"tenants": res.Tenants, "kept": res.Kept, "added": res.Added,
					"deleted": res.Gone, "entries_added": res.Maps.Added, "entries_updated": res.Maps.Updated, "entries_deleted": res.Maps.Deleted})
			}
			fmt.Fprintf(env.Stdout, "applied %s: %d tenants; rules %d kept, %d added, %d deleted; map entries %s\n",
				file, res.Tenants, res.Kept, res.Added, res.Gone, res.Maps)
			return nil
		},
	}
}

func readAll(f *os.File) ([]byte, error) {
	var buf bytes.Buffer
	_, err := buf.ReadFrom(f)
	return buf.Bytes(), err
}
