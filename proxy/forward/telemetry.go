package forward

import (
	"time"

	"github.com/meshd/meshd/telemetry"
)

// NoteRoute writes where d routed the request into its record.
func NoteRoute(rec *telemetry.Request, d *Decision) {
	if d.Service != nil {
		rec.Service = d.Service.Name
	}
	if d.Route != nil {
		rec.Route = d.Route.Name
	}
	if d.Cluster != nil {
		rec.Cluster = d.Cluster.Name()
	}
}

// Finish ends one request's telemetry, the same for every front end: the listener's
// in-flight count, the statistics of the listener, the route, the cluster and the gateway
// route (those three may be nil: the request was not routed, or not by a gateway), the span (nil: not traced) and the
// observers. rec.Start, Status, Code and Attempts must be set.
func Finish(rec *telemetry.Request, listener, route, cluster, gateway *telemetry.HTTPStats, span telemetry.Span, obs []telemetry.Observer) {
	finish(rec, time.Since(rec.Start), listener, route, cluster, gateway, span, obs)
}

// FinishAfter is Finish for a request that lasted dur from rec.Start, worked out from a
// clock reading the front end took anyway (one clock read fewer per request, and no
// time.Time arithmetic; issue 17).
func FinishAfter(rec *telemetry.Request, dur time.Duration, listener, route, cluster, gateway *telemetry.HTTPStats, span telemetry.Span, obs []telemetry.Observer) {
	finish(rec, dur, listener, route, cluster, gateway, span, obs)
}

func finish(rec *telemetry.Request, dur time.Duration, listener, route, cluster, gateway *telemetry.HTTPStats, span telemetry.Span, obs []telemetry.Observer) {
	listener.InFlight.Add(-1)
	x := telemetry.NewSample(rec.Status, dur, max(rec.Attempts-1, 0), rec.Code)
	x0 := x.WithoutRetries()
	listener.Add(&x0)
	route.Add(&x)
	cluster.Add(&x)
	gateway.Add(&x)
	if rec.GRPC {
		ok := grpcOK(rec)
		route.RecordGRPC(ok)
		cluster.RecordGRPC(ok)
		gateway.RecordGRPC(ok)
	}
	if span == nil && len(obs) == 0 {
		return
	}
	rec.Duration = dur
	rec.Flags = ResponseFlags(rec.Code)
	if span != nil {
		span.End(rec)
	}
	for _, o := range obs {
		o.Observe(rec)
	}
}

// grpcOK reports whether a gRPC call ended with grpc-status 0: in the trailers, or in
// the head of a trailers-only answer. An answer without a grpc-status (a non-200 from
// something not gRPC, meshd's own HTTP error) is not OK.
func grpcOK(rec *telemetry.Request) bool {
	if rec.Trailers != nil {
		if v, ok := rec.Trailers.Get("grpc-status"); ok {
			return v == "0"
		}
	}
	if rec.Resp != nil {
		if v, ok := rec.Resp.Get("grpc-status"); ok {
			return v == "0"
		}
	}
	return false
}
