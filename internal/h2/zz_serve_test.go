package h2
import ("io";"net/http";"testing";"time";"os")
func TestServeForever(t *testing.T) {
	if os.Getenv("H2SERVE") == "" { t.Skip() }
	_, addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body); _, _ = w.Write([]byte("ok")) }), Limits{})
	os.WriteFile("/tmp/h2addr", []byte(addr), 0o644)
	time.Sleep(120 * time.Second)
}
