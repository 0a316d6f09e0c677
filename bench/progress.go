package bench

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress prints a live line about the current measurement: carriage-return
// updated on a terminal, a plain line every 5 s otherwise. Its one goroutine is
// started lazily and joined by stop.
type progress struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	label string
	live  *Live
	ph    Phase
	quit  chan struct{}
	wg    sync.WaitGroup
	width int
}

func newProgress(w io.Writer, tty bool) *progress {
	p := &progress{w: w, tty: tty, quit: make(chan struct{})}
	if w == nil {
		return p
	}
	every := 5 * time.Second
	if tty {
		every = 200 * time.Millisecond
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-p.quit:
				return
			case <-t.C:
				p.tick()
			}
		}
	}()
	return p
}

func (p *progress) set(label string, live *Live, ph Phase) {
	p.mu.Lock()
	p.label, p.live, p.ph = label, live, ph
	p.mu.Unlock()
}

func (p *progress) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.live == nil {
		return
	}
	p.line(p.status(time.Now()))
}

// status is the live line at now.
func (p *progress) status(now time.Time) string {
	done, errs, start := p.live.Snapshot()
	if start.IsZero() {
		// Run has not started the clock: the connections are being opened.
		return p.label + ": connecting"
	}
	el := now.Sub(start)
	if el < 0 {
		return fmt.Sprintf("%s: warm-up, %.1fs to the measurement, %d responses, %d errors", p.label, (-el).Seconds(), done, errs)
	}
	rate := 0.0
	if el > 0 {
		rate = float64(done) / (el + p.ph.Warmup).Seconds()
	}
	return fmt.Sprintf("%s: measuring %.1fs/%.1fs, %d responses, %.0f req/s, %d errors",
		p.label, el.Seconds(), p.ph.Duration.Seconds(), done, rate, errs)
}

func (p *progress) done(label string, r *Result) {
	if p.w == nil || r == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live = nil
	p.line(fmt.Sprintf("%s: %.0f req/s, p50 %.3f ms, p99 %.3f ms, %d errors", label, r.Rate(),
		float64(r.Latency.Percentile(50))/1e6, float64(r.Latency.Percentile(99))/1e6, r.ErrorCount()))
	if p.tty {
		// Keep each finished measurement on screen; the live line continues below.
		fmt.Fprintln(p.w)
		p.width = 0
	}
}

// line prints s; on a terminal it overwrites the previous line.
func (p *progress) line(s string) {
	if p.w == nil {
		return
	}
	if !p.tty {
		fmt.Fprintln(p.w, s)
		return
	}
	pad := max(p.width-len(s), 0)
	p.width = len(s)
	fmt.Fprintf(p.w, "\r%s%*s", s, pad, "")
}

func (p *progress) stop() {
	select {
	case <-p.quit:
		return
	default:
	}
	close(p.quit)
	p.wg.Wait()
	if p.w != nil && p.tty {
		fmt.Fprintln(p.w)
	}
}
