package balancer

import (
	"fmt"
	"testing"
)

// BenchmarkPick measures one Pick plus its Done, the per-request cost of balancing,
// serially and from all Ps at once (the default lock-free RNG, shared counters).
func BenchmarkPick(b *testing.B) {
	for _, pol := range []Policy{LeastRequest, RoundRobin, Random} {
		for _, n := range []int{2, 10, 100} {
			for _, weighted := range []bool{false, true} {
				ws := make([]uint32, n)
				for i := range ws {
					ws[i] = 1
					if weighted {
						ws[i] = uint32(1 + i%5)
					}
				}
				kind := "equal"
				if weighted {
					kind = "weighted"
				}
				c := NewCluster("bench", Options{Policy: pol})
				c.Update(eps(ws...))
				name := fmt.Sprintf("%s/n=%d/%s", pol, n, kind)
				b.Run(name+"/serial", func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						r, err := c.Pick(PickInfo{})
						if err != nil {
							b.Fatal(err)
						}
						r.Done(DoneInfo{Status: 200})
					}
				})
				b.Run(name+"/parallel", func(b *testing.B) {
					b.ReportAllocs()
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							r, err := c.Pick(PickInfo{})
							if err != nil {
								b.Error(err)
								return
							}
							r.Done(DoneInfo{Status: 200})
						}
					})
				})
			}
		}
	}
}
