package iptables

import (
	"bufio"
	"fmt"
	"slices"
	"strings"
)

// savedTable is one table of iptables-save output.
type savedTable struct {
	chains []string    // user-defined chains, in the order listed
	rules  []savedRule // every rule, in order
	text   []string    // the table's lines, from "*name" to "COMMIT"
}

// savedRule is one "-A CHAIN ..." line of iptables-save output.
type savedRule struct {
	chain string
	args  string // everything after "-A CHAIN ", whitespace-normalised
}

// parseSave reads iptables-save output into its tables.
func parseSave(save string) (map[string]*savedTable, error) {
	tables := map[string]*savedTable{}
	var cur *savedTable
	sc := bufio.NewScanner(strings.NewReader(save))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "*"):
			cur = &savedTable{}
			tables[line[1:]] = cur
		case cur == nil:
			return nil, fmt.Errorf("iptables-save output line %d: %q is outside a table", n, line)
		case line == "COMMIT":
			cur.text = append(cur.text, line)
			cur = nil
			continue
		case strings.HasPrefix(line, ":"):
			fields := strings.Fields(line[1:])
			if len(fields) < 2 {
				return nil, fmt.Errorf("iptables-save output line %d: malformed chain %q", n, line)
			}
			if !builtinChains[fields[0]] {
				cur.chains = append(cur.chains, fields[0])
			}
		case strings.HasPrefix(line, "-A "):
			fields := strings.Fields(line)
			if len(fields) < 2 {
				return nil, fmt.Errorf("iptables-save output line %d: malformed rule %q", n, line)
			}
			cur.rules = append(cur.rules, savedRule{chain: fields[1], args: strings.Join(fields[2:], " ")})
		default:
			return nil, fmt.Errorf("iptables-save output line %d: unexpected %q", n, line)
		}
		cur.text = append(cur.text, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading iptables-save output: %w", err)
	}
	return tables, nil
}

// target returns the chain or target a rule jumps or goes to ("" if none).
func target(args []string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-j" || args[i] == "-g" || args[i] == "--jump" || args[i] == "--goto" {
			return args[i+1]
		}
	}
	return ""
}

func owned(chain string) bool { return strings.HasPrefix(chain, OwnedChainPrefix) }

// Render returns the iptables-restore --noflush input that takes a network
// namespace whose iptables-save output is current to exactly this ruleset,
// touching nothing that is not Remora's:
//
//   - every desired owned chain is declared, which creates or flushes it, and
//     its rules are appended;
//   - each jump from a built-in chain to an owned chain is kept once if it is
//     wanted and deleted otherwise (duplicates, leftovers of other flags);
//     missing jumps are appended;
//   - owned chains no longer wanted are flushed and deleted (only flushed if a
//     chain that is not Remora's still jumps to them).
//
// iptables-restore applies the whole input or nothing. An empty result means
// there is nothing to do.
func (rs *Ruleset) Render(current string) (string, error) {
	saved, err := parseSave(current)
	if err != nil {
		return "", err
	}
	desired := map[string]*Table{}
	for i := range rs.Tables {
		desired[rs.Tables[i].Name] = &rs.Tables[i]
	}

	var b strings.Builder
	for _, name := range touchedTables(desired, saved) {
		want, have := desired[name], saved[name]
		if want == nil {
			want = &Table{Name: name}
		}
		if have == nil {
			have = &savedTable{}
		}
		var stale []string
		for _, c := range have.chains {
			if owned(c) && !slices.Contains(want.Chains, c) {
				stale = append(stale, c)
			}
		}

		fmt.Fprintf(&b, "*%s\n", name)
		for _, c := range want.Chains {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c)
		}
		for _, c := range stale {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c)
		}

		// Jumps from built-in chains: keep one of each wanted, delete the rest.
		wanted := map[string]bool{}
		for _, r := range want.Rules {
			if builtinChains[r.Chain] {
				wanted[r.Chain+" "+strings.Join(r.Args, " ")] = true
			}
		}
		kept := map[string]bool{}
		for _, r := range have.rules {
			if !builtinChains[r.chain] || !owned(target(strings.Fields(r.args))) {
				continue
			}
			key := r.chain + " " + r.args
			if wanted[key] && !kept[key] {
				kept[key] = true
				continue
			}
			fmt.Fprintf(&b, "-D %s %s\n", r.chain, r.args)
		}
		for _, c := range stale {
			if !referencedByForeignChain(have, c) {
				fmt.Fprintf(&b, "-X %s\n", c)
			}
		}
		for _, r := range want.Rules {
			if builtinChains[r.Chain] && kept[r.Chain+" "+strings.Join(r.Args, " ")] {
				continue
			}
			fmt.Fprintln(&b, r.String())
		}
		b.WriteString("COMMIT\n")
	}
	return b.String(), nil
}

// touchedTables lists, in a stable order, the tables that are wanted or hold
// an owned chain now.
func touchedTables(desired map[string]*Table, saved map[string]*savedTable) []string {
	set := map[string]bool{}
	for name := range desired {
		set[name] = true
	}
	for name, t := range saved {
		if slices.ContainsFunc(t.chains, owned) {
			set[name] = true
		}
	}
	var names []string
	for _, n := range tableOrder {
		if set[n] {
			names = append(names, n)
			delete(set, n)
		}
	}
	var rest []string
	for n := range set {
		rest = append(rest, n)
	}
	slices.Sort(rest)
	return append(names, rest...)
}

// referencedByForeignChain reports whether a chain that is neither built-in
// nor owned jumps to chain; deleting chain would then fail.
func referencedByForeignChain(t *savedTable, chain string) bool {
	return slices.ContainsFunc(t.rules, func(r savedRule) bool {
		return !builtinChains[r.chain] && !owned(r.chain) && target(strings.Fields(r.args)) == chain
	})
}

// rollbackInput returns the iptables-restore input (without --noflush) that
// puts the named tables back as iptables-save printed them in save.
func rollbackInput(save string, tables []string) (string, error) {
	saved, err := parseSave(save)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, name := range tables {
		t := saved[name]
		if t == nil {
			// The table was empty: restore it empty.
			fmt.Fprintf(&b, "*%s\nCOMMIT\n", name)
			continue
		}
		for _, line := range t.text {
			b.WriteString(line + "\n")
		}
	}
	return b.String(), nil
}

// renderedTables lists the tables a Render result writes.
func renderedTables(input string) []string {
	var names []string
	for line := range strings.SplitSeq(input, "\n") {
		if strings.HasPrefix(line, "*") {
			names = append(names, line[1:])
		}
	}
	return names
}
