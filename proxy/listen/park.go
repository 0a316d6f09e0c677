package listen

import (
	"container/heap"
	"time"
)

// Parking (Linux, park_linux.go): a keep-alive connection idle past the hold holds no
// goroutine. Its serving goroutine hands it to the Parker and returns, giving its stack
// back (10,000 idle keep-alive clients held a goroutine of 8-16 KiB each); one goroutine
// per Parker waits on an epoll set of the parked sockets (EPOLLIN | EPOLLRDHUP, one
// shot) and starts a fresh goroutine for a connection whose client sent something or
// hung up. Go's own netpoller keeps the socket registered as well, which does no harm:
// a Read always tries the read syscall before it waits.
//
// A parked connection is still tracked (Tracker) and still "kept": a drain's or a
// shed's ShutRead makes its socket readable (end of input), which wakes it like a
// request would, and the woken goroutine reads the end and closes it. CloseNow, which
// closes the socket (after which epoll would never report it), unparks it first. Its
// keep-alive idle timeout is the Parker's: the earliest expiry of the parked set is
// epoll_wait's timeout, and an expired connection is woken with Expired, on which its
// goroutine closes it without reading.

// Wake is why a parked connection was resumed.
type Wake int

const (
	// Ready: the client sent something or hung up (or a drain shut its read side).
	Ready Wake = iota
	// Expired: the connection was idle up to the expiry it was parked with.
	Expired
	// Closed: the connection was unparked to be closed (CloseNow) or the Parker closed.
	Closed
)

func (w Wake) String() string {
	switch w {
	case Ready:
		return "ready"
	case Expired:
		return "expired"
	}
	return "closed"
}

// parked is one connection in the parked set.
type parked struct {
	c      *Conn
	id     uint64 // epoll's event data; 0 is the Parker's wake-up eventfd
	fd     int
	expire time.Time
	resume func(Wake)
	idx    int // in the expiry heap
}

// parkHeap orders the parked connections by expiry (container/heap).
type parkHeap []*parked

func (h parkHeap) Len() int           { return len(h) }
func (h parkHeap) Less(i, j int) bool { return h[i].expire.Before(h[j].expire) }
func (h parkHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *parkHeap) Push(x any) {
	e := x.(*parked)
	e.idx = len(*h)
	*h = append(*h, e)
}
func (h *parkHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.idx = -1
	return e
}

var _ heap.Interface = (*parkHeap)(nil)

// Park hands the connection to its Parker (Acceptor.Parker) until its client sends
// something or hangs up (Ready), expire passes (Expired), or it is closed (Closed):
// resume then runs on a goroutine of its own. Only the connection's serving goroutine
// may call it, and it must neither touch the connection nor return it anywhere
// afterwards when Park reports true. False: there is no Parker (not Linux, or epoll
// unavailable), it is closed, or the socket cannot be registered; the caller waits on
// the connection as before.
func (c *Conn) Park(expire time.Time, resume func(Wake)) bool {
	if c.parker == nil {
		return false
	}
	return c.parker.park(c, expire, resume)
}
