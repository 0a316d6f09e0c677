package resilience

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeClock is the tests' Clock: time moves only when the test says so.
type fakeClock struct {
	SystemClock // its tickers; the tests move Now by hand
	t           time.Time
}

func newFakeClock() *fakeClock               { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func (c *fakeClock) Now() time.Time          { return c.t }
func (c *fakeClock) Advance(d time.Duration) { c.t = c.t.Add(d) }
func (c *fakeClock) AdvanceTo(at time.Duration) {
	c.t = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(at)
}

var _ Clock = (*fakeClock)(nil)
var _ Clock = SystemClock{}

var (
	err5xx   = Result{Status: 503}
	errLocal = Result{Err: true, LocalOrigin: true}
	ok200    = Result{Status: 200}
)

func newDetector(t *testing.T, cfg OutlierConfig, hosts ...string) (*OutlierDetector, *Counters) {
	t.Helper()
	var c Counters
	d, err := NewOutlierDetector("backend", cfg, &c, nil)
	if err != nil {
		t.Fatal(err)
	}
	d.Update(hosts)
	return d, &c
}

var baseCfg = OutlierConfig{MaxServerErrors: 3, Interval: 10 * time.Second, BaseEjectionDuration: 30 * time.Second, MaxEjectionPercent: 100}

// An event is one step of an outlier scenario: at time at, host gets result.
type event struct {
	at     time.Duration
	host   string
	result Result
	eject  bool // Record's answer
}

func TestOutlierEjectionWindow(t *testing.T) {
	tests := []struct {
		name   string
		events []event
		// ejected at the time of the last event
		ejected bool
	}{
		{"exactly maxServerErrors within interval", []event{
			{0, "a", err5xx, false}, {time.Second, "a", errLocal, false}, {9 * time.Second, "a", err5xx, true},
		}, true},
		{"one short", []event{
			{0, "a", err5xx, false}, {time.Second, "a", err5xx, false},
		}, false},
		{"successes in between do not reset the count", []event{
			{0, "a", err5xx, false}, {1, "a", ok200, false}, {2, "a", err5xx, false}, {3, "a", ok200, false}, {4, "a", err5xx, true},
		}, true},
		{"spread over two intervals", []event{
			{0, "a", err5xx, false}, {5 * time.Second, "a", err5xx, false}, {10 * time.Second, "a", err5xx, false},
			{15 * time.Second, "a", err5xx, false},
		}, false},
		{"new window counts afresh", []event{
			{0, "a", err5xx, false}, {10 * time.Second, "a", err5xx, false}, {11 * time.Second, "a", err5xx, false},
			{12 * time.Second, "a", err5xx, true},
		}, true},
		{"errors on other hosts do not add up", []event{
			{0, "a", err5xx, false}, {1, "b", err5xx, false}, {2, "c", err5xx, false}, {3, "a", err5xx, false},
		}, false},
		{"4xx and mid-body errors", []event{
			{0, "a", Result{Status: 404}, false}, {1, "a", Result{Status: 499}, false}, {2, "a", Result{Status: 200, Err: true}, false},
			{3, "a", Result{Status: 500}, false}, {4, "a", Result{Status: 599}, true},
		}, true},
		{"unknown host ignored", []event{
			{0, "zz", err5xx, false}, {1, "zz", err5xx, false}, {2, "zz", err5xx, false},
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := newDetector(t, baseCfg, "a", "b", "c")
			clk := newFakeClock()
			for i, ev := range tt.events {
				clk.AdvanceTo(ev.at)
				if got := d.Record(ev.host, ev.result, clk.Now()); got != ev.eject {
					t.Fatalf("event %d (%+v): Record = %v, want %v", i, ev, got, ev.eject)
				}
			}
			last := tt.events[len(tt.events)-1].host
			if got := d.Ejected(last, clk.Now()); got != tt.ejected {
				t.Errorf("Ejected(%s) = %v, want %v", last, got, tt.ejected)
			}
		})
	}
}

func failN(d *OutlierDetector, host string, n int64, now time.Time) (ejected bool) {
	for i := int64(0); i < n; i++ {
		ejected = d.Record(host, err5xx, now)
	}
	return ejected
}

func TestOutlierEjectionDurationMultiplies(t *testing.T) {
	cfg := baseCfg
	cfg.MaxServerErrors = 1
	d, c := newDetector(t, cfg, "a", "b")
	clk := newFakeClock()
	var buf []string
	for times := int64(1); times <= 3; times++ {
		if !d.Record("a", err5xx, clk.Now()) {
			t.Fatalf("ejection %d did not happen", times)
		}
		want := time.Duration(times) * cfg.BaseEjectionDuration
		clk.Advance(want - 1)
		if !d.Ejected("a", clk.Now()) {
			t.Fatalf("ejection %d over before %v", times, want)
		}
		if got := d.Sweep(clk.Now(), buf[:0]); len(got) != 0 {
			t.Fatalf("Sweep before the end returned %v", got)
		}
		// Errors reported by attempts that began before the ejection change nothing.
		if d.Record("a", err5xx, clk.Now()) {
			t.Fatal("ejected host ejected again")
		}
		clk.Advance(1)
		if d.Ejected("a", clk.Now()) {
			t.Fatalf("ejection %d lasts past %v", times, want)
		}
		if got := d.Sweep(clk.Now(), buf[:0]); !slices.Equal(got, []string{"a"}) {
			t.Fatalf("Sweep = %v, want [a]", got)
		}
		if d.TimesEjected("a") != times {
			t.Fatalf("TimesEjected = %d, want %d", d.TimesEjected("a"), times)
		}
	}
	s := c.Snapshot()
	if s.OutlierEjections != 3 || s.OutlierEjectionsActive != 0 || s.OutlierErrorsUpstream != 6 {
		t.Errorf("counters %+v", s)
	}
}

func TestOutlierEjectionDurationCapped(t *testing.T) {
	cfg := OutlierConfig{MaxServerErrors: 1, Interval: time.Second, BaseEjectionDuration: 100 * time.Second, MaxEjectionPercent: 100}
	d, _ := newDetector(t, cfg, "a")
	clk := newFakeClock()
	for i := 0; i < 5; i++ {
		d.Record("a", err5xx, clk.Now())
		clk.Advance(DefaultMaxEjectionDuration)
		if got := d.Sweep(clk.Now(), nil); len(got) != 1 {
			t.Fatalf("round %d: ejection outlasted the %v cap", i, DefaultMaxEjectionDuration)
		}
	}
}

func TestOutlierTimesDecay(t *testing.T) {
	cfg := baseCfg
	cfg.MaxServerErrors = 1
	d, _ := newDetector(t, cfg, "a", "b")
	clk := newFakeClock()
	d.Record("a", err5xx, clk.Now())
	clk.Advance(30 * time.Second)
	d.Sweep(clk.Now(), nil)
	d.Record("a", err5xx, clk.Now()) // second ejection: 60 s
	clk.Advance(60 * time.Second)
	d.Sweep(clk.Now(), nil)
	if d.TimesEjected("a") != 2 {
		t.Fatalf("times = %d, want 2", d.TimesEjected("a"))
	}
	// Less than an interval in service forgives nothing.
	clk.Advance(cfg.Interval - 1)
	d.Sweep(clk.Now(), nil)
	if d.TimesEjected("a") != 2 {
		t.Fatalf("times = %d after %v in service, want 2", d.TimesEjected("a"), cfg.Interval-1)
	}
	clk.Advance(1)
	d.Sweep(clk.Now(), nil)
	if d.TimesEjected("a") != 1 {
		t.Fatalf("times = %d after one interval in service, want 1", d.TimesEjected("a"))
	}
	// The next ejection lasts base × 2 (one forgiven), not base × 3.
	d.Record("a", err5xx, clk.Now())
	clk.Advance(60*time.Second - 1)
	if !d.Ejected("a", clk.Now()) {
		t.Fatal("ejection shorter than base × 2")
	}
	clk.Advance(1)
	if d.Ejected("a", clk.Now()) {
		t.Fatal("ejection longer than base × 2")
	}
}

func TestOutlierMaxEjectionPercent(t *testing.T) {
	tests := []struct {
		hosts   int
		percent int
		want    int // how many of all hosts failing get ejected
	}{
		{3, 50, 1},
		{3, 66, 1},
		{3, 67, 2},
		{4, 50, 2},
		{10, 10, 1},
		{10, 0, 0},
		{2, 100, 2},
		{1, 99, 0},
	}
	for _, tt := range tests {
		cfg := baseCfg
		cfg.MaxEjectionPercent = tt.percent
		hosts := make([]string, tt.hosts)
		for i := range hosts {
			hosts[i] = string(rune('a' + i))
		}
		d, c := newDetector(t, cfg, hosts...)
		now := newFakeClock().Now()
		got := 0
		for _, h := range hosts {
			if failN(d, h, cfg.MaxServerErrors, now) {
				got++
			}
		}
		ejected := d.EjectedHosts(now, nil)
		if got != tt.want || len(ejected) != tt.want {
			t.Errorf("%d hosts at %d%%: ejected %d (%v), want %d", tt.hosts, tt.percent, got, ejected, tt.want)
		}
		s := c.Snapshot()
		if s.OutlierEjectionsOverflow != uint64(tt.hosts-tt.want) || s.OutlierEjectionsActive != int64(tt.want) {
			t.Errorf("%d hosts at %d%%: counters %+v", tt.hosts, tt.percent, s)
		}
	}
}

func TestOutlierUpdate(t *testing.T) {
	cfg := baseCfg
	cfg.MaxServerErrors = 1
	cfg.MaxEjectionPercent = 50
	d, c := newDetector(t, cfg, "a", "b")
	now := newFakeClock().Now()
	if !d.Record("a", err5xx, now) {
		t.Fatal("a not ejected")
	}
	// b cannot go too: 2 of 2 would exceed 50%.
	if d.Record("b", err5xx, now) {
		t.Fatal("b ejected past maxEjectionPercent")
	}
	// Removing a forgets its ejection; adding c and d makes room for b.
	d.Update([]string{"b", "c", "d"})
	if d.Ejected("a", now) || c.OutlierEjectionsActive.Load() != 0 {
		t.Fatal("removed host still counted as ejected")
	}
	if !d.Record("b", err5xx, now) {
		t.Fatal("b not ejected after the set grew")
	}
	if d.Record("a", err5xx, now) {
		t.Fatal("removed host ejected")
	}
	// A host that returns starts clean.
	d.Update([]string{"a", "b", "c", "d"})
	if d.TimesEjected("a") != 0 || d.Ejected("a", now) {
		t.Fatal("re-added host kept state")
	}
}

func TestOutlierSetConfig(t *testing.T) {
	d, _ := newDetector(t, baseCfg, "a", "b")
	now := newFakeClock().Now()
	failN(d, "a", 2, now)
	cfg := baseCfg
	cfg.MaxServerErrors = 2
	if err := d.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	// Counting restarted: two more errors are needed, not one.
	if d.Record("a", err5xx, now) || !d.Record("a", err5xx, now) {
		t.Fatal("new maxServerErrors not applied from a fresh count")
	}
	if err := d.SetConfig(OutlierConfig{}); err == nil {
		t.Fatal("invalid config accepted")
	}
}

func TestOutlierConfigErrors(t *testing.T) {
	tests := []struct {
		mut  func(*OutlierConfig)
		want string
	}{
		{func(c *OutlierConfig) { c.MaxServerErrors = 0 }, "maxServerErrors 0"},
		{func(c *OutlierConfig) { c.Interval = 0 }, "interval 0s"},
		{func(c *OutlierConfig) { c.BaseEjectionDuration = -1 }, "baseEjectionDuration -1ns"},
		{func(c *OutlierConfig) { c.MaxEjectionPercent = 101 }, "maxEjectionPercent 101"},
		{func(c *OutlierConfig) { c.MaxEjectionDuration = -1 }, "maxEjectionDuration -1ns"},
	}
	for _, tt := range tests {
		cfg := baseCfg
		tt.mut(&cfg)
		_, err := NewOutlierDetector("backend", cfg, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "cluster backend") {
			t.Errorf("err = %v, want one naming %q and the cluster", err, tt.want)
		}
	}
}

func TestOutlierNilDetector(t *testing.T) {
	var d *OutlierDetector
	now := time.Now()
	d.Update([]string{"a"})
	if d.Record("a", err5xx, now) || d.Ejected("a", now) || len(d.Sweep(now, nil)) != 0 ||
		len(d.EjectedHosts(now, nil)) != 0 || d.TimesEjected("a") != 0 {
		t.Fatal("nil detector did something")
	}
}

func TestOutlierAddRemove(t *testing.T) {
	var c Counters
	d, err := NewOutlierDetector("c", OutlierConfig{MaxServerErrors: 1, Interval: time.Second, BaseEjectionDuration: time.Second, MaxEjectionPercent: 100}, &c, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	if d.Record("a", Result{Status: 500}, now) {
		t.Fatal("an unknown endpoint was ejected")
	}
	d.Add("a")
	d.Add("a") // idempotent: keeps state
	if !d.Record("a", Result{Status: 500}, now) || !d.Ejected("a", now) {
		t.Fatal("a 5xx did not eject a tracked endpoint")
	}
	d.Add("a")
	if !d.Ejected("a", now) {
		t.Fatal("Add of a tracked endpoint reset its ejection")
	}
	d.Remove("a")
	if d.Ejected("a", now) || c.OutlierEjectionsActive.Load() != 0 {
		t.Fatalf("Remove kept state: ejected=%v active=%d", d.Ejected("a", now), c.OutlierEjectionsActive.Load())
	}
	var nilD *OutlierDetector
	nilD.Add("x")
	nilD.Remove("x")
}
