package listen

import (
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// FDReserve holds a few file descriptors (of /dev/null) that a listener gives back to
// the process to accept a connection when the process has none left: the admin
// listener's room, so /ready and /stats answer while the data plane sits at the fd
// limit (a failing /ready would have the task killed by its health check).
type FDReserve struct {
	N int // descriptors to hold

	mu     sync.Mutex
	files  []*os.File
	closed bool
}

// Fill opens descriptors until N are held (as many as the process can spare now).
func (r *FDReserve) Fill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for !r.closed && len(r.files) < r.N {
		f, err := os.Open(os.DevNull)
		if err != nil {
			return
		}
		r.files = append(r.files, f)
	}
}

// Held is how many descriptors the reserve holds.
func (r *FDReserve) Held() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.files)
}

// release closes one held descriptor; false when none is left.
func (r *FDReserve) release() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.files)
	if n == 0 {
		return false
	}
	_ = r.files[n-1].Close()
	r.files[n-1] = nil
	r.files = r.files[:n-1]
	return true
}

// Close closes every held descriptor; Fill does nothing afterwards.
func (r *FDReserve) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, f := range r.files {
		_ = f.Close()
	}
	r.files = nil
}

// ReservedListener is a listener that, out of file descriptors, gives one of its
// reserve back and accepts again; with the reserve spent it waits (5 ms doubling to
// 1 s, or until Close) and logs at most one warning every 10 s, instead of returning
// the error (net/http's server would log every failure). Refill the reserve when a
// connection it accepted closes (http.Server.ConnState).
type ReservedListener struct {
	net.Listener
	Reserve *FDReserve
	Name    string
	Log     *slog.Logger

	once sync.Once
	done chan struct{}

	mu      sync.Mutex
	lastLog time.Time
}

func (l *ReservedListener) closed() chan struct{} {
	l.once.Do(func() { l.done = make(chan struct{}) })
	return l.done
}

// Accept implements net.Listener.
func (l *ReservedListener) Accept() (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil || !IsFDExhausted(err) {
			return c, err
		}
		if l.Reserve.release() {
			continue
		}
		backoff = acceptBackoff(backoff)
		l.mu.Lock()
		if now := time.Now(); l.lastLog.IsZero() || now.Sub(l.lastLog) >= acceptLogEvery {
			l.lastLog = now
			l.Log.Warn("accept failed and the fd reserve is spent; backing off", "listener", l.Name, "err", err, "retry_in", backoff)
		}
		l.mu.Unlock()
		tm := time.NewTimer(backoff)
		select {
		case <-tm.C:
		case <-l.closed():
			tm.Stop()
		}
	}
}

// Close implements net.Listener, ending a back-off wait at once.
func (l *ReservedListener) Close() error {
	err := l.Listener.Close()
	ch := l.closed()
	l.mu.Lock()
	select {
	case <-ch:
	default:
		close(ch)
	}
	l.mu.Unlock()
	return err
}
