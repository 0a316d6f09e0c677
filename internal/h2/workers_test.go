package h2

import (
	"sync"
	"testing"
	"time"
)

type funcTask func()

func (f funcTask) run() { f() }

// TestWorkersStop: tasks run on pooled workers; stop ends every parked worker (each
// gets a nil task), and a task spawned after stop still runs.
func TestWorkersStop(t *testing.T) {
	w := newWorkers()
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		w.spawn(funcTask(wg.Done))
	}
	wg.Wait()
	waitFor(t, func() bool { return w.idle.Load() > 0 }, "a parked worker")
	w.stop()
	waitFor(t, func() bool { return w.idle.Load() == 0 }, "the parked workers to end")
	ran := make(chan struct{})
	w.spawn(funcTask(func() { close(ran) }))
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("a task spawned after stop did not run")
	}
	waitFor(t, func() bool { return w.idle.Load() == 0 }, "the last worker to end after its task")
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
