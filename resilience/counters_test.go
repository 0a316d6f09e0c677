package resilience

import (
	"encoding/json"
	"reflect"
	"sync/atomic"
	"testing"
)

// Every counter appears in the snapshot under the same Go name, so a new counter cannot
// be forgotten in /stats.
func TestCountersSnapshotCoversEveryField(t *testing.T) {
	var c Counters
	cv := reflect.ValueOf(&c).Elem()
	for i := 0; i < cv.NumField(); i++ {
		switch f := cv.Field(i).Addr().Interface().(type) {
		case *atomic.Uint64:
			f.Store(uint64(i + 1))
		case *atomic.Int64:
			f.Store(int64(i + 1))
		default:
			t.Fatalf("field %s has type %T", cv.Type().Field(i).Name, f)
		}
	}
	s := c.Snapshot()
	sv := reflect.ValueOf(s)
	if sv.NumField() != cv.NumField() {
		t.Fatalf("snapshot has %d fields, counters %d", sv.NumField(), cv.NumField())
	}
	for i := 0; i < cv.NumField(); i++ {
		name := cv.Type().Field(i).Name
		f := sv.FieldByName(name)
		if !f.IsValid() {
			t.Errorf("snapshot lacks %s", name)
			continue
		}
		var got int64
		if f.CanUint() {
			got = int64(f.Uint())
		} else {
			got = f.Int()
		}
		if got != int64(i+1) {
			t.Errorf("snapshot %s = %d, want %d", name, got, i+1)
		}
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]int64
	if err := json.Unmarshal(b, &m); err != nil || len(m) != cv.NumField() || m["retry_budget_exhausted"] != 2 {
		t.Fatalf("json %s: %v", b, err)
	}
}
