package main

import (
	"bytes"
	"strconv"
)

// fastRulesFile decodes a rules file written in the one layout that
// machines write and large rule sets come in: one flow mapping per rule
// line, as in docs/tenantfw.md,
//
//	tenants:
//	  - tenant: 7
//	    policy: {inbound: deny, outbound: allow}
//	    rules:
//	      - {dir: in, proto: tcp, port: 8080, dst: "2001:db8:7::10", action: allow, comment: "web"}
//
// without the YAML parser, which took 0.6 s of the 2.2 s that loading
// 100,000 rules did (BENCHMARKS.md). It accepts a strict subset: keys
// among the known fields, each once; values that are plain words of the
// field's vocabulary, plain decimal ports, or double-quoted strings of
// address-and-text characters without escapes. Anything else (comments,
// block style, anchors, escapes, other spacing, a key it does not know)
// returns ok false and the caller parses the file with the YAML parser,
// which gives the same result for everything accepted here
// (FuzzRulesFileFast checks it) and the error messages for the rest.
func fastRulesFile(b []byte) (f RulesFile, ok bool) {
	lines := bytes.Split(b, []byte("\n"))
	if n := len(lines); n > 0 && len(lines[n-1]) == 0 {
		lines = lines[:n-1]
	}
	if len(lines) == 0 || string(lines[0]) != "tenants:" {
		return f, false
	}
	var cur *TenantRulesYAML
	inRules := false
	for i, l := range lines[1:] {
		switch {
		case bytes.HasPrefix(l, []byte("      - {")):
			if cur == nil || !inRules {
				return f, false
			}
			r, ok := fastRule(l[len("      - "):])
			if !ok {
				return f, false
			}
			cur.Rules = append(cur.Rules, r)
		case bytes.HasPrefix(l, []byte("  - tenant: ")):
			id, ok := fastUint32(l[len("  - tenant: "):])
			if !ok {
				return f, false
			}
			f.Tenants = append(f.Tenants, TenantRulesYAML{Tenant: id})
			cur, inRules = &f.Tenants[len(f.Tenants)-1], false
		case string(l) == "    rules:":
			if cur == nil || inRules || cur.Rules != nil {
				return f, false
			}
			inRules = true
			n := 0
			for _, r := range lines[i+2:] {
				if !bytes.HasPrefix(r, []byte("      - {")) {
					break
				}
				n++
			}
			if n > 0 {
				cur.Rules = make([]RuleYAML, 0, n)
			}
		case bytes.HasPrefix(l, []byte("    policy: {")):
			if cur == nil || cur.Policy != nil || inRules {
				// After rules: the YAML parser accepts it; keep its
				// answer for anything unusual.
				return f, false
			}
			p, ok := fastPolicy(l[len("    policy: "):])
			if !ok {
				return f, false
			}
			cur.Policy = p
		default:
			return f, false
		}
	}
	// A rules: key with no entries decodes to a nil list, as here. Two
	// rules: keys (refused above) or a tenant without one are the same as
	// in YAML too.
	return f, true
}

// maxPairs bounds the pairs of one flow mapping: a rule has seven fields.
const maxPairs = 8

// flowPairs splits "{k: v, k: v}" into its pairs; values keep their
// quotes. Keys are lower-case words; each appears once.
func flowPairs(b []byte, keyBuf, valBuf *[maxPairs][]byte) (keys, vals [][]byte, ok bool) {
	keys, vals = keyBuf[:0], valBuf[:0]
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return nil, nil, false
	}
	b = b[1 : len(b)-1]
	if len(b) == 0 {
		return nil, nil, true
	}
	for {
		if len(keys) == maxPairs {
			return nil, nil, false
		}
		i := 0
		for i < len(b) && b[i] >= 'a' && b[i] <= 'z' {
			i++
		}
		if i == 0 || i+2 > len(b) || b[i] != ':' || b[i+1] != ' ' {
			return nil, nil, false
		}
		k := b[:i]
		b = b[i+2:]
		var v []byte
		if len(b) > 0 && b[0] == '"' {
			j := 1
			for j < len(b) && b[j] != '"' {
				if !quotedSafe(b[j]) {
					return nil, nil, false
				}
				j++
			}
			if j == len(b) {
				return nil, nil, false
			}
			v, b = b[:j+1], b[j+1:]
		} else {
			j := 0
			for j < len(b) && (b[j] >= 'a' && b[j] <= 'z' || b[j] >= '0' && b[j] <= '9') {
				j++
			}
			if j == 0 {
				return nil, nil, false
			}
			v, b = b[:j], b[j:]
		}
		for _, o := range keys {
			if bytes.Equal(o, k) {
				return nil, nil, false
			}
		}
		keys, vals = append(keys, k), append(vals, v)
		if len(b) == 0 {
			return keys, vals, true
		}
		if len(b) < 3 || b[0] != ',' || b[1] != ' ' || b[2] == ' ' {
			return nil, nil, false
		}
		b = b[2:]
	}
}

// quotedSafe: characters a double-quoted YAML scalar takes literally:
// no escapes, no quotes, nothing that is not printable ASCII.
func quotedSafe(c byte) bool {
	switch {
	case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		return true
	}
	switch c {
	case ' ', '.', ':', '/', '-', '_', ',', '(', ')', '+', '=', '@', '%':
		return true
	}
	return false
}

// plainWord is a plain scalar YAML reads as the string it spells: a
// lower-case letter, then letters and digits (icmpv6), and not one of
// YAML's null or boolean words (those take the slow path, which gives them
// their YAML meaning).
func plainWord(v []byte) (string, bool) {
	if len(v) == 0 || v[0] < 'a' || v[0] > 'z' {
		return "", false
	}
	for _, c := range v {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return "", false
		}
	}
	switch string(v) {
	case "null", "true", "false", "y", "n", "yes", "no", "on", "off":
		return "", false
	}
	return string(v), true
}

// stringValue is a field value that YAML decodes to a string: a quoted
// string or a plain word.
func stringValue(v []byte) (string, bool) {
	if v[0] == '"' {
		return string(v[1 : len(v)-1]), true
	}
	return plainWord(v)
}

// fastUint32 is a canonical decimal (no sign, no leading zero) that fits
// a uint32, as YAML reads it into one.
func fastUint32(b []byte) (uint32, bool) {
	if len(b) == 0 || len(b) > 10 || (b[0] == '0' && len(b) > 1) {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(string(b), 10, 32)
	return uint32(n), err == nil
}

func fastRule(b []byte) (RuleYAML, bool) {
	var r RuleYAML
	var kb, vb [maxPairs][]byte
	keys, vals, ok := flowPairs(b, &kb, &vb)
	if !ok {
		return r, false
	}
	for i, k := range keys {
		v := vals[i]
		if string(k) == "port" {
			// A plain number is an int to YAML, "any" a string; a quoted
			// value is a string either way.
			if v[0] >= '0' && v[0] <= '9' {
				n, ok := fastUint32(v)
				if !ok || len(v) > 9 {
					return r, false
				}
				r.Port = int(n)
				continue
			}
			s, ok := stringValue(v)
			if !ok {
				return r, false
			}
			r.Port = s
			continue
		}
		s, ok := stringValue(v)
		if !ok {
			return r, false
		}
		switch string(k) {
		case "dir":
			r.Dir = s
		case "proto":
			r.Proto = s
		case "dst":
			r.Dst = s
		case "src":
			r.Src = s
		case "action":
			r.Action = s
		case "comment":
			r.Comment = s
		default:
			return r, false
		}
	}
	return r, true
}

func fastPolicy(b []byte) (*PolicyYAML, bool) {
	var kb, vb [maxPairs][]byte
	keys, vals, ok := flowPairs(b, &kb, &vb)
	if !ok {
		return nil, false
	}
	p := &PolicyYAML{}
	for i, k := range keys {
		s, ok := stringValue(vals[i])
		if !ok {
			return nil, false
		}
		switch string(k) {
		case "inbound":
			p.Inbound = s
		case "outbound":
			p.Outbound = s
		default:
			return nil, false
		}
	}
	return p, true
}
