// Package telemetry holds meshd's observability plumbing: structured logging helpers,
// the per-request record and the observers that read it (access logs, metrics). It
// imports no other meshd package, so every package may use it.
package telemetry

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Levels beyond slog's four, so every Envoy level name (ENVOY_LOG_LEVEL, which App
// Mesh task definitions set) means something: trace is below debug, critical above
// error, off above everything.
const (
	LevelTrace    = slog.LevelDebug - 4
	LevelCritical = slog.LevelError + 4
	LevelOff      = slog.Level(1 << 20)
)

// ParseLevel reads a level name: trace, debug, info, warning or warn, error, critical,
// off (any case), as Envoy and slog spell them.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "trace":
		return LevelTrace, nil
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error", "err":
		return slog.LevelError, nil
	case "critical":
		return LevelCritical, nil
	case "off":
		return LevelOff, nil
	}
	return 0, fmt.Errorf("log level %q: want trace, debug, info, warning (warn), error, critical or off", s)
}

// LevelName is the name ParseLevel reads for l (Envoy's spelling).
func LevelName(l slog.Level) string {
	switch {
	case l >= LevelOff:
		return "off"
	case l >= LevelCritical:
		return "critical"
	case l >= slog.LevelError:
		return "error"
	case l >= slog.LevelWarn:
		return "warning"
	case l >= slog.LevelInfo:
		return "info"
	case l >= slog.LevelDebug:
		return "debug"
	}
	return "trace"
}

// NewLogger builds the process logger. format is "text" or "json"; level is one of
// ParseLevel's names. The returned LevelVar changes the level at run time (admin
// /logging). Durations are written as Go duration strings ("1.5s", "250ms") in both
// formats, so text and JSON logs read alike. Only cmd/ calls this: library code
// receives a *slog.Logger.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, *slog.LevelVar, error) {
	lv, err := ParseLevel(level)
	if err != nil {
		return nil, nil, err
	}
	v := new(slog.LevelVar)
	v.Set(lv)
	opts := &slog.HandlerOptions{Level: v, ReplaceAttr: replaceAttr}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), v, nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), v, nil
	default:
		return nil, nil, fmt.Errorf("log format %q: want text or json", format)
	}
}

// replaceAttr writes durations as strings and the extra levels by their names.
func replaceAttr(_ []string, a slog.Attr) slog.Attr {
	switch v := a.Value; {
	case v.Kind() == slog.KindDuration:
		return slog.String(a.Key, v.Duration().String())
	case a.Key == slog.LevelKey && v.Kind() == slog.KindAny:
		if l, ok := v.Any().(slog.Level); ok && (l < slog.LevelDebug || l > slog.LevelError) {
			return slog.String(a.Key, strings.ToUpper(LevelName(l)))
		}
	}
	return a
}

// Discard is a logger that drops everything, for tests and for callers that pass nil.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// OrDiscard returns l, or a discarding logger when l is nil, so optional loggers need no
// nil checks at each call site.
func OrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return Discard()
	}
	return l
}
