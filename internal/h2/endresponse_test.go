package h2

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// TestEndResponseBeforeHandlerReturns: a handler that ends its response (EndResponse)
// and then goes on with its own work (a proxy's bookkeeping) has its whole response,
// body and trailers, at the client while it still runs; a second EndResponse and the
// handler's return add nothing.
func TestEndResponseBeforeHandlerReturns(t *testing.T) {
	release := make(chan struct{})
	returned := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(returned)
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "whole body")
		w.Header().Set("X-Sum", "42")
		e, ok := w.(interface{ EndResponse() error })
		if !ok {
			t.Error("the ResponseWriter has no EndResponse")
			return
		}
		if err := e.EndResponse(); err != nil {
			t.Errorf("EndResponse: %v", err)
		}
		if err := e.EndResponse(); err != nil {
			t.Errorf("second EndResponse: %v", err)
		}
		<-release
	})
	_, addr := serve(t, h, Limits{})
	defer close(release)
	resp, err := stdClient().Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	if string(body) != "whole body" || resp.Trailer.Get("X-Sum") != "42" {
		t.Fatalf("got body %q, trailer X-Sum %q; want the whole response", body, resp.Trailer.Get("X-Sum"))
	}
	select {
	case <-returned:
		t.Fatal("the handler returned before the client read the end of the response")
	case <-time.After(50 * time.Millisecond):
	}
}
