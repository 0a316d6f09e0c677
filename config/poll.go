package config

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/meshd/meshd/telemetry"
)

// DefaultPollInterval is PollSource's default interval.
const DefaultPollInterval = 30 * time.Second

// PollSource follows a config document kept at an http(s) URL, so a fleet of sidecars
// can follow one config kept anywhere (S3, a git host's raw URL, any web server). Each
// poll sends If-None-Match with the last ETag; a 304 costs the server nothing and
// changes nothing here.
//
// The zero value is not usable: set URL. Fields must not change after the first call.
type PollSource struct {
	// URL is the document's http or https URL. Required.
	URL string
	// Interval is the time between polls. Default DefaultPollInterval.
	Interval time.Duration
	// Client sends the requests. Default: a client with a 30 s timeout.
	Client *http.Client
	// Header is added to every request (for example Authorization for a private bucket).
	Header http.Header
	Logger *slog.Logger

	mu   sync.Mutex
	etag string
	body []byte // the last 200's body, returned again on a 304

	settled settledDoc
}

func (s *PollSource) client() *http.Client {
	if s.Client != nil {
		return s.Client
	}
	return defaultPollClient
}

var defaultPollClient = &http.Client{Timeout: 30 * time.Second}

func (s *PollSource) origin(etag string) string {
	if etag == "" {
		return "url:" + RedactURL(s.URL)
	}
	return "url:" + RedactURL(s.URL) + " etag " + etag
}

// RedactURL is raw fit for logs, errors and the config history: a password in it and
// its query (a presigned URL's signature and credential) replaced by "REDACTED".
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.IndexAny(raw, "?@"); i >= 0 {
			return raw[:i] + "?REDACTED"
		}
		return raw
	}
	if u.RawQuery != "" {
		u.RawQuery = "REDACTED"
	}
	return u.Redacted()
}

// redactErr keeps the URL net/http's errors carry out of what the error says.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = RedactURL(ue.URL)
	}
	return err
}

// Fetch returns the document at URL now. After a first success it sends If-None-Match,
// and a 304 answer returns the document fetched before. Any status but 200 and 304 is
// an error naming the URL and status.
func (s *PollSource) Fetch(ctx context.Context) (Document, error) {
	return s.poll(ctx)
}

// Applied records doc as settled (see Source).
func (s *PollSource) Applied(doc Document) { s.settled.record(doc.Data) }

// poll fetches once.
func (s *PollSource) poll(ctx context.Context) (Document, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		return Document{}, fmt.Errorf("config url %s: %w", RedactURL(s.URL), redactErr(err))
	}
	for k, vs := range s.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	s.mu.Lock()
	etag, have := s.etag, s.body != nil
	s.mu.Unlock()
	if have && etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := s.client().Do(req)
	if err != nil {
		return Document{}, fmt.Errorf("config url %s: %w", RedactURL(s.URL), redactErr(err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && have:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		s.mu.Lock()
		defer s.mu.Unlock()
		return Document{Data: s.body, Origin: s.origin(s.etag)}, nil
	case resp.StatusCode != http.StatusOK:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return Document{}, fmt.Errorf("config url %s: status %s", RedactURL(s.URL), resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxConfigSize+1))
	if err != nil {
		return Document{}, fmt.Errorf("config url %s: read body: %w", RedactURL(s.URL), err)
	}
	newTag := resp.Header.Get("ETag")
	s.mu.Lock()
	s.etag, s.body = newTag, data
	s.mu.Unlock()
	return Document{Data: data, Origin: s.origin(newTag)}, nil
}

// Watch polls every Interval until ctx is done and delivers each document whose bytes
// differ from the settled document. A failed poll is logged and retried at the next
// tick; the running config keeps serving. A delivery deliver does not accept is
// retried as Source describes (by polling again, early, as well as at every tick).
func (s *PollSource) Watch(ctx context.Context, deliver func(Document) error) error {
	iv := s.Interval
	if iv <= 0 {
		iv = DefaultPollInterval
	}
	log := telemetry.OrDiscard(s.Logger)
	t := time.NewTicker(iv)
	defer t.Stop()
	retry := newRetryTimer()
	defer retry.settled()
	if !s.settled.any() {
		retry.failed() // the document at start was never applied: try it again
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-retry.C():
		}
		doc, err := s.poll(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Warn("config poll failed; keeping the running config", "url", RedactURL(s.URL), "err", err)
			continue
		}
		if after, err := offer(doc, &s.settled, retry, deliver); err != nil {
			log.Warn("config document not applied; trying it again", "url", RedactURL(s.URL), "in", after, "err", err)
		}
	}
}
