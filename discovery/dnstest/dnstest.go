// Package dnstest runs an in-process authoritative DNS server (github.com/miekg/dns) on
// 127.0.0.1 for tests: UDP and TCP on one port, a zone the test changes while the server
// runs, per-name rcodes, forced truncation over UDP, a server that drops every query or
// fails every query, and query counters.
//
// It is test-only: only _test.go files import it. Every Server stops in t.Cleanup and
// waits for its goroutines, so tests may run under go.uber.org/goleak.
package dnstest

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// waitLimit bounds every wait in this package, so a broken test fails instead of hanging.
const waitLimit = 10 * time.Second

// bufSize is the EDNS0 buffer size the server advertises and answers within.
const bufSize = 1232

type key struct {
	name  string // lower-case FQDN
	qtype uint16
}

type mode int

const (
	serving  mode = iota // answer from the zone
	dropping             // read queries and never answer
	failing              // answer every query with failRcode
)

// Server is an authoritative DNS server on 127.0.0.1. All methods are safe for
// concurrent use; the ones that take a testing.TB fail the test from the calling
// goroutine, so call those from the test goroutine.
//
// The zone starts empty: every name is NXDOMAIN until Set gives it records. A name
// exists (so a query for a type it lacks gets NOERROR with no answer, "NODATA") once it
// has any record set. Negative answers (NXDOMAIN, NODATA) carry in their authority
// section the SOA of the nearest enclosing name that has one (Set(zone, dns.TypeSOA, ...)).
type Server struct {
	t        testing.TB
	addr     string
	udp, tcp *dns.Server

	mu        sync.Mutex
	rrs       map[key][]dns.RR
	extra     map[key][]dns.RR
	rcode     map[string]int
	truncate  map[string]bool
	mode      mode
	failRcode int
	total     int
	udpCount  map[key]int
	tcpCount  map[key]int
	changed   chan struct{} // closed and replaced after every query
}

// Start runs a Server on 127.0.0.1 (one port for UDP and TCP) until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{
		t:        t,
		rrs:      make(map[key][]dns.RR),
		extra:    make(map[key][]dns.RR),
		rcode:    make(map[string]int),
		truncate: make(map[string]bool),
		udpCount: make(map[key]int),
		tcpCount: make(map[key]int),
		changed:  make(chan struct{}),
	}
	pc, ln := listen(t)
	s.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	s.udp = &dns.Server{PacketConn: pc, Handler: h}
	s.tcp = &dns.Server{Listener: ln, Handler: h}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan error, 1)
		go func() { done <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-done:
			t.Fatalf("dnstest: server: %v", err)
		case <-time.After(waitLimit):
			t.Fatal("dnstest: server did not start")
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			if err := srv.ShutdownContext(ctx); err != nil {
				t.Errorf("dnstest: shutdown: %v", err)
			}
			<-done
		})
	}
	return s
}

// listen binds UDP on 127.0.0.1:0 and TCP on the same port, retrying on the rare port
// that is free for UDP and taken for TCP.
func listen(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("dnstest: listen udp: %v", err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		lastErr = err
		pc.Close()
	}
	t.Fatalf("dnstest: no port free for both UDP and TCP: %v", lastErr)
	return nil, nil
}

// Addr is the server's "127.0.0.1:port", the same for UDP and TCP.
func (s *Server) Addr() string { return s.addr }

func canon(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// Set replaces the record set (name, qtype) with rrs, each an RR in zone-file form such
// as "svc.test. 5 IN A 127.0.0.2"; with no rrs it removes the set. Every RR must be of
// type qtype and owned by name (a relative name is made absolute).
func (s *Server) Set(name string, qtype uint16, rrs ...string) {
	s.t.Helper()
	k := key{canon(name), qtype}
	parsed := s.parse(rrs, func(rr dns.RR) bool {
		return rr.Header().Rrtype == qtype && canon(rr.Header().Name) == k.name
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(parsed) == 0 {
		delete(s.rrs, k)
		return
	}
	s.rrs[k] = parsed
}

// SetAdditional sets the records the server puts in the additional section of its
// answers to (name, qtype), such as the A records of SRV targets; with no rrs it
// removes them. The server adds no additional records on its own.
func (s *Server) SetAdditional(name string, qtype uint16, rrs ...string) {
	s.t.Helper()
	k := key{canon(name), qtype}
	parsed := s.parse(rrs, nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(parsed) == 0 {
		delete(s.extra, k)
		return
	}
	s.extra[k] = parsed
}

func (s *Server) parse(rrs []string, ok func(dns.RR) bool) []dns.RR {
	s.t.Helper()
	var out []dns.RR
	for _, str := range rrs {
		rr, err := dns.NewRR(str)
		if err != nil {
			s.t.Fatalf("dnstest: %q: %v", str, err)
		}
		if rr == nil {
			s.t.Fatalf("dnstest: %q: no record", str)
		}
		if ok != nil && !ok(rr) {
			s.t.Fatalf("dnstest: %q does not belong to the record set being set", str)
		}
		out = append(out, rr)
	}
	return out
}

// SetRcode answers every query for name with rcode (dns.RcodeNameError,
// dns.RcodeServerFailure, ...), whatever the zone holds; dns.RcodeSuccess removes the
// override.
func (s *Server) SetRcode(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rcode == dns.RcodeSuccess {
		delete(s.rcode, canon(name))
		return
	}
	s.rcode[canon(name)] = rcode
}

// SetTruncated, when on, makes every UDP answer for name carry the TC bit and only its
// first answer record, so that a client must retry over TCP for the rest. (Without it
// the server still truncates a UDP answer that does not fit the client's buffer: 512
// bytes, or the EDNS0 size up to 1232.)
func (s *Server) SetTruncated(name string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.truncate[canon(name)] = true
	} else {
		delete(s.truncate, canon(name))
	}
}

// Down makes the server read and drop every query (UDP and TCP), so clients time out,
// until Up. Dropped queries are counted.
func (s *Server) Down() { s.setMode(dropping, 0) }

// FailAll makes the server answer every query with rcode (dns.RcodeServerFailure,
// dns.RcodeRefused, ...) until Up.
func (s *Server) FailAll(rcode int) { s.setMode(failing, rcode) }

// Up makes the server answer from its zone again.
func (s *Server) Up() { s.setMode(serving, 0) }

func (s *Server) setMode(m mode, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode, s.failRcode = m, rcode
}

// Queries is the number of queries the server has received, over UDP and TCP,
// answered or not.
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// QueriesFor is the number of queries for (name, qtype) the server has received over
// UDP and over TCP.
func (s *Server) QueriesFor(name string, qtype uint16) (udp, tcp int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key{canon(name), qtype}
	return s.udpCount[k], s.tcpCount[k]
}

// WaitQueries blocks until the server has received at least n queries in all, and fails
// the test if that takes more than 10 seconds.
func (s *Server) WaitQueries(n int) {
	s.t.Helper()
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		total, changed := s.total, s.changed
		s.mu.Unlock()
		if total >= n {
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			s.t.Fatalf("dnstest: %d queries after %v, want %d", total, waitLimit, n)
		}
	}
}

func (s *Server) serve(w dns.ResponseWriter, q *dns.Msg) {
	tcp := w.LocalAddr().Network() == "tcp"
	m, drop := s.answer(q, tcp)
	if drop {
		return
	}
	// A write fails only when the client has gone (given up, closed its connection),
	// which is no concern of the server's.
	_ = w.WriteMsg(m)
}

// answer builds the reply to q, and counts q; drop means send nothing.
func (s *Server) answer(q *dns.Msg, tcp bool) (m *dns.Msg, drop bool) {
	m = new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	size := dns.MinMsgSize
	if opt := q.IsEdns0(); opt != nil {
		size = max(min(int(opt.UDPSize()), bufSize), dns.MinMsgSize)
		m.SetEdns0(bufSize, false)
	}
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m, false
	}
	qname := canon(q.Question[0].Name)
	qtype := q.Question[0].Qtype

	s.mu.Lock()
	defer s.mu.Unlock()
	s.total++
	k := key{qname, qtype}
	if tcp {
		s.tcpCount[k]++
	} else {
		s.udpCount[k]++
	}
	close(s.changed)
	s.changed = make(chan struct{})

	switch s.mode {
	case dropping:
		return nil, true
	case failing:
		m.Rcode = s.failRcode
		return m, false
	}
	if rc, ok := s.rcode[qname]; ok {
		m.Rcode = rc
		if rc == dns.RcodeNameError {
			m.Ns = s.soaFor(qname)
		}
		return m, false
	}

	// Follow CNAMEs inside the zone, as an authoritative server does.
	cur := qname
	found := false
	for range 8 {
		if rrs, ok := s.rrs[key{cur, qtype}]; ok {
			m.Answer = append(m.Answer, copyRRs(rrs)...)
			found = true
			break
		}
		cn, ok := s.rrs[key{cur, dns.TypeCNAME}]
		if !ok || qtype == dns.TypeCNAME {
			break
		}
		m.Answer = append(m.Answer, copyRRs(cn)...)
		cur = canon(cn[0].(*dns.CNAME).Target)
	}
	if !found {
		if !s.exists(cur) {
			m.Rcode = dns.RcodeNameError
		}
		m.Ns = s.soaFor(cur)
	}
	m.Extra = append(m.Extra, copyRRs(s.extra[k])...)

	if !tcp {
		if s.truncate[qname] {
			m.Truncated = true
			if len(m.Answer) > 1 {
				m.Answer = m.Answer[:1]
			}
			m.Ns, m.Extra = nil, nil
			if q.IsEdns0() != nil {
				m.SetEdns0(bufSize, false)
			}
		} else {
			m.Truncate(size)
		}
	}
	return m, false
}

// exists reports whether name has any record set; s.mu is held.
func (s *Server) exists(name string) bool {
	for k := range s.rrs {
		if k.name == name {
			return true
		}
	}
	return false
}

// soaFor is the SOA of the nearest enclosing name of name that has one; s.mu is held.
func (s *Server) soaFor(name string) []dns.RR {
	for off, end := 0, false; !end; off, end = dns.NextLabel(name, off) {
		if soa, ok := s.rrs[key{name[off:], dns.TypeSOA}]; ok {
			return copyRRs(soa)
		}
	}
	return nil
}

// copyRRs copies records into an answer: packing a message writes each record's
// header (Rdlength), so concurrent answers must not share them.
func copyRRs(rrs []dns.RR) []dns.RR {
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		out[i] = dns.Copy(rr)
	}
	return out
}
