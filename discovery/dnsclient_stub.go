package discovery

// TEMPORARY stand-in for the miekg/dns client's types (dnsclient.go), so the watcher
// compiles until that file lands; removed when it does.

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

type SRV struct {
	Target   string
	Port     uint16
	Weight   uint16
	Priority uint16
	Addrs    []netip.Addr
}

var ErrNXDomain = errors.New("no such name (NXDOMAIN)")

type Client struct{}

func (c *Client) LookupIP(ctx context.Context, name, pref string) ([]netip.Addr, time.Duration, error) {
	return nil, 0, errors.New("stub")
}
func (c *Client) LookupSRV(ctx context.Context, name string) ([]SRV, time.Duration, error) {
	return nil, 0, errors.New("stub")
}

type ClientConfig struct {
	Servers  []string
	Search   []string
	Ndots    int
	Timeout  time.Duration
	Attempts int
}

func ClientConfigFromFile(path string) (ClientConfig, error) { return ClientConfig{}, nil }
func ClientConfigFor(servers []string) (ClientConfig, error) { return ClientConfig{Servers: servers}, nil }
func NewClient(cfg ClientConfig) *Client                    { return &Client{} }
