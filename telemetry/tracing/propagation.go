package tracing

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshd/meshd/telemetry"
)

// The propagation formats meshd reads on a request and writes on its upstream attempts
// (Config.Propagators names them).
const (
	FormatTraceContext = "tracecontext" // W3C traceparent and tracestate
	FormatBaggage      = "baggage"      // W3C baggage: accepted, nothing to do (the field is forwarded as it came)
	FormatB3           = "b3"           // B3 single header: b3
	FormatB3Multi      = "b3multi"      // B3 multiple headers: X-B3-TraceId, X-B3-SpanId, X-B3-ParentSpanId, X-B3-Sampled
	FormatXRay         = "xray"         // AWS X-Ray: X-Amzn-Trace-Id
)

// DefaultPropagators are read when Config.Propagators is empty; the first is written on
// every upstream request.
var DefaultPropagators = []string{FormatTraceContext, FormatB3, FormatB3Multi, FormatXRay}

// format is a set of trace-context formats, as bits.
type format uint8

const (
	fTraceContext format = 1 << iota
	fB3
	fB3Multi
	fXRay
)

var formatNames = map[string]format{
	FormatTraceContext: fTraceContext,
	FormatBaggage:      0,
	FormatB3:           fB3,
	FormatB3Multi:      fB3Multi,
	FormatXRay:         fXRay,
}

// remote is what a request's head says about the trace it belongs to.
type remote struct {
	sc trace.SpanContext // the caller's span, when valid: the server span continues it
	// deferred: the caller sent ids but no sampling decision (B3 without a sampling
	// state, X-Ray without Sampled or with Sampled=?): meshd's root sampler decides.
	deferred bool
	// hint is a trace id without a parent span (an X-Ray Root alone, as an AWS load
	// balancer adds): the server span is a root of that trace.
	hint trace.TraceID
	// carried are the formats whose fields the request carried, valid.
	carried format
}

// extract reads the request's trace context in the formats of read, in order: the first
// valid one wins; every valid one is noted in carried.
func extract(h telemetry.HeaderGetter, read []format) remote {
	var r remote
	for _, f := range read {
		var sc trace.SpanContext
		deferred, ok := false, false
		var hint trace.TraceID
		switch f {
		case fTraceContext:
			sc = trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), getCarrier{h}))
			ok = sc.IsValid()
		case fB3:
			sc, deferred, ok = extractB3(h)
		case fB3Multi:
			sc, deferred, ok = extractB3Multi(h)
		case fXRay:
			sc, deferred, hint, ok = extractXRay(h)
		}
		if !ok {
			continue
		}
		r.carried |= f
		if !r.sc.IsValid() && !r.hint.IsValid() {
			if sc.IsValid() {
				r.sc, r.deferred = sc, deferred
			} else {
				r.hint = hint
			}
		} else if !r.sc.IsValid() && sc.IsValid() {
			// A parent span from a later format beats a bare trace id of an earlier one.
			r.sc, r.deferred, r.hint = sc, deferred, trace.TraceID{}
		}
	}
	return r
}

// inject writes the span context sc (a client span whose parent is parent) in the
// formats of write, through set.
func inject(sc trace.SpanContext, parent trace.SpanID, write format, set func(name, value string)) {
	if write&fTraceContext != 0 {
		propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), setCarrier(set))
	}
	sampled := "0"
	if sc.IsSampled() {
		sampled = "1"
	}
	tid, sid := sc.TraceID().String(), sc.SpanID().String()
	if write&fB3 != 0 {
		set("b3", tid+"-"+sid+"-"+sampled)
	}
	if write&fB3Multi != 0 {
		set("X-B3-TraceId", tid)
		set("X-B3-SpanId", sid)
		set("X-B3-ParentSpanId", parent.String())
		set("X-B3-Sampled", sampled)
	}
	if write&fXRay != 0 {
		set("X-Amzn-Trace-Id", xrayHeader(sc.TraceID(), sc.SpanID(), sc.IsSampled()))
	}
}

// getCarrier reads a request head for the W3C propagator (names in lower case). A
// repeated tracestate field is joined, when the head can join its fields.
type getCarrier struct{ h telemetry.HeaderGetter }

type headerJoiner interface {
	GetJoined(name string) (string, bool)
}

func (c getCarrier) Get(key string) string {
	var v string
	if j, ok := c.h.(headerJoiner); ok && key == "tracestate" {
		v, _ = j.GetJoined(key)
	} else {
		v, _ = c.h.Get(key)
	}
	if key == "tracestate" {
		// The trace state keeps parts of the string (otel's ParseTraceState does not
		// copy) in the span contexts the exporter reads later; an HTTP/1.1 head's
		// strings are views of the connection's buffer, which the next request
		// overwrites. traceparent is parsed into IDs, nothing of it kept.
		v = strings.Clone(v)
	}
	return v
}
func (getCarrier) Set(string, string) {}
func (getCarrier) Keys() []string     { return nil }

// setCarrier writes the W3C fields through an attempt's set.
type setCarrier func(name, value string)

func (setCarrier) Get(string) string       { return "" }
func (c setCarrier) Set(key, value string) { c(key, value) }
func (setCarrier) Keys() []string          { return nil }

// parseHex decodes s, which must be exactly 2*len(dst) hex digits (either case).
func parseHex(dst []byte, s string) bool {
	if len(s) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, ok1 := unhex(s[2*i])
		lo, ok2 := unhex(s[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// parseB3TraceID reads a B3 trace id: 32 hex digits, or 16 (a 64-bit id, left-padded).
func parseB3TraceID(s string) (trace.TraceID, bool) {
	var t trace.TraceID
	var ok bool
	switch len(s) {
	case 32:
		ok = parseHex(t[:], s)
	case 16:
		ok = parseHex(t[8:], s)
	}
	return t, ok && t.IsValid()
}

func parseSpanID(s string) (trace.SpanID, bool) {
	var sp trace.SpanID
	return sp, parseHex(sp[:], s) && sp.IsValid()
}

func remoteContext(t trace.TraceID, s trace.SpanID, sampled bool) trace.SpanContext {
	var flags trace.TraceFlags
	if sampled {
		flags = trace.FlagsSampled
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: t, SpanID: s, TraceFlags: flags, Remote: true})
}

// extractB3 reads the single b3 field: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]].
// A field that is only a sampling state ("0", "1", "d") names no trace to continue.
func extractB3(h telemetry.HeaderGetter) (sc trace.SpanContext, deferred, ok bool) {
	v, found := h.Get("b3")
	if !found {
		return sc, false, false
	}
	parts := strings.SplitN(strings.TrimSpace(v), "-", 4)
	if len(parts) < 2 {
		return sc, false, false
	}
	tid, ok1 := parseB3TraceID(parts[0])
	sid, ok2 := parseSpanID(parts[1])
	if !ok1 || !ok2 {
		return sc, false, false
	}
	sampled := false
	if len(parts) >= 3 {
		switch parts[2] {
		case "1", "d":
			sampled = true
		case "0":
		default:
			return sc, false, false
		}
	} else {
		deferred = true
	}
	if len(parts) == 4 {
		if _, ok := parseSpanID(parts[3]); !ok {
			return sc, false, false
		}
	}
	return remoteContext(tid, sid, sampled), deferred, true
}

// extractB3Multi reads X-B3-TraceId, X-B3-SpanId, X-B3-Sampled and X-B3-Flags.
func extractB3Multi(h telemetry.HeaderGetter) (sc trace.SpanContext, deferred, ok bool) {
	tv, ok1 := h.Get("x-b3-traceid")
	sv, ok2 := h.Get("x-b3-spanid")
	if !ok1 || !ok2 {
		return sc, false, false
	}
	tid, ok1 := parseB3TraceID(strings.TrimSpace(tv))
	sid, ok2 := parseSpanID(strings.TrimSpace(sv))
	if !ok1 || !ok2 {
		return sc, false, false
	}
	sampled := false
	if f, _ := h.Get("x-b3-flags"); strings.TrimSpace(f) == "1" {
		sampled = true // debug
	} else if s, found := h.Get("x-b3-sampled"); found {
		switch strings.TrimSpace(s) {
		case "1", "true":
			sampled = true
		case "0", "false":
		default:
			return sc, false, false
		}
	} else {
		deferred = true
	}
	return remoteContext(tid, sid, sampled), deferred, true
}

// extractXRay reads X-Amzn-Trace-Id: Root=1-{8 hex}-{24 hex};Parent={16 hex};Sampled={0|1|?}
// (other keys, such as Self or Lineage, are ignored). The X-Ray trace id's two hex
// groups, joined, are the 32 hex digits of the W3C trace id. Without Parent, the Root
// is a trace id hint: the request starts a new root span in that trace.
func extractXRay(h telemetry.HeaderGetter) (sc trace.SpanContext, deferred bool, hint trace.TraceID, ok bool) {
	v, found := h.Get("x-amzn-trace-id")
	if !found {
		return sc, false, hint, false
	}
	var tid trace.TraceID
	var sid trace.SpanID
	haveRoot, haveParent, sampled := false, false, false
	deferred = true
	for v != "" {
		var kv string
		kv, v, _ = strings.Cut(v, ";")
		k, val, _ := strings.Cut(strings.TrimSpace(kv), "=")
		switch strings.TrimSpace(k) {
		case "Root":
			var ok bool
			if tid, ok = parseXRayRoot(strings.TrimSpace(val)); !ok {
				return sc, false, hint, false
			}
			haveRoot = true
		case "Parent":
			var ok bool
			if sid, ok = parseSpanID(strings.TrimSpace(val)); !ok {
				return sc, false, hint, false
			}
			haveParent = true
		case "Sampled":
			switch strings.TrimSpace(val) {
			case "1":
				sampled, deferred = true, false
			case "0":
				sampled, deferred = false, false
			}
		}
	}
	switch {
	case !haveRoot:
		return sc, false, hint, false
	case !haveParent:
		return sc, false, tid, true
	}
	return remoteContext(tid, sid, sampled), deferred, hint, true
}

// parseXRayRoot reads "1-{8 hex epoch seconds}-{24 hex}".
func parseXRayRoot(s string) (trace.TraceID, bool) {
	var t trace.TraceID
	if len(s) != 35 || s[0] != '1' || s[1] != '-' || s[10] != '-' {
		return t, false
	}
	ok := parseHex(t[:4], s[2:10]) && parseHex(t[4:], s[11:])
	return t, ok && t.IsValid()
}

// xrayHeader writes X-Amzn-Trace-Id for a span.
func xrayHeader(t trace.TraceID, s trace.SpanID, sampled bool) string {
	tid := t.String()
	flag := "0"
	if sampled {
		flag = "1"
	}
	return "Root=1-" + tid[:8] + "-" + tid[8:] + ";Parent=" + s.String() + ";Sampled=" + flag
}

// Context keys the sampler and the id generator read.
type (
	deferredKey struct{}
	hintKey     struct{}
)

// deferredSampler decides a span whose remote parent is not sampled: when the parent
// made no decision (deferred), meshd's root sampler decides; otherwise it is dropped.
type deferredSampler struct{ root sdktrace.Sampler }

func (s deferredSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if d, _ := p.ParentContext.Value(deferredKey{}).(bool); d {
		return s.root.ShouldSample(p)
	}
	return sdktrace.SamplingResult{Decision: sdktrace.Drop, Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState()}
}

func (s deferredSampler) Description() string {
	return "DeferredToRoot{" + s.root.Description() + "}"
}

// idGenerator makes random ids; a new trace takes the hint's id when there is one (an
// X-Ray Root without a parent), and with X-Ray on, a new trace id starts with the epoch
// seconds, as X-Ray requires of its trace ids (Root=1-{time}-{random}).
type idGenerator struct{ xray bool }

func (g idGenerator) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	var t trace.TraceID
	if h, ok := ctx.Value(hintKey{}).(trace.TraceID); ok && h.IsValid() {
		t = h
	} else {
		for !t.IsValid() {
			binary.BigEndian.PutUint64(t[:8], rand.Uint64())
			binary.BigEndian.PutUint64(t[8:], rand.Uint64())
			if g.xray {
				binary.BigEndian.PutUint32(t[:4], uint32(time.Now().Unix()))
			}
		}
	}
	return t, g.NewSpanID(ctx, t)
}

func (idGenerator) NewSpanID(context.Context, trace.TraceID) trace.SpanID {
	var s trace.SpanID
	for !s.IsValid() {
		binary.BigEndian.PutUint64(s[:], rand.Uint64())
	}
	return s
}
