package canary

import (
	"fmt"
	"math"
	"time"
)

// Thresholds are what a step must meet before the next one.
type Thresholds struct {
	MaxErrorRate float64       // the canary's errors / requests over the interval
	MaxP99       time.Duration // 0: not judged
	MinRequests  float64       // the canary's requests needed to judge a step
}

// Verdict is what to do after an interval.
type Verdict int

const (
	// Next takes the next step (or ends promoted after the last).
	Next Verdict = iota
	// Hold waits another interval: too few requests to judge.
	Hold
	// Rollback puts the canary back to 0% at once.
	Rollback
)

func (v Verdict) String() string {
	switch v {
	case Next:
		return "next"
	case Hold:
		return "hold"
	}
	return "rollback"
}

// Decide judges one interval's counts. The reason is one line for the progress output.
func Decide(d Sides, th Thresholds) (Verdict, string) {
	c := d.Canary
	if c.Requests < math.Max(th.MinRequests, 1) {
		return Hold, fmt.Sprintf("canary served %.0f requests, %.0f needed to judge", c.Requests, math.Max(th.MinRequests, 1))
	}
	rate := c.ErrorRate()
	summary := fmt.Sprintf("canary %.0f requests, error rate %.2f%% (primary %.2f%% of %.0f)", c.Requests, 100*rate, 100*d.Primary.ErrorRate(), d.Primary.Requests)
	if rate > th.MaxErrorRate {
		return Rollback, fmt.Sprintf("%s: above --max-error-rate %.2f%%", summary, 100*th.MaxErrorRate)
	}
	if th.MaxP99 > 0 {
		p99 := c.Quantile(0.99)
		if p99 > th.MaxP99.Seconds() {
			return Rollback, fmt.Sprintf("%s, p99 ≤ %s: above --max-p99 %s", summary, fmtSeconds(p99), th.MaxP99)
		}
		summary += ", p99 ≤ " + fmtSeconds(p99)
	}
	return Next, summary
}

func fmtSeconds(s float64) string {
	if math.IsInf(s, 1) {
		return "+Inf"
	}
	return time.Duration(s * float64(time.Second)).String()
}

// StartStep is the index in steps of the first step above the canary's current share:
// a run resumes from the config, not from memory. len(steps) when already there.
func StartStep(steps []int, current int) int {
	for i, s := range steps {
		if s > current {
			return i
		}
	}
	return len(steps)
}
