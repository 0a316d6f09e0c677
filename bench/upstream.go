package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// UpstreamConfig configures the built-in upstream.
type UpstreamConfig struct {
	BodySize int // response body bytes
	// Stall, when set, is asked before answering the n-th request (from 1) how long
	// to hold it; tests use it to make one request slow.
	Stall func(n uint64) time.Duration
	// Stats, when set, receives counts of the HTTP/2 side (tests).
	Stats *UpstreamStats
}

// UpstreamStats counts what the upstream's HTTP/2 side served.
type UpstreamStats struct {
	H2Requests   atomic.Uint64 // h2c requests answered, gRPC included
	GRPCRequests atomic.Uint64 // gRPC calls of GRPCMethod answered OK
	// MaxStreams is the most requests that were in the upstream's handler at once on
	// one connection: above 1 only if a client multiplexed streams on it.
	MaxStreams atomic.Int64
}

// connStreams counts the requests in the handler on one h2c connection.
type connStreams struct{ n atomic.Int64 }

type connStreamsKey struct{}

// h2Preface is the HTTP/2 client connection preface (RFC 9113 §3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// ServeUpstream serves a fixed response on ln until ctx ends, then closes ln and
// every connection and returns once all its goroutines have exited. HTTP/1.1 is
// answered by a lean hand-written responder (keep-alive, pipelining,
// Content-Length and chunked request bodies); a connection that opens with the
// HTTP/2 preface is served as h2c by net/http's HTTP/2 server. The response is 200
// with a body of cfg.BodySize bytes whatever the request, except for gRPC requests
// over h2c: GRPCMethod is answered with a BytesValue of cfg.BodySize bytes and
// status OK, any other method with UNIMPLEMENTED.
func ServeUpstream(ctx context.Context, ln net.Listener, cfg UpstreamConfig) error {
	u := &upstream{cfg: cfg, conns: map[net.Conn]struct{}{}}
	body := bytes.Repeat([]byte{'x'}, cfg.BodySize)
	u.resp = fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", cfg.BodySize, body)
	u.respClose = fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", cfg.BodySize, body)
	u.body = body
	u.grpcResp = grpcResponse(cfg.BodySize)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Connections that open with the HTTP/2 preface go to a stdlib server through
	// h2ln; the HTTP/1.1 fast path stays hand-written.
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	h2srv := &http.Server{Handler: http.HandlerFunc(u.serveH2), Protocols: &protos,
		BaseContext: func(net.Listener) context.Context { return ctx },
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, connStreamsKey{}, &connStreams{})
		}}
	u.h2ln = &connListener{addr: ln.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}
	h2done := make(chan struct{})
	go func() {
		defer close(h2done)
		_ = h2srv.Serve(u.h2ln)
	}()
	defer func() {
		h2srv.Close()
		<-h2done
	}()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var err error
	for {
		c, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("upstream accept on %s: %w", ln.Addr(), aerr)
			}
			break
		}
		u.mu.Lock()
		u.conns[c] = struct{}{}
		u.mu.Unlock()
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			defer func() {
				u.mu.Lock()
				delete(u.conns, c)
				u.mu.Unlock()
				c.Close()
			}()
			u.serveConn(ctx, c)
		}()
	}
	cancel()
	ln.Close()
	u.mu.Lock()
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
	return err
}

type upstream struct {
	cfg  UpstreamConfig
	resp []byte
	// respClose tells the client the connection ends (RFC 9112 §9.6).
	respClose []byte
	body      []byte
	grpcResp  []byte // GRPCMethod's answer, length-prefixed
	h2ln      *connListener
	n         atomic.Uint64
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     map[net.Conn]struct{}
}

// bufConn reads through a bufio.Reader that may already hold bytes of the stream.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (u *upstream) stall(ctx context.Context) {
	if u.cfg.Stall == nil {
		return
	}
	if d := u.cfg.Stall(u.n.Add(1)); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
}

func (u *upstream) serveH2(w http.ResponseWriter, r *http.Request) {
	if cs, ok := r.Context().Value(connStreamsKey{}).(*connStreams); ok {
		n := cs.n.Add(1)
		defer cs.n.Add(-1)
		if st := u.cfg.Stats; st != nil {
			for {
				m := st.MaxStreams.Load()
				if n <= m || st.MaxStreams.CompareAndSwap(m, n) {
					break
				}
			}
			defer st.H2Requests.Add(1)
		}
	}
	if isGRPC(r) {
		u.serveGRPC(w, r)
		return
	}
	_, _ = io.Copy(io.Discard, r.Body)
	u.stall(r.Context())
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(u.body)))
	_, _ = w.Write(u.body)
}

func (u *upstream) serveConn(ctx context.Context, c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	br := bufio.NewReaderSize(c, 16<<10)
	if p, err := br.Peek(3); err == nil && string(p) == "PRI" {
		if p, err := br.Peek(len(h2Preface)); err == nil && string(p) == h2Preface {
			u.h2ln.handOff(ctx, bufConn{Conn: c, r: br})
			return
		}
	}
	bw := bufio.NewWriterSize(c, 16<<10)
	for {
		keep, err := readRequest(br)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
			}
			return
		}
		u.stall(ctx)
		resp := u.resp
		if !keep {
			resp = u.respClose
		}
		if _, err := bw.Write(resp); err != nil {
			return
		}
		// Flush only when no pipelined request is waiting, so pipelined responses
		// share one write.
		if br.Buffered() == 0 || !keep {
			if err := bw.Flush(); err != nil {
				return
			}
		}
		if !keep {
			return
		}
	}
}

// connListener feeds connections accepted elsewhere to an http.Server.
type connListener struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// handOff gives c to the h2 server and blocks until the connection is closed, so
// that the caller's connection bookkeeping (close on shutdown) still covers it.
func (l *connListener) handOff(ctx context.Context, c bufConn) {
	cc := &closeNotifyConn{bufConn: c, closed: make(chan struct{})}
	select {
	case l.conns <- cc:
	case <-l.done:
		return
	case <-ctx.Done():
		return
	}
	select {
	case <-cc.closed:
	case <-ctx.Done():
	}
}

type closeNotifyConn struct {
	bufConn
	once   sync.Once
	closed chan struct{}
}

func (c *closeNotifyConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.bufConn.Close()
}

var errBadRequest = errors.New("malformed request")

// readRequest reads one request head and discards its body. keep reports whether
// the connection stays open after the response.
func readRequest(br *bufio.Reader) (keep bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if len(line) == 0 && errors.Is(err, io.EOF) {
			return false, io.EOF
		}
		return false, fmt.Errorf("request line: %w", err)
	}
	sp := bytes.LastIndexByte(line, ' ')
	if sp < 0 || !bytes.HasPrefix(line[sp+1:], []byte("HTTP/1.")) {
		return false, fmt.Errorf("request line %q: %w", line, errBadRequest)
	}
	keep = len(line) > sp+8 && line[sp+8] == '1'
	contentLength := int64(0)
	chunked := false
	for {
		h, err := br.ReadSlice('\n')
		if err != nil {
			return false, fmt.Errorf("header: %w", err)
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		colon := bytes.IndexByte(h, ':')
		if colon <= 0 {
			return false, fmt.Errorf("header %q: %w", h, errBadRequest)
		}
		name, val := h[:colon], bytes.TrimSpace(h[colon+1:])
		switch {
		case asciiEqualFold(name, "content-length"):
			n, perr := strconv.ParseInt(string(val), 10, 64)
			if perr != nil || n < 0 {
				return false, fmt.Errorf("content-length %q: %w", val, errBadRequest)
			}
			contentLength = n
		case asciiEqualFold(name, "transfer-encoding"):
			chunked = asciiEqualFold(val, "chunked")
		case asciiEqualFold(name, "connection"):
			if asciiEqualFold(val, "close") {
				keep = false
			} else if asciiEqualFold(val, "keep-alive") {
				keep = true
			}
		}
	}
	if chunked {
		if err := discardChunked(br); err != nil {
			return false, err
		}
	} else if contentLength > 0 {
		if _, err := br.Discard(int(contentLength)); err != nil {
			return false, fmt.Errorf("body: %w", err)
		}
	}
	return keep, nil
}

// discardChunked discards a chunked body, trailers included.
func discardChunked(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("chunked body: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 16, 63)
		if err != nil {
			return fmt.Errorf("chunk size %q: %w", line, errBadRequest)
		}
		if n == 0 {
			// Trailers, then the empty line.
			for {
				t, err := br.ReadSlice('\n')
				if err != nil {
					return fmt.Errorf("chunked body: %w", err)
				}
				if len(bytes.TrimRight(t, "\r\n")) == 0 {
					return nil
				}
			}
		}
		if _, err := br.Discard(int(n) + 2); err != nil {
			return fmt.Errorf("chunked body: %w", err)
		}
	}
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// ServeHTTPUtil runs the baseline a Go user would write: httputil.ReverseProxy to
// upstream (host:port), with a keep-alive pool sized for benchmarks and h2c accepted
// downstream. The upstream leg is HTTP/1.1, or h2c (prior knowledge) when
// upstreamH2C, as gRPC needs. It serves until ctx ends.
func ServeHTTPUtil(ctx context.Context, ln net.Listener, upstream string, upstreamH2C bool) error {
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: upstream})
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 0
	tr.MaxIdleConnsPerHost = 1024
	if upstreamH2C {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	rp.Transport = tr
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 30 * time.Second}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv.Protocols = &protos
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		srv.Close()
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("httputil proxy on %s: %w", ln.Addr(), err)
	}
}

// RunInternal runs a hidden subcommand of the calling binary: the processes under
// test that the harness starts by re-executing itself (Plan.Self).
//
//	upstream --listen ADDR --body-size N
//	httputil --listen ADDR --upstream HOST:PORT [--upstream-h2c]
//	floor --listen ADDR --upstream HOST:PORT
//
// It prints "listening ADDR" on stdout once ready, serves until ctx ends and returns
// the process exit code.
func RunInternal(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if len(args) == 0 {
		log.Error("internal: want a subcommand: upstream, httputil or floor")
		return 2
	}
	fs := flag.NewFlagSet("internal "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	bodySize := fs.Int("body-size", 63, "response body bytes (upstream)")
	up := fs.String("upstream", "", "upstream host:port (httputil)")
	upH2C := fs.Bool("upstream-h2c", false, "speak h2c to the upstream, not HTTP/1.1 (httputil; gRPC)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("listen", "addr", *listen, "err", err)
		return 1
	}
	fmt.Fprintf(stdout, "listening %s\n", ln.Addr())
	switch args[0] {
	case "upstream":
		err = ServeUpstream(ctx, ln, UpstreamConfig{BodySize: *bodySize})
	case "floor":
		if *up == "" {
			log.Error("floor: --upstream is required")
			return 2
		}
		err = ServeFloor(ctx, ln, *up)
	case "httputil":
		if *up == "" {
			log.Error("httputil: --upstream is required")
			return 2
		}
		err = ServeHTTPUtil(ctx, ln, *up, *upH2C)
	default:
		ln.Close()
		log.Error("internal: unknown subcommand", "name", args[0])
		return 2
	}
	if err != nil {
		log.Error("internal "+args[0], "err", err)
		return 1
	}
	return 0
}
