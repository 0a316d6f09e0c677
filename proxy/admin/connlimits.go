package admin

import "strconv"

// ConnStats are one data-plane listener's downstream connection counters (the
// connection limits and the shedding of proxy/limits.go).
type ConnStats struct {
	Open int64 // open now
	Max  int   // the listener's own bound; 0: none
	// Rejected: closed at accept, a connection limit reached with nothing idle to shed.
	// Overload: closed at accept while overloaded. IdleShed: idle keep-alive connections
	// closed to make room (a limit, the fd limit). FDExhausted: accepts that
	// failed for want of file descriptors. OverloadRequests: requests answered 503
	// overloaded.
	Rejected, Overload, IdleShed, FDExhausted, OverloadRequests uint64
}

// OverloadStats are the overload watermarks and their state.
type OverloadStats struct {
	Active                              bool
	Entered                             uint64 // times meshd entered overload
	HeapBytes                           uint64 // the last heap sample (0: not sampled, no watermark set)
	HeapWatermark                       uint64 // 0: off
	ConnectionWatermark, MaxConnections int    // 0: off, no bound
	AdminFDReserve                      int    // descriptors the admin listener holds in reserve
	Parked                              int    // idle keep-alive connections parked (listen.Parker)
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// connStatsLines are the /stats lines of the connection limits and the overload state.
func (s *API) connStatsLines() []string {
	var lines []string
	if s.Conns != nil {
		for kind, c := range s.Conns() {
			p := "listener." + kind + "."
			lines = append(lines,
				p+"downstream_cx_active: "+strconv.FormatInt(c.Open, 10),
				p+"downstream_cx_max: "+strconv.Itoa(c.Max),
				p+"downstream_cx_overflow: "+strconv.FormatUint(c.Rejected, 10),
				p+"downstream_cx_overload_reject: "+strconv.FormatUint(c.Overload, 10),
				p+"downstream_cx_idle_shed: "+strconv.FormatUint(c.IdleShed, 10),
				p+"downstream_cx_fd_exhausted: "+strconv.FormatUint(c.FDExhausted, 10),
				p+"downstream_rq_overload_reject: "+strconv.FormatUint(c.OverloadRequests, 10))
		}
	}
	if s.Overload != nil {
		o := s.Overload()
		lines = append(lines,
			"overload.active: "+strconv.FormatUint(b2u(o.Active), 10),
			"overload.entered: "+strconv.FormatUint(o.Entered, 10),
			"overload.heap_bytes: "+strconv.FormatUint(o.HeapBytes, 10),
			"overload.heap_watermark: "+strconv.FormatUint(o.HeapWatermark, 10),
			"overload.connection_watermark: "+strconv.Itoa(o.ConnectionWatermark),
			"server.downstream_cx_max: "+strconv.Itoa(o.MaxConnections),
			"server.admin_fd_reserve: "+strconv.Itoa(o.AdminFDReserve),
			"server.downstream_cx_parked: "+strconv.Itoa(o.Parked))
	}
	return lines
}

// collectConns exports the connection limits and the overload state.
func (c *collector) collectConns(e *emitter) {
	api, f := c.api, c.f
	if api.Conns != nil {
		for kind, s := range api.Conns() {
			e.emit(f.lsConnsOpen, float64(s.Open), kind)
			e.used(f.lsConnsRejected, s.Rejected, kind, "limit")
			e.used(f.lsConnsRejected, s.Overload, kind, "overload")
			e.used(f.lsConnsShed, s.IdleShed, kind)
			e.used(f.lsFDExhausted, s.FDExhausted, kind)
			e.used(f.lsOverloadRq, s.OverloadRequests, kind)
		}
	}
	if api.Overload != nil {
		o := api.Overload()
		e.emit(f.ovActive, float64(b2u(o.Active)))
		e.used(f.ovEntered, o.Entered)
		if o.HeapWatermark > 0 {
			e.emit(f.ovHeap, float64(o.HeapBytes))
		}
		e.emit(f.adminReserve, float64(o.AdminFDReserve))
		e.emit(f.parked, float64(o.Parked))
	}
}
