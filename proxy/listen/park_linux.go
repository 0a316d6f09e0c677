//go:build linux

package listen

import (
	"container/heap"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Parker is the set of parked connections of a server (park.go) and the goroutine that
// waits on it. Safe for concurrent use.
type Parker struct {
	// Now tells the time the expiries are compared with (nil: time.Now). The
	// connections' deadlines are the system clock's, so a test changes this only to
	// exercise the Parker alone.
	Now func() time.Time

	// onSettle (NewParker) runs after a wave of parking has ended.
	onSettle func()

	epfd, evfd int
	done       chan struct{}
	parkedN    atomic.Int64

	mu     sync.Mutex
	byID   map[uint64]*parked
	exp    parkHeap
	nextID uint64
	closed bool
	// waitUntil is the expiry epoll_wait's current timeout ends at (zero: none): a
	// park that expires earlier wakes the loop to wait less.
	waitUntil time.Time
	// The wave of parking since OnSettle last ran: how many, and the last one's time.
	wave     int
	lastPark time.Time
}

// A wave of parking has ended (OnSettle) when SettleMin connections parked and then
// none for SettleQuiet.
const (
	SettleMin   = 1000
	SettleQuiet = time.Second
)

// NewParker starts a Parker; Close stops it. onSettle, when not nil, runs (on a
// goroutine of its own) after a wave of parking has ended: SettleMin connections or
// more parked since its last run, then none for SettleQuiet. The connections gave their
// buffers back to pools, which only the next collections empty, and an idle process may
// not collect for minutes: the server returns that memory to the system there.
func NewParker(onSettle func()) (*Parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN} // data 0: the wake-up
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		_ = unix.Close(evfd)
		_ = unix.Close(epfd)
		return nil, fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	p := &Parker{onSettle: onSettle, epfd: epfd, evfd: evfd, done: make(chan struct{}), byID: make(map[uint64]*parked)}
	go p.loop()
	return p, nil
}

// Len is the number of parked connections.
func (p *Parker) Len() int { return int(p.parkedN.Load()) }

func (p *Parker) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Parker) park(c *Conn, expire time.Time, resume func(Wake)) bool {
	// TCP only: a drain or a shed wakes a TCP socket by shutting its read side, while
	// it closes any other kind, which would leave it in the set unreported (and its
	// descriptor number free for another socket).
	tcp := c.TCP()
	if tcp == nil {
		return false
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.nextID++
	e := &parked{c: c, id: p.nextID, expire: expire, resume: resume}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(e.id)), Pad: int32(uint32(e.id >> 32))}
	var cerr error
	// Under the Parker's lock: the loop cannot report the socket before it is in byID.
	// Control keeps the descriptor from closing while it is added; afterwards nothing
	// closes a parked connection's socket without unparking it first (CloseNow).
	if err := rc.Control(func(fd uintptr) {
		e.fd = int(fd)
		cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, e.fd, &ev)
	}); err != nil || cerr != nil {
		return false
	}
	p.byID[e.id] = e
	heap.Push(&p.exp, e)
	p.wave++
	if p.wave == SettleMin && p.onSettle != nil {
		p.kickLocked() // so that the loop waits for the quiet
	}
	if p.wave >= SettleMin {
		p.lastPark = p.now()
	}
	c.parkedAs = e
	p.parkedN.Add(1)
	if !p.waitUntil.IsZero() && expire.Before(p.waitUntil) || p.waitUntil.IsZero() && p.exp.Len() == 1 {
		p.kickLocked()
	}
	return true
}

// kickLocked makes the loop's epoll_wait return, so it waits again with a fresh timeout.
func (p *Parker) kickLocked() {
	var one = [8]byte{1}
	_, _ = unix.Write(p.evfd, one[:])
}

// removeLocked takes e out of the set and out of epoll. The descriptor is still open:
// nothing closes a parked connection's socket without unparking it first.
func (p *Parker) removeLocked(e *parked) {
	delete(p.byID, e.id)
	if e.idx >= 0 {
		heap.Remove(&p.exp, e.idx)
	}
	e.c.parkedAs = nil
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, e.fd, nil)
	p.parkedN.Add(-1)
}

// unpark resumes c with why if it is parked, and reports whether it was.
func (p *Parker) unpark(c *Conn, why Wake) bool {
	p.mu.Lock()
	e := c.parkedAs
	if e == nil {
		p.mu.Unlock()
		return false
	}
	p.removeLocked(e)
	p.mu.Unlock()
	go e.resume(why)
	return true
}

// Close resumes every parked connection with Closed and stops the Parker; later parks
// fail (their connections wait as they would without a Parker).
func (p *Parker) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.done
		return
	}
	p.closed = true
	woken := make([]*parked, 0, len(p.byID))
	for _, e := range p.byID {
		p.removeLocked(e)
		woken = append(woken, e)
	}
	p.kickLocked()
	p.mu.Unlock()
	for _, e := range woken {
		go e.resume(Closed)
	}
	<-p.done
	_ = unix.Close(p.evfd)
	_ = unix.Close(p.epfd)
}

// maxWait bounds one epoll_wait, a backstop for a clock that moved (the expiries are
// compared with Now, the timeout is a duration).
const maxWait = time.Second

func (p *Parker) loop() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	var woken []*parked
	var whys []Wake
	timeout := -1
	for {
		n, err := unix.EpollWait(p.epfd, events, timeout)
		if err != nil && !errors.Is(err, unix.EINTR) {
			// Not expected of a valid epoll fd; wait rather than spin.
			time.Sleep(10 * time.Millisecond)
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		woken, whys = woken[:0], whys[:0]
		for _, ev := range events[:max(n, 0)] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				var b [8]byte
				_, _ = unix.Read(p.evfd, b[:])
				continue
			}
			if e := p.byID[id]; e != nil {
				p.removeLocked(e)
				woken, whys = append(woken, e), append(whys, Ready)
			}
		}
		now := p.now()
		for p.exp.Len() > 0 && !p.exp[0].expire.After(now) {
			e := p.exp[0]
			p.removeLocked(e)
			woken, whys = append(woken, e), append(whys, Expired)
		}
		timeout, p.waitUntil = -1, time.Time{}
		if p.exp.Len() > 0 {
			next := p.exp[0].expire
			p.waitUntil = next
			// Round up: waking a millisecond early would find nothing expired.
			timeout = int(min(next.Sub(now), maxWait)/time.Millisecond) + 1
		}
		settle := false
		if p.onSettle != nil && p.wave >= SettleMin {
			if quiet := now.Sub(p.lastPark); quiet >= SettleQuiet {
				settle, p.wave = true, 0
			} else if t := int((SettleQuiet-quiet)/time.Millisecond) + 1; timeout < 0 || t < timeout {
				timeout = t
			}
		}
		p.mu.Unlock()
		if settle {
			go p.onSettle()
		}
		for i, e := range woken {
			go e.resume(whys[i])
		}
		clear(woken)
	}
}
