package meshtls_test

import (
	"context"
	"encoding/pem"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	meshtls "github.com/meshd/meshd/tls"
)

// fakeAgent is an in-process SPIFFE Workload API (the X.509 half a SPIRE agent
// serves), on the generated protos of go-spiffe: FetchX509SVID streams the current
// response and every later one.
type fakeAgent struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	addr string

	mu         sync.Mutex
	resp       *workload.X509SVIDResponse
	subs       map[chan *workload.X509SVIDResponse]bool
	noHeader   atomic.Int32 // calls without the workload.spiffe.io header
	fetchCalls atomic.Int32
}

func startAgent(t *testing.T, resp *workload.X509SVIDResponse) *fakeAgent {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	a := &fakeAgent{addr: "unix://" + sock, resp: resp, subs: map[chan *workload.X509SVIDResponse]bool{}}
	srv := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(srv, a)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return a
}

func (a *fakeAgent) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	a.fetchCalls.Add(1)
	md, _ := metadata.FromIncomingContext(stream.Context())
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		a.noHeader.Add(1)
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	ch := make(chan *workload.X509SVIDResponse, 1)
	a.mu.Lock()
	a.subs[ch] = true
	cur := a.resp
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.subs, ch)
		a.mu.Unlock()
	}()
	send := func(r *workload.X509SVIDResponse) error {
		if r == nil {
			return status.Error(codes.PermissionDenied, "no identity issued")
		}
		return stream.Send(r)
	}
	if err := send(cur); err != nil {
		return err
	}
	for {
		select {
		case r := <-ch:
			if err := send(r); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (a *fakeAgent) set(r *workload.X509SVIDResponse) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.resp = r
	for ch := range a.subs {
		select {
		case <-ch:
		default:
		}
		ch <- r
	}
}

// svid is one X509SVID message for a certificate of the mesh CA ca.
func svid(t *testing.T, ca *meshtls.CA, wc *meshtls.WorkloadCert) *workload.X509SVID {
	t.Helper()
	block, _ := pem.Decode(wc.KeyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatal("issued key is not PKCS #8 PEM")
	}
	return &workload.X509SVID{SpiffeId: wc.ID.String(), X509Svid: wc.Cert.Raw, X509SvidKey: block.Bytes, Bundle: ca.Cert.Raw}
}

func dialAgent(t *testing.T, a *fakeAgent) *meshtls.WorkloadAPI {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	wl, err := meshtls.DialWorkloadAPI(ctx, meshtls.WorkloadAPIOptions{Addr: a.addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { wl.Close() })
	return wl
}

// TestSDSSource: App Mesh's sds secrets served from an in-process Workload API: SVIDs
// chosen by SPIFFE ID, bundles by trust domain, mTLS between two of them, rotation
// pushed by the agent, an update that drops the SVID rejected, per-trust-domain
// verification of federated bundles.
func TestSDSSource(t *testing.T) {
	mesh, other := newCA(t), newCA(t)
	front := issue(t, mesh, "example.org", "frontend")
	back := issue(t, mesh, "example.org", "backend")
	agent := startAgent(t, &workload.X509SVIDResponse{
		Svids:            []*workload.X509SVID{svid(t, mesh, front), svid(t, mesh, back)},
		FederatedBundles: map[string][]byte{"spiffe://other.org": other.Cert.Raw},
	})
	wl := dialAgent(t, agent)

	backCert, err := wl.CertificateSource("spiffe://example.org/backend")
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := backCert.Certificate(); !c.Leaf.Equal(back.Cert) {
		t.Fatal("the backend secret is not the backend SVID")
	}
	def, err := wl.CertificateSource("default")
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := def.Certificate(); !c.Leaf.Equal(front.Cert) {
		t.Fatal("default is not the first SVID")
	}
	if _, err := wl.CertificateSource("spiffe://example.org/nope"); err == nil ||
		!strings.Contains(err.Error(), "offers no SVID with this SPIFFE ID (it offers spiffe://example.org/frontend, spiffe://example.org/backend)") {
		t.Errorf("unknown SVID: %v", err)
	}
	if _, err := wl.CertificateSource("colorteller"); err == nil || !strings.Contains(err.Error(), "SPIFFE ID") {
		t.Errorf("a secret name that is no SPIFFE ID: %v", err)
	}
	trust, err := wl.TrustSource("spiffe://example.org")
	if err != nil {
		t.Fatal(err)
	}
	rootCA, err := wl.TrustSource("ROOTCA")
	if err != nil {
		t.Fatal(err)
	}
	all, err := wl.TrustSource("ALL")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wl.TrustSource("spiffe://nope.org"); err == nil || !strings.Contains(err.Error(), `no bundle for trust domain "nope.org" (it offers`) {
		t.Errorf("unknown bundle: %v", err)
	}
	if _, err := backCert.TrustPool(); err == nil {
		t.Error("a certificate secret holds trust")
	}

	// mTLS between the two SVIDs.
	server := mustServer(t, meshtls.ServerOptions{Certificate: backCert, Trust: trust, SubjectAltNames: []string{"spiffe://example.org/frontend"}})
	client := mustClient(t, meshtls.ClientOptions{ServerName: "backend.example.org", Trust: rootCA, Certificate: def,
		SubjectAltNames: []string{"spiffe://example.org/backend"}, SessionCache: noCache{}})
	r := handshake(t, server, client)
	if r.serverErr != nil || r.clientErr != nil {
		t.Fatalf("SDS mTLS: server %v, client %v", r.serverErr, r.clientErr)
	}
	if id, err := meshtls.PeerIdentity(r.server); err != nil || id.String() != "spiffe://example.org/frontend" {
		t.Errorf("caller %v, %v", id, err)
	}

	// Federation: with ALL, a workload of other.org is accepted, and a certificate of
	// other.org's CA claiming an example.org identity is not (each trust domain is
	// verified against its own bundle, not the union).
	fedServer := mustServer(t, meshtls.ServerOptions{Certificate: backCert, Trust: all})
	legit := newNode(t, other, "other.org", "partner")
	if r := handshake(t, fedServer, mustClient(t, meshtls.ClientOptions{ServerName: "b", Trust: trust, Certificate: legit.cert})); r.serverErr != nil {
		t.Errorf("federated workload refused: %v", r.serverErr)
	}
	forged := newNode(t, other, "example.org", "frontend")
	r = handshake(t, fedServer, mustClient(t, meshtls.ClientOptions{ServerName: "b", Trust: trust, Certificate: forged.cert}))
	if r.serverErr == nil || !strings.Contains(r.serverErr.Error(), "not signed by a trusted CA") {
		t.Errorf("an example.org identity signed by other.org's CA: %v", r.serverErr)
	}
	// Only trust domains with a bundle: a server trusting example.org refuses other.org.
	if r := handshake(t, server, mustClient(t, meshtls.ClientOptions{ServerName: "b", Trust: trust, Certificate: legit.cert})); r.serverErr == nil ||
		!strings.Contains(r.serverErr.Error(), `trust domain "other.org"`) {
		t.Errorf("other.org against example.org's bundle: %v", r.serverErr)
	}

	// The agent rotates the backend SVID.
	changed := backCert.Changed()
	back2 := issue(t, mesh, "example.org", "backend")
	agent.set(&workload.X509SVIDResponse{Svids: []*workload.X509SVID{svid(t, mesh, front), svid(t, mesh, back2)}})
	waitChanged(t, changed, "the rotated SVID")
	if got := servedSerial(t, server, client); got != back2.Cert.SerialNumber.String() {
		t.Fatalf("after rotation serving %s, want %s", got, back2.Cert.SerialNumber)
	}
	if st := backCert.Stats(); st.Reloads != 1 || st.Rejects != 0 {
		t.Errorf("backend stats after rotation: %+v", st)
	}
	if st := def.Stats(); st.Reloads != 0 {
		t.Errorf("the unchanged frontend SVID was reloaded: %+v", st)
	}
	// The federated bundle left with that update: ALL now holds example.org only.
	waitFor(t, "ALL to follow the update", func() bool { return all.Stats().Reloads == 1 })

	// An update without the backend SVID is rejected; the last one keeps serving.
	agent.set(&workload.X509SVIDResponse{Svids: []*workload.X509SVID{svid(t, mesh, front)}})
	waitFor(t, "the update without the backend SVID to be rejected", func() bool { return backCert.Stats().Rejects == 1 })
	if got := servedSerial(t, server, client); got != back2.Cert.SerialNumber.String() {
		t.Fatalf("after a rejected update serving %s", got)
	}
	if st := backCert.Stats(); !strings.Contains(st.LastError, "offers no SVID with this SPIFFE ID") {
		t.Errorf("LastError %q", st.LastError)
	}
	if n := agent.noHeader.Load(); n != 0 {
		t.Errorf("%d Workload API calls without the security header", n)
	}

	// Sources outlive the stream.
	wl.Close()
	if _, err := backCert.Certificate(); err != nil {
		t.Error(err)
	}
}

// TestDialWorkloadAPIErrors: no address, a bad one, and an agent without an identity
// for the workload, each with an error that says what to do.
func TestDialWorkloadAPIErrors(t *testing.T) {
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := meshtls.DialWorkloadAPI(ctx, meshtls.WorkloadAPIOptions{}); err == nil || !strings.Contains(err.Error(), "SPIFFE_ENDPOINT_SOCKET") {
		t.Errorf("no address: %v", err)
	}
	if _, err := meshtls.DialWorkloadAPI(ctx, meshtls.WorkloadAPIOptions{Addr: "/run/agent.sock"}); err == nil || !strings.Contains(err.Error(), "scheme") {
		t.Errorf("address without scheme: %v", err)
	}
	agent := startAgent(t, nil) // no identity for this workload
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if _, err := meshtls.DialWorkloadAPI(short, meshtls.WorkloadAPIOptions{Addr: agent.addr}); err == nil ||
		!strings.Contains(err.Error(), "no X.509 SVID received") || !strings.Contains(err.Error(), "no identity issued") {
		t.Errorf("agent without identity: %v", err)
	}

	// The address from SPIFFE_ENDPOINT_SOCKET.
	ca := newCA(t)
	wc := issue(t, ca, "example.org", "frontend")
	agent = startAgent(t, &workload.X509SVIDResponse{Svids: []*workload.X509SVID{svid(t, ca, wc)}})
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", agent.addr)
	wl, err := meshtls.DialWorkloadAPI(ctx, meshtls.WorkloadAPIOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wl.Close()
}
