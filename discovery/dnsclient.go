package discovery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// SRV is one service record resolved to addresses.
type SRV struct {
	Target   string // the record's target name
	Port     uint16
	Weight   uint16
	Priority uint16
	Addrs    []netip.Addr // the target's addresses (A and AAAA, from the additional section when present, else looked up)
}

// ErrNXDomain is wrapped by a lookup whose name does not exist (NXDOMAIN for every name
// the search list tried). Any other failure (timeout, SERVFAIL, refused, no server) is
// not ErrNXDomain: the caller keeps its last good answer then.
var ErrNXDomain = errors.New("no such name (NXDOMAIN)")

// ClientConfig is where and how to ask.
//
// Zero fields take the defaults: Ndots 1 (so resolv.conf's "ndots:0" behaves as
// ndots:1), Timeout 5s, Attempts 2. A config with no servers makes every lookup fail.
type ClientConfig struct {
	Servers  []string      // "ip:port" each; tried in order
	Search   []string      // search domains (resolv.conf search/domain)
	Ndots    int           // resolv.conf ndots (default 1)
	Timeout  time.Duration // per query per server (default 5s, resolv.conf timeout)
	Attempts int           // rounds over the server list (default 2, resolv.conf attempts)
}

const (
	defaultTimeout  = 5 * time.Second
	defaultAttempts = 2
	defaultNdots    = 1
	// ednsSize is the EDNS0 UDP buffer the client offers: the DNS Flag Day 2020 value,
	// which avoids IP fragmentation on common paths.
	ednsSize = 1232
	// maxParallel bounds the SRV target lookups in flight at once.
	maxParallel = 8
)

// ClientConfigFromFile reads a resolv.conf (dns.ClientConfigFromFile) into a ClientConfig.
// Every nameserver must be an IP address (it gets port 53); a file with none means
// 127.0.0.1:53, as glibc does. The search list is the last search or domain line (the
// host's own domain is not used when there is none).
func ClientConfigFromFile(path string) (ClientConfig, error) {
	rc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return ClientConfig{}, fmt.Errorf("resolv.conf %s: %w", path, err)
	}
	port, err := strconv.ParseUint(rc.Port, 10, 16)
	if err != nil || port == 0 {
		return ClientConfig{}, fmt.Errorf("resolv.conf %s: port %q: not in 1-65535", path, rc.Port)
	}
	cfg := ClientConfig{
		Search:   slices.Clone(rc.Search),
		Ndots:    rc.Ndots,
		Timeout:  time.Duration(rc.Timeout) * time.Second,
		Attempts: rc.Attempts,
	}
	for _, s := range rc.Servers {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return ClientConfig{}, fmt.Errorf("resolv.conf %s: nameserver %q: not an IP address", path, s)
		}
		cfg.Servers = append(cfg.Servers, netip.AddrPortFrom(ip.Unmap(), uint16(port)).String())
	}
	if len(cfg.Servers) == 0 {
		cfg.Servers = []string{"127.0.0.1:53"}
	}
	return cfg, nil
}

// ClientConfigFor is a config for explicit servers ("ip" or "ip:port", port 53 by default; bad input is an error naming it), no search list, ndots 1.
// IPv6 addresses are written "::1" or "[::1]:53". Host names are refused: a DNS
// server's address cannot itself depend on DNS.
func ClientConfigFor(servers []string) (ClientConfig, error) {
	if len(servers) == 0 {
		return ClientConfig{}, errors.New("dns servers: none given")
	}
	cfg := ClientConfig{Ndots: defaultNdots, Timeout: defaultTimeout, Attempts: defaultAttempts}
	for i, s := range servers {
		ap, err := parseServer(s)
		if err != nil {
			return ClientConfig{}, fmt.Errorf("dns servers[%d] %q: %w", i, s, err)
		}
		cfg.Servers = append(cfg.Servers, ap.String())
	}
	return cfg, nil
}

func parseServer(s string) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, errors.New("empty")
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), 53), nil
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		ip, err := netip.ParseAddr(s[1 : len(s)-1])
		if err != nil || !ip.Is6() {
			return netip.AddrPort{}, errors.New("want ip or ip:port (brackets are for IPv6 literals)")
		}
		return netip.AddrPortFrom(ip, 53), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, errors.New("want ip or ip:port")
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("host %q is not an IP address", host)
	}
	if strings.HasPrefix(s, "[") && !ip.Is6() {
		return netip.AddrPort{}, errors.New("brackets are for IPv6 literals only")
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return netip.AddrPort{}, fmt.Errorf("port %q is not in 1-65535", port)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(p)), nil
}

// Client resolves names with miekg/dns. Safe for concurrent use.
//
// It is a stub resolver: it asks the configured servers for recursion and reads their
// answers, following a CNAME chain inside an answer but not asking again for a chain's
// target. A lookup is strict: an error for any query it needs (a search candidate, the
// A or the AAAA half, an SRV target) fails the whole lookup, so that a partial answer is
// never mistaken for a complete set.
type Client struct {
	cfg      ClientConfig
	search   []string // absolute, lower-case, without the leading dot
	udp, tcp *dns.Client
}

// NewClient returns a Client for cfg, with the defaults applied to zero fields.
func NewClient(cfg ClientConfig) *Client {
	cfg.Servers = slices.Clone(cfg.Servers)
	if cfg.Ndots <= 0 {
		cfg.Ndots = defaultNdots
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = defaultAttempts
	}
	c := &Client{
		cfg: cfg,
		// Timeout bounds dial, write and read; each query's context deadline (also
		// cfg.Timeout, or the caller's if sooner) is what ends it.
		udp: &dns.Client{Net: "udp", Timeout: cfg.Timeout, UDPSize: ednsSize},
		tcp: &dns.Client{Net: "tcp", Timeout: cfg.Timeout},
	}
	for _, s := range cfg.Search {
		s = strings.Trim(strings.ToLower(s), ".")
		if s != "" && !slices.Contains(c.search, s) {
			c.search = append(c.search, s)
		}
	}
	return c
}

// LookupIP resolves name's A and/or AAAA records as pref (IPv4_ONLY: A only; IPv6_ONLY: AAAA only; IPv4_PREFERRED / IPv6_PREFERRED / "": both, the caller applies the preference with endpointsFor) allows, and returns the addresses and the answer's smallest TTL (over the records used). A name that exists with no record of the wanted types returns no addresses and a nil error (TTL: the SOA minimum from the authority section if present, else 0).
//
// The addresses are sorted (IPv4 first) and deduplicated; an A record gives an IPv4
// address and an AAAA record an IPv6 one. The TTL counts the CNAME records of the chain
// that led to the addresses. The negative TTL is min(SOA TTL, SOA MINIMUM), as RFC 2308
// defines it. As glibc does, a search candidate that exists without the wanted records
// does not end the search: a later candidate with records wins, and the empty answer of
// the first such candidate is returned only when none has any.
func (c *Client) LookupIP(ctx context.Context, name, pref string) ([]netip.Addr, time.Duration, error) {
	var qtypes []uint16
	switch pref {
	case IPv4Only:
		qtypes = []uint16{dns.TypeA}
	case IPv6Only:
		qtypes = []uint16{dns.TypeAAAA}
	case IPv4Preferred, IPv6Preferred, "":
		qtypes = []uint16{dns.TypeA, dns.TypeAAAA}
	default:
		return nil, 0, fmt.Errorf("dns lookup %s: ipPreference %q: %w", name, pref, checkIPPreference(pref))
	}
	cands, err := c.candidates(name)
	if err != nil {
		return nil, 0, err
	}
	var (
		nodata    bool
		nodataTTL uint32
		nx        error
	)
	for _, cand := range cands {
		res, err := c.lookupAddrs(ctx, cand, qtypes)
		switch {
		case errors.Is(err, ErrNXDomain):
			nx = err
			continue
		case err != nil:
			return nil, 0, err
		case len(res.addrs) > 0:
			return res.addrs, seconds(res.ttl), nil
		case !nodata:
			nodata, nodataTTL = true, res.ttl
		}
	}
	if nodata {
		return nil, seconds(nodataTTL), nil
	}
	return nil, 0, nxError(name, cands, nx)
}

// LookupSRV resolves name's SRV records (only the lowest priority value present is returned, as a client uses the lowest priority first) with each target's addresses, and the smallest TTL of the records used (SRV and address records).
//
// The search list applies to name as in LookupIP. Records with the target "." (RFC
// 2782: the service is not available here) are left out. The result is sorted by
// target, then port. A target's addresses come from the additional section when it has
// any A or AAAA record for the target; otherwise the target is looked up (A and AAAA,
// as an absolute name). A target that turns out not to exist or to have no address is
// returned with no Addrs (its negative TTL, when known, counts in the TTL); any other
// failure to look a target up fails the lookup. An SRV name that exists without SRV
// records returns no records and a nil error, with the SOA TTL as in LookupIP.
func (c *Client) LookupSRV(ctx context.Context, name string) ([]SRV, time.Duration, error) {
	cands, err := c.candidates(name)
	if err != nil {
		return nil, 0, err
	}
	var (
		nodata    bool
		nodataTTL uint32
		nx        error
	)
	for _, cand := range cands {
		r, err := c.query(ctx, cand, dns.TypeSRV)
		if err != nil {
			return nil, 0, err
		}
		if r.rcode == dns.RcodeNameError {
			nx = r.nxError()
			continue
		}
		rrs, chainTTL, ok := records(r.msg, cand, dns.TypeSRV)
		if !ok {
			if !nodata {
				nodata, nodataTTL = true, negativeTTL(r.msg)
			}
			continue
		}
		return c.resolveTargets(ctx, r.msg, rrs, chainTTL)
	}
	if nodata {
		return nil, seconds(nodataTTL), nil
	}
	return nil, 0, nxError(name, cands, nx)
}

// resolveTargets turns the SRV records of an answer into the result of LookupSRV.
func (c *Client) resolveTargets(ctx context.Context, msg *dns.Msg, rrs []dns.RR, chainTTL uint32) ([]SRV, time.Duration, error) {
	var srvs []*dns.SRV
	lowest := uint16(math.MaxUint16)
	for _, rr := range rrs {
		s := rr.(*dns.SRV)
		if s.Target == "." {
			continue
		}
		srvs = append(srvs, s)
		lowest = min(lowest, s.Priority)
	}
	ttl := chainTTL
	var (
		out     []SRV
		targets []string // distinct, lower-case
	)
	for _, s := range srvs {
		if s.Priority != lowest {
			continue
		}
		ttl = min(ttl, s.Hdr.Ttl)
		out = append(out, SRV{Target: s.Target, Port: s.Port, Weight: s.Weight, Priority: s.Priority})
		if t := strings.ToLower(s.Target); !slices.Contains(targets, t) {
			targets = append(targets, t)
		}
	}
	if len(srvs) == 0 {
		// Only "." records: they are the answer, so their TTLs count.
		for _, rr := range rrs {
			ttl = min(ttl, rr.Header().Ttl)
		}
		return nil, seconds(ttl), nil
	}

	// Addresses per target: from the additional section, else looked up.
	type result struct {
		addrs []netip.Addr
		ttl   uint32 // with no addrs: the negative TTL, 0 if unknown
		err   error
	}
	results := make([]result, len(targets))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxParallel)
	for i, t := range targets {
		if addrs, attl := additional(msg, t); len(addrs) > 0 {
			results[i] = result{addrs: addrs, ttl: attl}
			continue
		}
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				results[i] = result{err: fmt.Errorf("dns lookup %s: %w", t, ctx.Err())}
				return
			}
			res, err := c.lookupAddrs(ctx, t, []uint16{dns.TypeA, dns.TypeAAAA})
			switch {
			case errors.Is(err, ErrNXDomain):
				var nxe *nxAnswer
				if errors.As(err, &nxe) {
					res.ttl = nxe.ttl
				}
				err = nil
			case err != nil:
				cancel() // the lookup fails: stop the others
			}
			results[i] = result{addrs: res.addrs, ttl: res.ttl, err: err}
		})
	}
	wg.Wait()
	byTarget := make(map[string][]netip.Addr, len(targets))
	var errs []error
	for i, r := range results {
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		byTarget[targets[i]] = r.addrs
		if r.ttl > 0 || len(r.addrs) > 0 {
			ttl = min(ttl, r.ttl)
		}
	}
	if len(errs) > 0 {
		return nil, 0, fmt.Errorf("dns lookup SRV targets: %w", firstCause(errs))
	}
	for i := range out {
		out[i].Addrs = slices.Clone(byTarget[strings.ToLower(out[i].Target)])
	}
	slices.SortFunc(out, func(a, b SRV) int {
		return cmp.Or(cmp.Compare(strings.ToLower(a.Target), strings.ToLower(b.Target)), cmp.Compare(a.Port, b.Port), cmp.Compare(b.Weight, a.Weight))
	})
	return out, seconds(ttl), nil
}

// additional returns target's A and AAAA records in the additional section of msg, and
// their smallest TTL.
func additional(msg *dns.Msg, target string) ([]netip.Addr, uint32) {
	var addrs []netip.Addr
	ttl := uint32(math.MaxUint32)
	for _, rr := range msg.Extra {
		if !strings.EqualFold(rr.Header().Name, target) || rr.Header().Class != dns.ClassINET {
			continue
		}
		if a, ok := addrOf(rr); ok {
			addrs = append(addrs, a)
			ttl = min(ttl, rr.Header().Ttl)
		}
	}
	return sortAddrs(addrs), ttl
}

// addrsResult is the answer for one absolute name: its addresses and their smallest TTL,
// or (no addresses) the negative TTL.
type addrsResult struct {
	addrs []netip.Addr
	ttl   uint32
}

// lookupAddrs asks for the qtypes of one absolute name at once. The name does not exist
// (an error wrapping ErrNXDomain, as *nxAnswer) when an answer says NXDOMAIN and none
// has records; any failed query fails it.
func (c *Client) lookupAddrs(ctx context.Context, qname string, qtypes []uint16) (addrsResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type one struct {
		r   reply
		err error
	}
	got := make([]one, len(qtypes))
	var wg sync.WaitGroup
	for i, qt := range qtypes {
		wg.Go(func() {
			r, err := c.query(ctx, qname, qt)
			if err != nil {
				cancel()
			}
			got[i] = one{r, err}
		})
	}
	wg.Wait()
	var errs []error
	for _, g := range got {
		if g.err != nil {
			errs = append(errs, g.err)
		}
	}
	if len(errs) > 0 {
		return addrsResult{}, firstCause(errs)
	}

	var (
		res       addrsResult
		nx        *nxAnswer
		recTTL    = uint32(math.MaxUint32)
		negTTL    = uint32(math.MaxUint32)
		hasNegTTL bool
	)
	for i, g := range got {
		if g.r.rcode == dns.RcodeNameError {
			if nx == nil {
				nx = g.r.nxError()
			}
			continue
		}
		rrs, ttl, ok := records(g.r.msg, qname, qtypes[i])
		if !ok {
			if soa, ok := soaTTL(g.r.msg); ok {
				negTTL, hasNegTTL = min(negTTL, soa), true
			}
			continue
		}
		recTTL = min(recTTL, ttl)
		for _, rr := range rrs {
			if a, ok := addrOf(rr); ok {
				res.addrs = append(res.addrs, a)
				recTTL = min(recTTL, rr.Header().Ttl)
			}
		}
	}
	if len(res.addrs) > 0 {
		res.addrs = sortAddrs(res.addrs)
		res.ttl = recTTL
		return res, nil
	}
	if nx != nil {
		return addrsResult{}, nx
	}
	if hasNegTTL {
		res.ttl = negTTL
	}
	return res, nil
}

// firstCause picks, from the errors of queries run together, the first that is not the
// cancellation one failure caused in the others; if all are cancellations (the caller's
// ctx ended), the first.
func firstCause(errs []error) error {
	for _, err := range errs {
		if !errors.Is(err, context.Canceled) {
			return err
		}
	}
	return errs[0]
}

func addrOf(rr dns.RR) (netip.Addr, bool) {
	switch rr := rr.(type) {
	case *dns.A:
		if a, ok := netip.AddrFromSlice(rr.A.To4()); ok {
			return a, true
		}
	case *dns.AAAA:
		if a, ok := netip.AddrFromSlice(rr.AAAA); ok && a.Is6() {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func sortAddrs(addrs []netip.Addr) []netip.Addr {
	slices.SortFunc(addrs, netip.Addr.Compare)
	return slices.Compact(addrs)
}

// records returns the records of qtype an answer holds for qname, following the CNAME
// chain from qname inside the answer section, and the smallest TTL of the chain's CNAME
// records (math.MaxUint32 if there are none); ok is false when there are no records.
func records(msg *dns.Msg, qname string, qtype uint16) (rrs []dns.RR, chainTTL uint32, ok bool) {
	ttl := uint32(math.MaxUint32)
	cur := qname
	for range 16 { // a longer chain is a loop or an abuse
		for _, rr := range msg.Answer {
			h := rr.Header()
			if h.Rrtype == qtype && h.Class == dns.ClassINET && strings.EqualFold(h.Name, cur) {
				rrs = append(rrs, rr)
			}
		}
		if len(rrs) > 0 || qtype == dns.TypeCNAME {
			break
		}
		var next *dns.CNAME
		for _, rr := range msg.Answer {
			if cn, isCNAME := rr.(*dns.CNAME); isCNAME && cn.Hdr.Class == dns.ClassINET && strings.EqualFold(cn.Hdr.Name, cur) {
				next = cn
				break
			}
		}
		if next == nil {
			break
		}
		ttl = min(ttl, next.Hdr.Ttl)
		cur = next.Target
	}
	if len(rrs) == 0 {
		return nil, 0, false
	}
	return rrs, ttl, true
}

// soaTTL is the negative-caching TTL of an answer: min(SOA TTL, SOA MINIMUM) of the SOA
// in its authority section (RFC 2308 section 5).
func soaTTL(msg *dns.Msg) (uint32, bool) {
	for _, rr := range msg.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return min(soa.Hdr.Ttl, soa.Minttl), true
		}
	}
	return 0, false
}

func negativeTTL(msg *dns.Msg) uint32 {
	ttl, _ := soaTTL(msg)
	return ttl
}

func seconds(ttl uint32) time.Duration { return time.Duration(ttl) * time.Second }

// candidates lists the absolute names to try for name, in order, as glibc's res_search
// does: a name with a trailing dot is tried alone; a name with at least ndots dots is
// tried as is, then with each search domain; any other name with each search domain,
// then as is.
func (c *Client) candidates(name string) ([]string, error) {
	if name == "" || name == "." {
		return nil, errors.New("dns lookup: empty name")
	}
	if _, ok := dns.IsDomainName(name); !ok {
		return nil, fmt.Errorf("dns lookup %q: not a valid domain name", name)
	}
	if dns.IsFqdn(name) {
		return []string{name}, nil
	}
	abs := name + "."
	var out []string
	asIsFirst := strings.Count(name, ".") >= c.cfg.Ndots
	if asIsFirst {
		out = append(out, abs)
	}
	for _, s := range c.search {
		cand := abs + s + "."
		if _, ok := dns.IsDomainName(cand); ok && !slices.ContainsFunc(out, func(o string) bool { return strings.EqualFold(o, cand) }) {
			out = append(out, cand)
		}
	}
	if !asIsFirst {
		out = append(out, abs)
	}
	return out, nil
}

// nxAnswer is the error of a name that does not exist; it wraps ErrNXDomain.
type nxAnswer struct {
	name, server string
	ttl          uint32 // the negative TTL, 0 if the answer had no SOA
}

func (e *nxAnswer) Error() string {
	return fmt.Sprintf("dns lookup %s: server %s: %v", e.name, e.server, ErrNXDomain)
}

func (e *nxAnswer) Unwrap() error { return ErrNXDomain }

func nxError(name string, cands []string, last error) error {
	if len(cands) == 1 {
		return last
	}
	return fmt.Errorf("dns lookup %s (tried %s): %w", name, strings.Join(cands, " "), last)
}

// reply is the answer of one server to one query: rcode NOERROR or NXDOMAIN.
type reply struct {
	msg    *dns.Msg
	server string
	rcode  int
}

func (r reply) nxError() *nxAnswer {
	return &nxAnswer{name: r.msg.Question[0].Name, server: r.server, ttl: negativeTTL(r.msg)}
}

// serverError is one server's failure to answer one query.
type serverError struct {
	server string
	err    error
}

func (e *serverError) Error() string { return "server " + e.server + ": " + e.err.Error() }
func (e *serverError) Unwrap() error { return e.err }

// queryError is the failure of one query on every server and round: the last error of
// each server, in server order.
type queryError struct {
	qname, qtype string
	errs         []error
}

func (e *queryError) Error() string {
	msgs := make([]string, len(e.errs))
	for i, err := range e.errs {
		msgs[i] = err.Error()
	}
	return fmt.Sprintf("dns lookup %s %s: %s", e.qname, e.qtype, strings.Join(msgs, "; "))
}

func (e *queryError) Unwrap() []error { return e.errs }

// errRcode is an answer whose rcode is neither NOERROR nor NXDOMAIN.
type errRcode int

func (e errRcode) Error() string {
	s, ok := dns.RcodeToString[int(e)]
	if !ok {
		s = "rcode " + strconv.Itoa(int(e))
	}
	return "answered " + s
}

// query asks the servers, in order, for Attempts rounds, for (qname, qtype) until one
// answers NOERROR or NXDOMAIN. Each try gets cfg.Timeout; a truncated UDP answer is asked
// again over TCP on the same server. It stops at once when ctx ends.
func (c *Client) query(ctx context.Context, qname string, qtype uint16) (reply, error) {
	qtypeStr := dns.TypeToString[qtype]
	if len(c.cfg.Servers) == 0 {
		return reply{}, fmt.Errorf("dns lookup %s %s: no DNS server configured", qname, qtypeStr)
	}
	last := make([]error, len(c.cfg.Servers))
	for range c.cfg.Attempts {
		for i, server := range c.cfg.Servers {
			if err := ctx.Err(); err != nil {
				return reply{}, fmt.Errorf("dns lookup %s %s: server %s: %w", qname, qtypeStr, server, err)
			}
			r, err := c.exchange(ctx, qname, qtype, server)
			if err == nil {
				switch r.Rcode {
				case dns.RcodeSuccess, dns.RcodeNameError:
					return reply{msg: r, server: server, rcode: r.Rcode}, nil
				}
				err = errRcode(r.Rcode)
			}
			if ctx.Err() != nil {
				return reply{}, fmt.Errorf("dns lookup %s %s: server %s: %w", qname, qtypeStr, server, ctx.Err())
			}
			last[i] = &serverError{server: server, err: err}
		}
	}
	return reply{}, &queryError{qname: qname, qtype: qtypeStr, errs: last}
}

// exchange sends one query to one server, over UDP and then, if the answer is
// truncated, over TCP, and checks that the answer is for the question.
func (c *Client) exchange(ctx context.Context, qname string, qtype uint16, server string) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.RecursionDesired = true
	m.SetEdns0(ednsSize, false)
	r, err := c.exchangeOn(ctx, c.udp, m, server)
	if r != nil && r.Truncated {
		// A truncated answer may not even unpack (err): TCP has all of it.
		m.Id = dns.Id()
		r, err = c.exchangeOn(ctx, c.tcp, m, server)
		if err != nil {
			err = fmt.Errorf("over TCP after a truncated UDP answer: %w", err)
		}
	}
	if err != nil {
		return nil, err
	}
	if len(r.Question) != 1 || r.Question[0].Qtype != qtype || !strings.EqualFold(r.Question[0].Name, qname) {
		return nil, errors.New("answer is for another question")
	}
	return r, nil
}

// exchangeOn runs one exchange within cfg.Timeout, and ends it when parent ends (the dns
// package only honours a context's deadline, not its cancellation, once connected). A
// timeout is reported as wrapping os.ErrDeadlineExceeded.
func (c *Client) exchangeOn(parent context.Context, dc *dns.Client, m *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(parent, c.cfg.Timeout)
	defer cancel()
	conn, err := dc.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// The deadlines ExchangeWithConnContext sets from ctx end it in time; closing the
	// connection ends it when the caller cancels.
	stop := context.AfterFunc(parent, func() { conn.Close() })
	defer stop()
	r, _, err := dc.ExchangeWithConnContext(ctx, m, conn)
	if err != nil && ctx.Err() != nil {
		if parent.Err() != nil {
			return r, parent.Err() // the caller's deadline or cancellation
		}
		return r, fmt.Errorf("no answer within %v: %w", c.cfg.Timeout, os.ErrDeadlineExceeded)
	}
	return r, err
}
