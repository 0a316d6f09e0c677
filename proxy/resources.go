package proxy

// The resources the server keeps across snapshots, shared by the configs that use them:
// access log writers and DNS watcher registries.

import (
	"fmt"
	"strings"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/discovery"
	"github.com/meshd/meshd/proxy/admin"
	"github.com/meshd/meshd/telemetry"
	"github.com/meshd/meshd/telemetry/accesslog"
)

// accessLog returns the writer of a node's logging.accessLog.file: the one already open
// for the same path and format (a reload keeps writing where it wrote), else a new one.
// A format that does not compile or a file that cannot be opened is an error, which
// rejects the config: an access log the config asks for is never quietly not written.
func (s *Server) accessLog(f *config.FileAccessLog) (telemetry.Observer, error) {
	var text string
	var kvs []accesslog.KV
	if f.Format != nil {
		text = f.Format.Text
		for _, kv := range f.Format.JSON {
			kvs = append(kvs, accesslog.KV{Key: kv.Key, Value: kv.Value})
		}
	}
	key := f.Path + "\x00" + text + "\x00" + fmt.Sprint(kvs)
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if w := s.logs[key]; w != nil {
		return w, nil
	}
	fm, err := accesslog.Compile(text, kvs)
	if err != nil {
		return nil, fmt.Errorf("format: %w", err)
	}
	w, err := accesslog.Open(f.Path, fm, accesslog.Options{Log: s.log})
	if err != nil {
		return nil, err
	}
	if s.logs == nil {
		s.logs = map[string]*accesslog.Writer{}
	}
	s.logs[key] = w
	s.log.Info("access log open", "path", f.Path)
	return w, nil
}

// accessLogStats lists the open access log files with their line counts (metrics).
func (s *Server) accessLogStats() []admin.AccessLogStat {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	out := make([]admin.AccessLogStat, 0, len(s.logs))
	for _, w := range s.logs {
		out = append(out, admin.AccessLogStat{Path: w.Path(), Written: w.Written(), Dropped: w.Dropped()})
	}
	return out
}

// closeUnusedLogs closes the access log writers the snapshot in force (next; nil: none)
// does not use, draining what they queued.
func (s *Server) closeUnusedLogs(next *Snapshot) {
	used := map[telemetry.Observer]bool{}
	if next != nil {
		for _, o := range next.Observers() {
			used[o] = true
		}
	}
	s.logMu.Lock()
	var closing []*accesslog.Writer
	for k, w := range s.logs {
		if !used[w] {
			closing = append(closing, w)
			delete(s.logs, k)
		}
	}
	s.logMu.Unlock()
	for _, w := range closing {
		if err := w.Close(); err != nil {
			s.log.Warn("access log close", "err", err)
		}
	}
}

// registryFor returns the DNS watcher registry for a config's resolvers (none:
// /etc/resolv.conf), made on first use and kept until Shutdown. Options.DNS and
// Options.DNSResolvers win over the config's resolvers.
func (s *Server) registryFor(configured []string) *discovery.Registry {
	servers := configured
	if len(s.opts.DNSResolvers) > 0 || s.opts.DNS != nil {
		servers = s.opts.DNSResolvers
	}
	key := strings.Join(servers, ",")
	s.regMu.Lock()
	defer s.regMu.Unlock()
	if r := s.registries[key]; r != nil {
		return r
	}
	dns := s.opts.DNS
	if dns == nil {
		var cfg discovery.ClientConfig
		var err error
		if len(servers) > 0 {
			cfg, err = discovery.ClientConfigFor(servers)
		} else if cfg, err = discovery.ClientConfigFromFile(s.opts.ResolvConf); err != nil {
			s.log.Warn("no usable resolver configuration; DNS names are asked of 127.0.0.1:53", "file", s.opts.ResolvConf, "err", err)
			cfg, err = discovery.ClientConfigFor([]string{"127.0.0.1:53"})
		}
		if err != nil { // validated config and flags: a programming error
			s.log.Error("DNS resolvers unusable; asking 127.0.0.1:53", "resolvers", servers, "err", err)
			cfg, _ = discovery.ClientConfigFor([]string{"127.0.0.1:53"})
		}
		dns = discovery.NewClient(cfg)
	}
	r := discovery.NewRegistry(discovery.WatchOptions{DNS: dns, MinTTL: s.opts.DNSMinTTL, MaxTTL: s.opts.DNSMaxTTL,
		NXDomainGrace: s.opts.DNSNXDomainGrace, Log: s.log})
	if s.registries == nil {
		s.registries = map[string]*discovery.Registry{}
	}
	s.registries[key] = r
	return r
}
