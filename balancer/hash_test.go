package balancer

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/discovery"
)

func hashCluster(policy Policy, set []discovery.Endpoint) *Cluster {
	c := NewCluster("hash", Options{Policy: policy, Rand: seeded(1), Hash: &HashOn{Header: "x-user"}, PanicThresholdPercent: -1})
	c.Update(set)
	return c
}

func addrEps(addrs ...string) []discovery.Endpoint {
	out := make([]discovery.Endpoint, len(addrs))
	for i, a := range addrs {
		out[i] = discovery.Endpoint{Address: a, Weight: 1}
	}
	return out
}

func nAddrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.1.%d.%d:8080", i/200, i%200+1)
	}
	return out
}

// assign picks every key once and records the endpoint it went to.
func assign(t *testing.T, c *Cluster, keys int) []string {
	t.Helper()
	out := make([]string, keys)
	for k := range keys {
		r := mustPick(t, c, PickInfo{Hash: Key(fmt.Sprintf("user-%d", k)), Hashed: true})
		out[k] = r.Endpoint.Address
		r.Done(DoneInfo{})
	}
	return out
}

// TestHashKeepsKeysThroughChurn: a key picks the same endpoint every time; removing one
// of N endpoints moves only (ring) or about (Maglev) the keys it had, adding one moves
// about 1/(N+1) of them, and the shares stay near even.
func TestHashKeepsKeysThroughChurn(t *testing.T) {
	const n, keys = 10, 20000
	addrs := nAddrs(n + 1)
	for _, pol := range []Policy{RingHash, Maglev} {
		t.Run(string(pol), func(t *testing.T) {
			c := hashCluster(pol, addrEps(addrs[:n]...))
			before := assign(t, c, keys)
			again := assign(t, c, keys)
			share := map[string]int{}
			for k := range before {
				if before[k] != again[k] {
					t.Fatalf("key %d moved without churn: %s then %s", k, before[k], again[k])
				}
				share[before[k]]++
			}
			for a, got := range share {
				if got < keys/n*6/10 || got > keys/n*14/10 {
					t.Errorf("%s holds %d of %d keys; want about %d", a, got, keys, keys/n)
				}
			}

			// Remove addrs[3].
			c.Update(addrEps(append(append([]string{}, addrs[:3]...), addrs[4:n]...)...))
			after := assign(t, c, keys)
			movedOthers, movedOwn := 0, 0
			for k := range before {
				switch {
				case before[k] == addrs[3]:
					movedOwn++
				case before[k] != after[k]:
					movedOthers++
				}
			}
			limit := 0
			if pol == Maglev {
				limit = keys / 100 // Maglev's disruption beyond the removed endpoint's keys is small, not zero
			}
			if movedOthers > limit {
				t.Errorf("removing 1 of %d moved %d keys of other endpoints; want ≤ %d", n, movedOthers, limit)
			}
			if movedOwn == 0 {
				t.Error("the removed endpoint had no keys")
			}

			// Back to n, then add addrs[n]: about 1/(n+1) of the keys move, all to it.
			c.Update(addrEps(addrs[:n]...))
			base := assign(t, c, keys)
			c.Update(addrEps(addrs[:n+1]...))
			grown := assign(t, c, keys)
			moved, toNew := 0, 0
			for k := range base {
				if base[k] != grown[k] {
					moved++
					if grown[k] == addrs[n] {
						toNew++
					}
				}
			}
			want := keys / (n + 1)
			if moved < want/2 || moved > want*2 {
				t.Errorf("adding 1 to %d moved %d of %d keys; want about %d", n, moved, keys, want)
			}
			if pol == RingHash && toNew != moved {
				t.Errorf("ring: %d keys moved, only %d to the new endpoint", moved, toNew)
			}
		})
	}
}

// TestHashFallsBackWhenUnavailable: a key whose endpoint is ejected or unhealthy goes to
// another one, the other keys stay, and the key comes back when the endpoint recovers.
func TestHashFallsBackWhenUnavailable(t *testing.T) {
	for _, pol := range []Policy{RingHash, Maglev} {
		t.Run(string(pol), func(t *testing.T) {
			c := hashCluster(pol, addrEps(nAddrs(5)...))
			before := assign(t, c, 2000)
			victim := before[0]
			c.SetEjected(victim, true)
			during := assign(t, c, 2000)
			others := 0
			for k := range before {
				if during[k] == victim {
					t.Fatalf("key %d still went to ejected %s", k, victim)
				}
				if before[k] != victim && during[k] != before[k] {
					others++
				}
			}
			if limit := map[Policy]int{RingHash: 0, Maglev: 2000 / 50}[pol]; others > limit {
				t.Errorf("ejecting one endpoint moved %d keys of others; want ≤ %d", others, limit)
			}
			c.SetEjected(victim, false)
			c.SetHealthy(victim, false)
			for k, a := range assign(t, c, 2000) {
				if a == victim {
					t.Fatalf("key %d went to unhealthy %s", k, victim)
				}
			}
			c.SetHealthy(victim, true)
			after := assign(t, c, 2000)
			for k := range before {
				if after[k] != before[k] {
					t.Fatalf("key %d did not come back: %s, was %s", k, after[k], before[k])
				}
			}
		})
	}
}

// TestHashAvoidAndNoKey: a retry (Avoid) of a hashed key goes to another endpoint; a
// request without a key is spread by least request.
func TestHashAvoidAndNoKey(t *testing.T) {
	for _, pol := range []Policy{RingHash, Maglev} {
		t.Run(string(pol), func(t *testing.T) {
			c := hashCluster(pol, addrEps(nAddrs(4)...))
			k := Key("user-7")
			first := mustPick(t, c, PickInfo{Hash: k, Hashed: true})
			first.Done(DoneInfo{})
			retry := mustPick(t, c, PickInfo{Hash: k, Hashed: true, Avoid: first.Endpoint})
			retry.Done(DoneInfo{})
			if retry.Endpoint == first.Endpoint {
				t.Errorf("retry went to the avoided %s", first.Endpoint.Address)
			}
			got := counts(t, c, 400, PickInfo{})
			if len(got) != 4 {
				t.Errorf("requests without a key reached %d of 4 endpoints: %v", len(got), got)
			}
			single := hashCluster(pol, addrEps("10.9.9.9:80"))
			r := mustPick(t, single, PickInfo{Hash: k, Hashed: true, Avoid: first.Endpoint})
			r.Done(DoneInfo{})
			if r.Endpoint.Address != "10.9.9.9:80" {
				t.Errorf("single endpoint: got %s", r.Endpoint.Address)
			}
		})
	}
}

// TestHashWeights: shares of keys follow endpoint weights.
func TestHashWeights(t *testing.T) {
	for _, pol := range []Policy{RingHash, Maglev} {
		t.Run(string(pol), func(t *testing.T) {
			c := hashCluster(pol, []discovery.Endpoint{{Address: "10.0.0.1:80", Weight: 1}, {Address: "10.0.0.2:80", Weight: 3}})
			share := map[string]int{}
			for _, a := range assign(t, c, 20000) {
				share[a]++
			}
			if got := share["10.0.0.2:80"]; got < 13500 || got > 16500 {
				t.Errorf("weight 3 of 4 got %d of 20000 keys; want about 15000", got)
			}
		})
	}
}

func TestCookieValue(t *testing.T) {
	for _, tc := range []struct {
		field, name, want string
		ok                bool
	}{
		{"a=1; meshd=abc; b=2", "meshd", "abc", true},
		{"meshd=abc", "meshd", "abc", true},
		{"xmeshd=abc; meshd=d ", "meshd", "d", true},
		{"meshdx=1", "meshd", "", false},
		{"", "meshd", "", false},
		{"meshd=", "meshd", "", true},
	} {
		got, ok := CookieValue(tc.field, tc.name)
		if got != tc.want || ok != tc.ok {
			t.Errorf("CookieValue(%q, %q) = %q, %v; want %q, %v", tc.field, tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// TestGenerateCookie: the generated cookie carries the value whose key the request was
// hashed on, with the configured path and TTL, and a later request with it picks the
// same endpoint.
func TestGenerateCookie(t *testing.T) {
	h := &HashOn{Cookie: "meshd-affinity", CookiePath: "/shop", CookieTTL: 90 * time.Second}
	v, sc := h.GenerateCookie(0xdeadbeef)
	if v != "00000000deadbeef" {
		t.Errorf("value %q", v)
	}
	if want := "meshd-affinity=00000000deadbeef; Path=/shop; Max-Age=90; HttpOnly"; sc != want {
		t.Errorf("Set-Cookie %q; want %q", sc, want)
	}
	if _, sc := (&HashOn{Cookie: "s", CookieSecure: true, CookieSameSite: "None"}).GenerateCookie(1); !strings.HasSuffix(sc, "; HttpOnly; Secure; SameSite=None") {
		t.Errorf("Set-Cookie %q; want Secure and SameSite=None", sc)
	}
	_, session := (&HashOn{Cookie: "s"}).GenerateCookie(1)
	if strings.Contains(session, "Max-Age") || !strings.Contains(session, "Path=/") {
		t.Errorf("session cookie %q", session)
	}
	c := NewCluster("c", Options{Policy: RingHash, Hash: h})
	c.Update(addrEps(nAddrs(8)...))
	back, _ := CookieValue("other=1; "+sc[:strings.IndexByte(sc, ';')], "meshd-affinity")
	first := mustPick(t, c, PickInfo{Hash: Key(v), Hashed: true})
	first.Done(DoneInfo{})
	for range 50 {
		r := mustPick(t, c, PickInfo{Hash: Key(back), Hashed: true})
		r.Done(DoneInfo{})
		if r.Endpoint != first.Endpoint {
			t.Fatalf("cookie %q picked %s, the generating request %s", back, r.Endpoint.Address, first.Endpoint.Address)
		}
	}
}

func TestHashPickDoesNotAllocate(t *testing.T) {
	for _, pol := range []Policy{RingHash, Maglev} {
		c := hashCluster(pol, addrEps(nAddrs(20)...))
		allocs := testing.AllocsPerRun(200, func() {
			r, _ := c.Pick(PickInfo{Hash: Key("10.2.3.4"), Hashed: true})
			r.Done(DoneInfo{})
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocs per pick", pol, allocs)
		}
	}
}

// BenchmarkHashPick is the per-request cost of a hashed pick, key hashing included.
func BenchmarkHashPick(b *testing.B) {
	for _, pol := range []Policy{RingHash, Maglev} {
		for _, n := range []int{10, 100} {
			c := hashCluster(pol, addrEps(nAddrs(n)...))
			b.Run(fmt.Sprintf("%s/n=%d", pol, n), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					r, err := c.Pick(PickInfo{Hash: Key("10.2.3.4"), Hashed: true})
					if err != nil {
						b.Fatal(err)
					}
					r.Done(DoneInfo{})
				}
			})
		}
	}
}

// TestHashCounters: ring fallbacks and generated cookies are counted.
func TestHashCounters(t *testing.T) {
	c := hashCluster(RingHash, addrEps(nAddrs(3)...))
	before := assign(t, c, 300)
	c.SetEjected(before[0], true)
	assign(t, c, 300)
	moved := 0
	for _, a := range before {
		if a == before[0] {
			moved++
		}
	}
	if got := c.HashFallbacks(); got != uint64(moved) {
		t.Errorf("HashFallbacks %d; want %d (the keys of the ejected endpoint)", got, moved)
	}
	h := &HashOn{Cookie: "c"}
	h.GenerateCookie(1)
	h.GenerateCookie(2)
	if h.CookiesGenerated() != 2 {
		t.Errorf("CookiesGenerated %d", h.CookiesGenerated())
	}
}
