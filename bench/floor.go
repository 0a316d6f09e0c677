package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
)

// ScenarioFloor is the Go floor: the least a Go HTTP/1.1 keep-alive relay can do (a
// goroutine per client connection, each with its own upstream connection, bufio, the
// head copied line by line with only Content-Length understood; no net/http, no routing,
// no header rewriting). Its cost is what the Go runtime and the kernel charge for
// relaying; what meshd costs above it is meshd's own work.
const ScenarioFloor = "floor"

// floorBuf is the floor's buffer size per direction, as meshd's upstream buffers.
const floorBuf = 16 << 10

var errFloorFraming = errors.New("floor relay: only Content-Length framing is relayed")

// ServeFloor runs the floor relay on ln to upstream (host:port) until ctx ends.
func ServeFloor(ctx context.Context, ln net.Listener, upstream string) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	track := func(c net.Conn, add bool) {
		mu.Lock()
		if add {
			conns[c] = struct{}{}
		} else {
			delete(conns, c)
		}
		mu.Unlock()
	}
	go func() {
		<-ctx.Done()
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			wg.Wait()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("floor relay on %s: %w", ln.Addr(), err)
		}
		track(c, true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer track(c, false)
			defer c.Close()
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				return
			}
			track(u, true)
			defer track(u, false)
			defer u.Close()
			_ = floorRelay(c, u)
		}()
	}
}

// floorRelay relays requests from c to u and responses back, one at a time, until
// either side ends or a message is framed otherwise than by Content-Length.
func floorRelay(c, u net.Conn) error {
	cr, cw := bufio.NewReaderSize(c, floorBuf), bufio.NewWriterSize(c, floorBuf)
	ur, uw := bufio.NewReaderSize(u, floorBuf), bufio.NewWriterSize(u, floorBuf)
	for {
		n, head, err := floorHead(cr, uw)
		if err != nil {
			return err
		}
		if _, err := io.CopyN(uw, cr, n); err != nil {
			return err
		}
		if err := uw.Flush(); err != nil {
			return err
		}
		n, _, err = floorHead(ur, cw)
		if err != nil {
			return err
		}
		if head {
			n = 0 // the response to HEAD has a length but no body
		}
		if _, err := io.CopyN(cw, ur, n); err != nil {
			return err
		}
		if err := cw.Flush(); err != nil {
			return err
		}
	}
}

// floorHead copies one message head from r to w and returns its Content-Length (0 when
// absent) and whether its first line is a HEAD request's.
func floorHead(r *bufio.Reader, w *bufio.Writer) (n int64, head bool, err error) {
	for i := 0; ; i++ {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return 0, false, err
		}
		if i == 0 {
			head = bytes.HasPrefix(line, []byte("HEAD "))
		}
		if _, err := w.Write(line); err != nil {
			return 0, false, err
		}
		if len(line) <= 2 {
			return n, head, nil
		}
		if name, value, ok := bytes.Cut(line, []byte(":")); ok {
			switch {
			case asciiEqualFold(name, "content-length"):
				if n, ok = parseLength(value); !ok {
					return 0, false, errFloorFraming
				}
			case asciiEqualFold(name, "transfer-encoding"):
				return 0, false, errFloorFraming
			}
		}
	}
}

// parseLength reads a Content-Length value with its surrounding whitespace and CRLF.
func parseLength(v []byte) (int64, bool) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
