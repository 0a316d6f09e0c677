package tracing

import (
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// hdr is a request head for the tests: names in lower case, as HeaderGetter asks.
type hdr map[string]string

func (h hdr) Get(name string) (string, bool) {
	v, ok := h[name]
	return v, ok
}

// setter records what an attempt sets, by lower-case name.
type setter map[string]string

func (s setter) set(name, value string) { s[strings.ToLower(name)] = value }

var (
	allRead = []format{fTraceContext, fB3, fB3Multi, fXRay}
	tid     = mustTraceID("5759e988bd862e3fe1be46a994272793")
	sid     = mustSpanID("53995c3f42cd8ad8")
)

func mustTraceID(s string) trace.TraceID {
	t, err := trace.TraceIDFromHex(s)
	if err != nil {
		panic(err)
	}
	return t
}

func mustSpanID(s string) trace.SpanID {
	sp, err := trace.SpanIDFromHex(s)
	if err != nil {
		panic(err)
	}
	return sp
}

// TestExtract reads each format, sampled, not sampled, and without a decision.
func TestExtract(t *testing.T) {
	cases := []struct {
		name     string
		h        hdr
		sampled  bool
		deferred bool
		carried  format
	}{
		{"traceparent", hdr{"traceparent": "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"}, true, false, fTraceContext},
		{"traceparent not sampled", hdr{"traceparent": "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00"}, false, false, fTraceContext},
		{"b3", hdr{"b3": "5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-1"}, true, false, fB3},
		{"b3 with parent", hdr{"b3": "5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-0-05e3ac9a4f6e3b90"}, false, false, fB3},
		{"b3 debug", hdr{"b3": "5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-d"}, true, false, fB3},
		{"b3 deferred", hdr{"b3": "5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8"}, false, true, fB3},
		{"b3 upper case hex", hdr{"b3": "5759E988BD862E3FE1BE46A994272793-53995C3F42CD8AD8-1"}, true, false, fB3},
		{"b3multi", hdr{"x-b3-traceid": "5759e988bd862e3fe1be46a994272793", "x-b3-spanid": "53995c3f42cd8ad8", "x-b3-sampled": "1"}, true, false, fB3Multi},
		{"b3multi true", hdr{"x-b3-traceid": "5759e988bd862e3fe1be46a994272793", "x-b3-spanid": "53995c3f42cd8ad8", "x-b3-sampled": "true"}, true, false, fB3Multi},
		{"b3multi debug flag", hdr{"x-b3-traceid": "5759e988bd862e3fe1be46a994272793", "x-b3-spanid": "53995c3f42cd8ad8", "x-b3-flags": "1"}, true, false, fB3Multi},
		{"b3multi deferred", hdr{"x-b3-traceid": "5759e988bd862e3fe1be46a994272793", "x-b3-spanid": "53995c3f42cd8ad8"}, false, true, fB3Multi},
		{"xray", hdr{"x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"}, true, false, fXRay},
		{"xray spaces and other keys", hdr{"x-amzn-trace-id": "Self=1-67891234-12456789abcdef012345678;Root=1-5759e988-bd862e3fe1be46a994272793; Parent=53995c3f42cd8ad8; Sampled=0;Lineage=a87bd80c:1"}, false, false, fXRay},
		{"xray Sampled=?", hdr{"x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=?"}, false, true, fXRay},
		{"xray no Sampled", hdr{"x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8"}, false, true, fXRay},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := extract(c.h, allRead)
			if r.sc.TraceID() != tid || r.sc.SpanID() != sid || !r.sc.IsRemote() {
				t.Fatalf("span context %v/%v remote %v, want %v/%v remote", r.sc.TraceID(), r.sc.SpanID(), r.sc.IsRemote(), tid, sid)
			}
			if r.sc.IsSampled() != c.sampled || r.deferred != c.deferred || r.carried != c.carried {
				t.Fatalf("sampled %v deferred %v carried %b, want %v %v %b", r.sc.IsSampled(), r.deferred, r.carried, c.sampled, c.deferred, c.carried)
			}
		})
	}
}

// TestExtractRejects: malformed fields are no trace context (the request starts one).
func TestExtractRejects(t *testing.T) {
	for _, h := range []hdr{
		{"traceparent": "00-00000000000000000000000000000000-53995c3f42cd8ad8-01"},
		{"traceparent": "00-5759e988bd862e3fe1be46a994272793-0000000000000000-01"},
		{"traceparent": "zz-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01"},
		{"b3": "1"},
		{"b3": "0"},
		{"b3": "5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-x"},
		{"b3": "5759e988bd862e3fe1be46a99427279-53995c3f42cd8ad8-1"},
		{"b3": "5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad-1"},
		{"x-b3-traceid": "5759e988bd862e3fe1be46a994272793"},
		{"x-b3-traceid": "xyz", "x-b3-spanid": "53995c3f42cd8ad8"},
		{"x-b3-traceid": "5759e988bd862e3fe1be46a994272793", "x-b3-spanid": "53995c3f42cd8ad8", "x-b3-sampled": "maybe"},
		{"x-amzn-trace-id": "Parent=53995c3f42cd8ad8;Sampled=1"},
		{"x-amzn-trace-id": "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8"},
		{"x-amzn-trace-id": "Root=1-5759e988bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8"},
		{"x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f"},
	} {
		if r := extract(h, allRead); r.sc.IsValid() || r.hint.IsValid() || r.carried != 0 {
			t.Errorf("%v: extracted %+v, want nothing", h, r)
		}
	}
}

// TestExtractXRayRootOnly: the Root an AWS load balancer adds, without a parent, is a
// trace id for a new root span.
func TestExtractXRayRootOnly(t *testing.T) {
	r := extract(hdr{"x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793"}, allRead)
	if r.sc.IsValid() || r.hint != tid || r.carried != fXRay {
		t.Fatalf("got %+v, want hint %v", r, tid)
	}
	// A parent in another format wins over the bare trace id.
	r = extract(hdr{"x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793",
		"b3": "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1"}, allRead)
	if r.sc.TraceID() != mustTraceID("0af7651916cd43dd8448eb211c80319c") || r.hint.IsValid() || r.carried != fXRay|fB3 {
		t.Fatalf("got %+v", r)
	}
}

// TestExtractOrder: the first format of the list wins; the others are noted as carried.
func TestExtractOrder(t *testing.T) {
	h := hdr{
		"traceparent":     "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"x-amzn-trace-id": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
	}
	if r := extract(h, allRead); r.sc.TraceID() != mustTraceID("0af7651916cd43dd8448eb211c80319c") || r.carried != fTraceContext|fXRay {
		t.Fatalf("tracecontext first: %+v", r)
	}
	if r := extract(h, []format{fXRay, fTraceContext}); r.sc.TraceID() != tid {
		t.Fatalf("xray first: %+v", r)
	}
	if r := extract(h, []format{fB3}); r.sc.IsValid() || r.carried != 0 {
		t.Fatalf("b3 only: %+v", r)
	}
}

// TestInjectRoundTrip: what inject writes in each format, extract reads back.
func TestInjectRoundTrip(t *testing.T) {
	parent := mustSpanID("05e3ac9a4f6e3b90")
	for _, sampled := range []bool{true, false} {
		sc := remoteContext(tid, sid, sampled)
		s := setter{}
		inject(sc, parent, fTraceContext|fB3|fB3Multi|fXRay, s.set)
		flag, bit := "0", "00"
		if sampled {
			flag, bit = "1", "01"
		}
		want := setter{
			"traceparent":       "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-" + bit,
			"b3":                "5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-" + flag,
			"x-b3-traceid":      "5759e988bd862e3fe1be46a994272793",
			"x-b3-spanid":       "53995c3f42cd8ad8",
			"x-b3-parentspanid": "05e3ac9a4f6e3b90",
			"x-b3-sampled":      flag,
			"x-amzn-trace-id":   "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=" + flag,
		}
		for k, v := range want {
			if s[k] != v {
				t.Errorf("sampled %v: %s = %q, want %q", sampled, k, s[k], v)
			}
		}
		if len(s) != len(want) {
			t.Errorf("sampled %v: wrote %v", sampled, s)
		}
		for _, f := range allRead {
			r := extract(hdr(s), []format{f})
			if r.sc.TraceID() != tid || r.sc.SpanID() != sid || r.sc.IsSampled() != sampled || r.deferred {
				t.Errorf("format %b: read back %+v", f, r)
			}
		}
	}
	// tracestate travels with traceparent.
	sc := trace.SpanContextFromContext(trace.ContextWithRemoteSpanContext(t.Context(), remoteContext(tid, sid, true)))
	ts, _ := trace.ParseTraceState("vendor=value")
	sc = sc.WithTraceState(ts)
	s := setter{}
	inject(sc, parent, fTraceContext, s.set)
	if s["tracestate"] != "vendor=value" || len(s) != 2 {
		t.Fatalf("tracestate: %v", s)
	}
}

// TestIDGenerator: X-Ray trace ids start with the time; a hint is used as the trace id.
func TestIDGenerator(t *testing.T) {
	before := time.Now().Unix()
	id, span := idGenerator{xray: true}.NewIDs(t.Context())
	secs := int64(id[0])<<24 | int64(id[1])<<16 | int64(id[2])<<8 | int64(id[3])
	if secs < before || secs > time.Now().Unix() || !span.IsValid() {
		t.Fatalf("xray trace id %v: time %d not now (%d)", id, secs, before)
	}
	if h := xrayHeader(id, span, true); !strings.HasPrefix(h, "Root=1-"+id.String()[:8]+"-") {
		t.Fatalf("header %q", h)
	}
	a, _ := idGenerator{}.NewIDs(t.Context())
	b, _ := idGenerator{}.NewIDs(t.Context())
	if !a.IsValid() || a == b {
		t.Fatalf("random ids %v %v", a, b)
	}
}
