package telemetry

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestNewLogger(t *testing.T) {
	var b bytes.Buffer
	l, _, err := NewLogger(&b, "warn", "json")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown", "k", "v")
	out := b.String()
	if strings.Contains(out, "hidden") || !strings.Contains(out, `"msg":"shown"`) || !strings.Contains(out, `"k":"v"`) {
		t.Fatalf("level or format not applied: %q", out)
	}
	for _, bad := range [][2]string{{"loud", "text"}, {"info", "xml"}} {
		if _, _, err := NewLogger(&b, bad[0], bad[1]); err == nil {
			t.Errorf("NewLogger(%q, %q): want an error", bad[0], bad[1])
		}
	}
	OrDiscard(nil).Error("dropped") // must not panic
}

// TestEnvoyLevels: every Envoy level name starts a logger (ENVOY_LOG_LEVEL=off from App
// Mesh task definitions included), and means what Envoy means by it.
func TestEnvoyLevels(t *testing.T) {
	for _, tc := range []struct {
		name        string
		info, error bool // whether an Info / an Error line is written
	}{
		{"trace", true, true}, {"debug", true, true}, {"info", true, true}, {"warning", false, true},
		{"warn", false, true}, {"error", false, true}, {"critical", false, false}, {"off", false, false}, {"OFF", false, false},
	} {
		var b bytes.Buffer
		l, lv, err := NewLogger(&b, tc.name, "text")
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		l.Info("i")
		if got := strings.Contains(b.String(), "msg=i"); got != tc.info {
			t.Errorf("%s: info written %v, want %v", tc.name, got, tc.info)
		}
		b.Reset()
		l.Error("e")
		if got := strings.Contains(b.String(), "msg=e"); got != tc.error {
			t.Errorf("%s: error written %v, want %v", tc.name, got, tc.error)
		}
		want := map[string]string{"warn": "warning", "OFF": "off"}[tc.name]
		if want == "" {
			want = tc.name
		}
		if n := LevelName(lv.Level()); n != want {
			t.Errorf("%s: LevelName %q, want %q", tc.name, n, want)
		}
	}
}

// TestDurationsAlike: a duration is written the same way by both formats.
func TestDurationsAlike(t *testing.T) {
	for _, f := range []string{"text", "json"} {
		var b bytes.Buffer
		l, _, _ := NewLogger(&b, "info", f)
		l.Info("x", "retry_in", 1500*time.Millisecond)
		if !strings.Contains(b.String(), "1.5s") {
			t.Errorf("%s: %q, want the duration as 1.5s", f, b.String())
		}
	}
}
