package intercept

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Family is an IP family; each has its own rule set and binaries.
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// Chains meshd owns in table nat. Nothing else is ever flushed or deleted.
const (
	IngressChain = "MESHD_INGRESS"
	EgressChain  = "MESHD_EGRESS"
)

// maxMultiportSlots is the kernel's limit for one multiport match (XT_MULTI_PORTS): a
// single port takes one slot, a range two. The ECS CNI plugin silently dropped ports past
// it; meshd writes as many rules as it takes instead.
const maxMultiportSlots = 15

// The jump rules, in exactly the form iptables-save prints them (both backends), so that
// Apply can recognise them in saved output.
const (
	ingressJump = "-A PREROUTING -p tcp -m addrtype ! --src-type LOCAL -j " + IngressChain
	egressJump  = "-A OUTPUT -p tcp -m addrtype ! --dst-type LOCAL -j " + EgressChain
)

// Rules returns the iptables-restore text (table nat) that installs cfg for family on a
// system without meshd rules: chain declarations, chain contents and the jumps from
// PREROUTING and OUTPUT. It is deterministic: lists are sorted and de-duplicated. Rules do
// not validate cfg; call Validate first. Feeding the text to iptables-restore --noflush
// twice duplicates the jumps; Apply is the idempotent way to install.
func Rules(cfg Config, family Family) string {
	var b strings.Builder
	b.WriteString("*nat\n")
	declareChains(&b)
	chainRules(&b, cfg, family)
	for _, j := range wantJumps(cfg) {
		b.WriteString(j)
		b.WriteByte('\n')
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// declareChains creates our chains, or flushes them if they exist: under --noflush a
// chain declaration flushes only that chain.
func declareChains(b *strings.Builder) {
	b.WriteString(":" + IngressChain + " - [0:0]\n")
	b.WriteString(":" + EgressChain + " - [0:0]\n")
}

// chainRules writes the contents of our two chains in iptables-save's canonical form.
func chainRules(b *strings.Builder, cfg Config, family Family) {
	for _, ports := range multiportLists(cfg.AppPorts) {
		fmt.Fprintf(b, "-A %s -p tcp -m multiport --dports %s -j REDIRECT --to-ports %d\n", IngressChain, ports, cfg.ingressPort())
	}
	for _, uid := range uniqueSorted(cfg.IgnoredUIDs) {
		fmt.Fprintf(b, "-A %s -m owner --uid-owner %d -j RETURN\n", EgressChain, uid)
	}
	for _, gid := range uniqueSorted(cfg.IgnoredGIDs) {
		fmt.Fprintf(b, "-A %s -m owner --gid-owner %d -j RETURN\n", EgressChain, gid)
	}
	for _, ports := range multiportLists(cfg.EgressIgnoredPorts) {
		fmt.Fprintf(b, "-A %s -p tcp -m multiport --dports %s -j RETURN\n", EgressChain, ports)
	}
	for _, p := range familyPrefixes(cfg.EgressIgnoredIPs, family) {
		fmt.Fprintf(b, "-A %s -d %s -p tcp -j RETURN\n", EgressChain, p)
	}
	fmt.Fprintf(b, "-A %s -p tcp -j REDIRECT --to-ports %d\n", EgressChain, cfg.egressPort())
}

// wantJumps lists the jump rules cfg needs: inbound only when there are app ports.
func wantJumps(cfg Config) []string {
	if len(cfg.AppPorts) == 0 {
		return []string{egressJump}
	}
	return []string{ingressJump, egressJump}
}

// familyPrefixes keeps the valid prefixes of family, sorted and de-duplicated.
func familyPrefixes(ps []netip.Prefix, family Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if !p.IsValid() || p.Addr().Is4() != (family == IPv4) {
			continue
		}
		out = append(out, p.Masked())
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out)
}

// multiportLists turns ports into multiport --dports arguments of at most 15 slots each.
// Runs of three or more consecutive ports become a range ("a:b", two slots).
func multiportLists(ports []int) []string {
	ps := uniqueSorted(ports)
	var (
		out   []string
		cur   []string
		slots int
	)
	add := func(item string, n int) {
		if slots+n > maxMultiportSlots {
			out = append(out, strings.Join(cur, ","))
			cur, slots = nil, 0
		}
		cur = append(cur, item)
		slots += n
	}
	for i := 0; i < len(ps); {
		j := i
		for j+1 < len(ps) && ps[j+1] == ps[j]+1 {
			j++
		}
		if j-i >= 2 {
			add(strconv.Itoa(ps[i])+":"+strconv.Itoa(ps[j]), 2)
		} else {
			for k := i; k <= j; k++ {
				add(strconv.Itoa(ps[k]), 1)
			}
		}
		i = j + 1
	}
	if len(cur) > 0 {
		out = append(out, strings.Join(cur, ","))
	}
	return out
}

// savedNat is the nat table of an iptables-save dump.
type savedNat struct {
	chains map[string]bool
	rules  []string // "-A CHAIN ..." lines in order
}

// parseSave extracts table nat from iptables-save output. A dump without a nat table
// (the table was never used) is an empty table.
func parseSave(out string) savedNat {
	s := savedNat{chains: map[string]bool{}}
	in := false
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "*"):
			in = line == "*nat"
		case !in:
		case line == "COMMIT":
			in = false
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			s.chains[name] = true
		case strings.HasPrefix(line, "-A "):
			s.rules = append(s.rules, strings.Join(strings.Fields(line), " "))
		}
	}
	return s
}

// ruleChain returns the chain of an "-A CHAIN ..." rule.
func ruleChain(rule string) string {
	f := strings.Fields(rule)
	if len(f) < 2 {
		return ""
	}
	return f[1]
}

// ruleTarget returns the -j or -g target of a rule.
func ruleTarget(rule string) string {
	f := strings.Fields(rule)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "-j" || f[i] == "-g" {
			return f[i+1]
		}
	}
	return ""
}

func ours(chain string) bool { return chain == IngressChain || chain == EgressChain }

// jumpsToOurs returns the rules outside our chains that jump into them.
func (s savedNat) jumpsToOurs() []string {
	var out []string
	for _, r := range s.rules {
		if !ours(ruleChain(r)) && ours(ruleTarget(r)) {
			out = append(out, r)
		}
	}
	return out
}

func deleteRule(rule string) string { return "-D" + strings.TrimPrefix(rule, "-A") }

// applyScript returns the iptables-restore --noflush text that turns the state in saved
// into cfg's rules in one transaction: our chains are re-declared (flushed) and refilled;
// a jump that is already present stays; stale or duplicate jumps to our chains are
// deleted; missing ones are appended. Foreign rules are untouched.
func applyScript(cfg Config, family Family, saved savedNat) string {
	var b strings.Builder
	b.WriteString("*nat\n")
	declareChains(&b)
	want := wantJumps(cfg)
	have := map[string]bool{}
	for _, r := range saved.jumpsToOurs() {
		if slices.Contains(want, r) && !have[r] {
			have[r] = true
			continue
		}
		b.WriteString(deleteRule(r) + "\n")
	}
	chainRules(&b, cfg, family)
	for _, j := range want {
		if !have[j] {
			b.WriteString(j + "\n")
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// cleanScript returns the iptables-restore --noflush text that removes every jump into
// our chains and then our chains, or "" when saved holds nothing of meshd's.
func cleanScript(saved savedNat) string {
	jumps := saved.jumpsToOurs()
	var chains []string
	for _, c := range []string{IngressChain, EgressChain} {
		if saved.chains[c] {
			chains = append(chains, c)
		}
	}
	if len(jumps) == 0 && len(chains) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("*nat\n")
	for _, r := range jumps {
		b.WriteString(deleteRule(r) + "\n")
	}
	for _, c := range chains {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	for _, c := range chains {
		b.WriteString("-X " + c + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}
