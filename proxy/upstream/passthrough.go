package upstream

import (
	"container/list"
	"sync"
	"time"
)

// maxPassthroughClusters bounds the passthrough clusters kept for keep-alive.
const maxPassthroughClusters = 1024

// PassCache holds the passthrough clusters (egressFilter ALLOW_ALL), one per
// destination host:port so keep-alive works, as a bounded LRU: the least recently used
// one is closed when a new destination would exceed Max (its idle connections close
// now, busy ones when their request ends), so the number of upstream sockets stays
// bounded however many destinations the app talks to. The zero value is ready (Max 0
// means 1024); safe for concurrent use.
type PassCache struct {
	Max int

	mu  sync.Mutex
	m   map[string]*list.Element // of *passEntry
	lru list.List                // front: most recently used
}

type passEntry struct {
	addr string
	c    *Cluster
}

// Get returns addr's cluster, building it with build when absent.
func (p *PassCache) Get(addr string, build func() *Cluster) *Cluster {
	p.mu.Lock()
	if e, ok := p.m[addr]; ok {
		p.lru.MoveToFront(e)
		c := e.Value.(*passEntry).c
		p.mu.Unlock()
		return c
	}
	if p.m == nil {
		p.m = make(map[string]*list.Element)
	}
	limit := p.Max
	if limit <= 0 {
		limit = maxPassthroughClusters
	}
	c := build()
	p.m[addr] = p.lru.PushFront(&passEntry{addr: addr, c: c})
	var evicted *Cluster
	if p.lru.Len() > limit {
		old := p.lru.Remove(p.lru.Back()).(*passEntry)
		delete(p.m, old.addr)
		evicted = old.c
	}
	p.mu.Unlock()
	if evicted != nil {
		evicted.Close()
	}
	return c
}

// Clusters returns the clusters held now.
func (p *PassCache) Clusters() []*Cluster {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*Cluster, 0, p.lru.Len())
	for e := p.lru.Front(); e != nil; e = e.Next() {
		out = append(out, e.Value.(*passEntry).c)
	}
	return out
}

// CloseAll closes and forgets every cluster (Shutdown).
func (p *PassCache) CloseAll() {
	p.mu.Lock()
	cs := make([]*Cluster, 0, p.lru.Len())
	for e := p.lru.Front(); e != nil; e = e.Next() {
		cs = append(cs, e.Value.(*passEntry).c)
	}
	p.lru.Init()
	p.m = nil
	p.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// ReapIdle sweeps every held cluster's idle connections older than maxAge.
func (p *PassCache) ReapIdle(now time.Time, maxAge time.Duration) {
	for _, c := range p.Clusters() {
		c.ReapIdle(now, maxAge)
	}
}
