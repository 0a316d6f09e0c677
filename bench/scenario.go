package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Scenario names.
const (
	ScenarioDirect    = "direct"
	ScenarioMeshd     = "meshd"
	ScenarioMeshd2Hop = "meshd-2hop"
	// ScenarioMeshdBaseline is the meshd scenario (same config, CPU pinning and
	// protocols) run with a second meshd build, Plan.BaselineMeshd (--baseline-meshd),
	// so that a change's before and after are measured in one interleaved run.
	ScenarioMeshdBaseline = "meshd-baseline"
	ScenarioHTTPUtil      = "go-httputil"
	ScenarioHAProxy       = "haproxy"
	// ScenarioHAProxy2Hop is meshd-2hop's peer: two haproxy processes, client →
	// haproxy → haproxy → upstream (HAProxy2HopConfigs).
	ScenarioHAProxy2Hop = "haproxy-2hop"
	ScenarioNginx       = "nginx"
	ScenarioEnvoy       = "envoy"
	// ScenarioBaseline is the row of Plan.Baseline (--baseline): the direct path
	// the targets' added latency is counted from.
	ScenarioBaseline = "baseline"
)

// BaselineMeshdFlag is the command-line flag that sets Plan.BaselineMeshd and so
// enables ScenarioMeshdBaseline.
const BaselineMeshdFlag = "--baseline-meshd"

// AllScenarios lists, in report order, every scenario the harness runs by default:
// all it knows except ScenarioMeshdBaseline, which needs a second meshd binary (see
// DefaultScenarios), and the TLS-hop twins of the two-hop scenarios, which --tls adds
// (WithTLSTwins).
func AllScenarios() []string { return DefaultScenarios(false) }

// DefaultScenarios is the scenario list when none is chosen: AllScenarios, plus
// ScenarioMeshdBaseline right after ScenarioMeshd when withBaseline (a baseline meshd
// binary is given). DefaultScenarios(true) is every scenario the harness knows but
// the TLS-hop ones (KnownScenarios).
func DefaultScenarios(withBaseline bool) []string {
	list := []string{ScenarioDirect, ScenarioMeshd}
	if withBaseline {
		list = append(list, ScenarioMeshdBaseline)
	}
	return append(list, ScenarioMeshd2Hop, ScenarioFloor, ScenarioHTTPUtil, ScenarioHAProxy, ScenarioHAProxy2Hop, ScenarioNginx, ScenarioEnvoy)
}

// KnownScenarios is every scenario the harness knows, in report order.
func KnownScenarios() []string {
	all, _ := WithTLSTwins(DefaultScenarios(true))
	return all
}

// SkipError says a scenario could not run here (e.g. its binary is missing).
type SkipError struct{ Reason string }

func (e *SkipError) Error() string { return "skipped: " + e.Reason }

// instance is one started scenario: where the load goes and which processes are the
// proxies whose cost is reported.
type instance struct {
	name    string
	addr    string
	host    string
	path    string
	proxies []*Proc
	// url is a target's URL as given (the row's URL); extPID a process not started
	// by the harness whose tree is the target's cost (--target-pid); baseline marks
	// the row added latency is counted from, as direct's is for the scenarios.
	url      string
	extPID   int
	baseline bool
	tls      *tls.Config // an https target's
	// hop is the middle hop of a TLS-hop scenario: its listener, the ALPN the egress
	// proxy offers there, and the ingress proxy's handshake counter.
	hop *hopCheck
}

type hopCheck struct {
	addr, alpn string
	counter    string // what handshakes reads, for the report
	handshakes func(context.Context) (uint64, error)
	// before is the count once the harness's probes were done (checkHop), report
	// what checkHop found.
	before uint64
	report *TLSHop
}

// pids are the processes whose trees' CPU and memory are the row's cost.
func (in *instance) pids() []int {
	var out []int
	for _, p := range in.proxies {
		out = append(out, p.PID())
	}
	if in.extPID > 0 {
		out = append(out, in.extPID)
	}
	return out
}

func (in *instance) stop() {
	for i := len(in.proxies) - 1; i >= 0; i-- {
		_ = in.proxies[i].Stop()
	}
}

// env is what starting a scenario needs.
type env struct {
	self      string
	selfEnv   []string
	proto     Proto
	upstream  string // host:port of the built-in upstream
	dir       string // configs and peer state
	cpusProxy string
	meshd     string // path, or "" when not found
	meshdWhy  string // why meshd is not available
	// baseline and baselineWhy are the same for ScenarioMeshdBaseline's binary.
	baseline    string
	baselineWhy string
	// tls is the TLS hop's certificates (nil when no TLS-hop scenario runs), tlsWhy
	// why they could not be made.
	tls    *TLSFiles
	tlsWhy string
	log    *slog.Logger
}

const startTimeout = 15 * time.Second

func startScenario(ctx context.Context, name string, e *env) (*instance, error) {
	switch name {
	case ScenarioDirect:
		return &instance{name: name, addr: e.upstream, host: e.upstream}, nil
	case ScenarioFloor:
		if e.proto != H1 {
			return nil, &SkipError{Reason: "the floor relay speaks HTTP/1.1 only (--proto h1)"}
		}
		p, err := StartProc(ProcSpec{Name: name, Argv: []string{e.self, "internal", "floor", "--listen", "127.0.0.1:0", "--upstream", e.upstream},
			Env: e.selfEnv, CPUs: e.cpusProxy})
		if err != nil {
			return nil, err
		}
		addr, err := p.WaitListening(ctx, startTimeout)
		if err != nil {
			_ = p.Stop()
			return nil, err
		}
		return &instance{name: name, addr: addr, host: addr, proxies: []*Proc{p}}, nil
	case ScenarioHTTPUtil:
		argv := []string{e.self, "internal", "httputil", "--listen", "127.0.0.1:0", "--upstream", e.upstream}
		if e.proto == GRPC {
			argv = append(argv, "--upstream-h2c")
		}
		p, err := StartProc(ProcSpec{Name: name, Argv: argv, Env: e.selfEnv, CPUs: e.cpusProxy})
		if err != nil {
			return nil, err
		}
		addr, err := p.WaitListening(ctx, startTimeout)
		if err != nil {
			_ = p.Stop()
			return nil, err
		}
		return &instance{name: name, addr: addr, host: addr, proxies: []*Proc{p}}, nil
	case ScenarioHAProxy:
		return startPeer(ctx, name, e, "haproxy", func(dir string, port int) ([]string, error) {
			cfg, err := writeFile(dir, "haproxy.cfg", HAProxyConfig(port, e.upstream, e.proto))
			if err != nil {
				return nil, err
			}
			return []string{"-db", "-f", cfg}, nil
		})
	case ScenarioHAProxy2Hop, ScenarioHAProxy2HopTLS:
		return startHAProxy2Hop(ctx, name, e)
	case ScenarioNginx:
		return startPeer(ctx, name, e, "nginx", func(dir string, port int) ([]string, error) {
			if e.proto == GRPC {
				if err := nginxHasGRPC(ctx); err != nil {
					return nil, err
				}
			}
			cfg, err := writeFile(dir, "nginx.conf", NginxConfig(dir, port, e.upstream, e.proto))
			if err != nil {
				return nil, err
			}
			return []string{"-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", cfg}, nil
		})
	case ScenarioEnvoy:
		return startPeer(ctx, name, e, "envoy", func(dir string, port int) ([]string, error) {
			yaml, err := EnvoyConfig(port, e.upstream, e.proto)
			if err != nil {
				return nil, err
			}
			cfg, err := writeFile(dir, "envoy.yaml", yaml)
			if err != nil {
				return nil, err
			}
			return []string{"-c", cfg, "--concurrency", "1", "--log-level", "warn", "--disable-hot-restart"}, nil
		})
	case ScenarioMeshd, ScenarioMeshd2Hop, ScenarioMeshd2HopTLS, ScenarioMeshdBaseline:
		return startMeshd(ctx, name, e)
	}
	return nil, fmt.Errorf("scenario %q: unknown (known: %s)", name, strings.Join(KnownScenarios(), ", "))
}

func startPeer(ctx context.Context, name string, e *env, bin string, args func(dir string, port int) ([]string, error)) (*instance, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, &SkipError{Reason: bin + " not found on PATH"}
	}
	dir := filepath.Join(e.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	// nginx started as root runs its worker as nobody, which must reach the temp dirs.
	_ = os.Chmod(e.dir, 0o755)
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	a, err := args(dir, port)
	var skip *SkipError
	if errors.As(err, &skip) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("%s config: %w", name, err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p, err := startListening(ctx, ProcSpec{Name: name, Argv: append([]string{path}, a...), Dir: dir, CPUs: e.cpusProxy}, addr)
	if err != nil {
		return nil, err
	}
	return &instance{name: name, addr: addr, host: addr, proxies: []*Proc{p}}, nil
}

// startListening starts spec and waits until addr accepts connections.
func startListening(ctx context.Context, spec ProcSpec, addr string) (*Proc, error) {
	p, err := StartProc(spec)
	if err != nil {
		return nil, err
	}
	if err := p.WaitReady(ctx, startTimeout, dialCheck(addr)); err != nil {
		_ = p.Stop()
		return nil, err
	}
	return p, nil
}

// startHAProxy2Hop starts haproxy-2hop and haproxy-2hop-tls: the ingress haproxy, then
// the egress haproxy the load goes to (HAProxy2HopConfigs), pinned as meshd's two
// sidecars are.
func startHAProxy2Hop(ctx context.Context, name string, e *env) (*instance, error) {
	path, err := exec.LookPath("haproxy")
	if err != nil {
		return nil, &SkipError{Reason: "haproxy not found on PATH"}
	}
	var files *TLSFiles
	if IsTLSHop(name) {
		if err := haproxyHasTLS(ctx, path); err != nil {
			return nil, err
		}
		if files = e.tls; files == nil {
			return nil, fmt.Errorf("%s: no certificates: %s", name, e.tlsWhy)
		}
	}
	dir := filepath.Join(e.dir, name)
	var ports [3]int
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	egressCfg, ingressCfg := HAProxy2HopConfigs(ports[0], ports[1], ports[2], e.upstream, e.proto, files)
	in := &instance{name: name, addr: "127.0.0.1:" + strconv.Itoa(ports[0])}
	in.host = in.addr
	hop := "127.0.0.1:" + strconv.Itoa(ports[1])
	for _, h := range []struct{ role, cfg, addr string }{{"ingress", ingressCfg, hop}, {"egress", egressCfg, in.addr}} {
		cfg, err := writeFile(dir, "haproxy-"+h.role+".cfg", h.cfg)
		if err != nil {
			in.stop()
			return nil, err
		}
		p, err := startListening(ctx, ProcSpec{Name: name + "/" + h.role, Argv: []string{path, "-db", "-f", cfg}, Dir: dir, CPUs: e.cpusProxy}, h.addr)
		if err != nil {
			in.stop()
			return nil, err
		}
		// The egress proxy first, as for meshd-2hop's sidecars (client, then upstream).
		in.proxies = append([]*Proc{p}, in.proxies...)
	}
	if files != nil {
		stats := "127.0.0.1:" + strconv.Itoa(ports[2])
		in.hop = &hopCheck{addr: hop, alpn: hopALPN(e.proto),
			counter: "CumSslConns of the ingress haproxy (show info: TLS connections accepted, failed handshakes included)",
			handshakes: func(ctx context.Context) (uint64, error) {
				return haproxyInfo(ctx, stats, "CumSslConns")
			}}
	}
	return in, nil
}

// haproxyHasTLS returns a SkipError when the haproxy at path was built without
// OpenSSL, which its ssl keywords need.
func haproxyHasTLS(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "-vv").CombinedOutput()
	if err != nil {
		return fmt.Errorf("haproxy -vv: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if !strings.Contains(string(out), "Built with OpenSSL") {
		return &SkipError{Reason: "haproxy built without OpenSSL (haproxy -vv): it cannot carry TLS"}
	}
	return nil
}

// FindMeshd returns the meshd binary to benchmark: explicit if set (made absolute),
// else meshd beside the running executable, else meshd on PATH.
func FindMeshd(explicit string) (string, error) {
	if explicit != "" {
		return checkBinary("--meshd", explicit)
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "meshd")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath("meshd")
	if err != nil {
		return "", errors.New("no meshd beside meshbench nor on PATH (build it with `go build -o . ./cmd/meshd` or pass --meshd)")
	}
	return p, nil
}

// CheckBaselineMeshd checks that path, the binary of ScenarioMeshdBaseline, exists
// and returns it absolute; the error names the flag as FindMeshd's does.
func CheckBaselineMeshd(path string) (string, error) {
	if path == "" {
		return "", errors.New("no baseline meshd binary: " + ScenarioMeshdBaseline + " needs " + BaselineMeshdFlag + " PATH (Plan.BaselineMeshd)")
	}
	return checkBinary(BaselineMeshdFlag, path)
}

// checkBinary checks that the binary path given by flag exists and returns it
// absolute: the meshd scenarios run in their own config directories.
func checkBinary(flag, path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", flag, path, err)
	}
	if st.IsDir() {
		return "", fmt.Errorf("%s %s: is a directory, want the binary", flag, path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", flag, path, err)
	}
	return abs, nil
}

// MeshdHost is the virtual service name the meshd scenarios address.
const MeshdHost = "upstream.bench.local"

// MeshdConfig returns the App Mesh-shaped config of the meshd scenarios: node
// "client" may call upstream.bench.local, served by node "upstream" whose listener
// is the built-in upstream's port and whose endpoint is endpoint (the upstream
// itself for one hop, the second sidecar's ingress for two). That listener's
// protocol is http (HTTP/1.1 upstream, also for h2c load, as the other scenarios), or
// grpc for proto grpc, so meshd speaks h2c to the upstream.
func MeshdConfig(upstreamPort int, endpoint string, proto Proto) string {
	return MeshdTLSConfig(upstreamPort, endpoint, proto, nil)
}

// MeshdTLSConfig is MeshdConfig with, when tlsFiles is not nil, mutual TLS between
// the nodes as a mesh would have it (meshd-2hop-tls): node client's client policy
// originates TLS with its workload certificate and accepts only node upstream's
// SPIFFE ID; node upstream's listener is STRICT and accepts only node client's.
func MeshdTLSConfig(upstreamPort int, endpoint string, proto Proto, tlsFiles *TLSFiles) string {
	listenerProto := "http"
	if proto == GRPC {
		listenerProto = "grpc"
	}
	clientPolicy, listenerTLS := "", ""
	if f := tlsFiles; f != nil {
		clientPolicy = fmt.Sprintf(`
      backendDefaults:
        clientPolicy:
          tls:
            certificate: {file: {certificateChain: %q, privateKey: %q}}
            validation:
              trust: {file: {certificateChain: %q}}
              subjectAlternativeNames: {match: {exact: [%q]}}`, f.Client.Cert, f.Client.Key, f.CA, f.Server.ID)
		listenerTLS = fmt.Sprintf(`
          tls:
            mode: STRICT
            certificate: {file: {certificateChain: %q, privateKey: %q}}
            validation:
              trust: {file: {certificateChain: %q}}
              subjectAlternativeNames: {match: {exact: [%q]}}`, f.Server.Cert, f.Server.Key, f.CA, f.Client.ID)
	}
	return fmt.Sprintf(`mesh: {meshName: %s, spec: {egressFilter: {type: DROP_ALL}}}
virtualNodes:
  - virtualNodeName: %s
    spec:
      listeners: [{portMapping: {port: 18080, protocol: http}}]
      serviceDiscovery: {static: {endpoints: ["127.0.0.1:18080"]}}
      backends: [{virtualService: {virtualServiceName: %s}}]%s
  - virtualNodeName: %s
    spec:
      listeners:
        - portMapping: {port: %d, protocol: %s}%s
      serviceDiscovery: {static: {endpoints: [%q]}}
virtualServices:
  - virtualServiceName: %s
    spec: {provider: {virtualNode: {virtualNodeName: %s}}}
`, tlsMesh, tlsClientNode, MeshdHost, clientPolicy, tlsServerNode, upstreamPort, listenerProto, listenerTLS, endpoint, MeshdHost, tlsServerNode)
}

// startMeshd starts the meshd scenarios: meshd and meshd-baseline (one sidecar, the
// same config and pinning, different binaries), meshd-2hop and meshd-2hop-tls.
func startMeshd(ctx context.Context, name string, e *env) (*instance, error) {
	return startMeshdArgs(ctx, name, e)
}

// startMeshdArgs is startMeshd with extra arguments for every sidecar's meshd run.
func startMeshdArgs(ctx context.Context, name string, e *env, extra ...string) (*instance, error) {
	bin, why := e.meshd, e.meshdWhy
	if name == ScenarioMeshdBaseline {
		bin, why = e.baseline, e.baselineWhy
	}
	if bin == "" {
		return nil, &SkipError{Reason: why}
	}
	_, upPortS, _ := strings.Cut(e.upstream, ":")
	upPort, err := strconv.Atoi(upPortS)
	if err != nil {
		return nil, fmt.Errorf("upstream address %q: %w", e.upstream, err)
	}
	dir := filepath.Join(e.dir, name)
	ports := make([]int, 6)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	endpoint := e.upstream
	twoHop := name == ScenarioMeshd2Hop || name == ScenarioMeshd2HopTLS
	if twoHop {
		endpoint = "127.0.0.1:" + strconv.Itoa(ports[3]) // ingress of sidecar 2
	}
	var files *TLSFiles
	if IsTLSHop(name) {
		if files = e.tls; files == nil {
			return nil, fmt.Errorf("%s: no certificates: %s", name, e.tlsWhy)
		}
	}
	cfg, err := writeFile(dir, "mesh.yaml", MeshdTLSConfig(upPort, endpoint, e.proto, files))
	if err != nil {
		return nil, err
	}
	in := &instance{name: name, host: MeshdHost, addr: "127.0.0.1:" + strconv.Itoa(ports[2])}
	type sidecar struct {
		node                   string
		admin, ingress, egress int
	}
	cars := []sidecar{{"client", ports[0], ports[1], ports[2]}}
	if twoHop {
		cars = append(cars, sidecar{"upstream", ports[5], ports[3], ports[4]})
	}
	for _, sc := range cars {
		admin := "127.0.0.1:" + strconv.Itoa(sc.admin)
		// The drain grace (readiness fails while listeners serve on) is for orchestrators;
		// a benchmark stopping its sidecar wants it gone at once. An environment variable,
		// not a flag, so a baseline meshd from before the flag existed starts as well.
		p, err := StartProc(ProcSpec{Name: name + "/" + sc.node, Dir: dir, CPUs: e.cpusProxy, Env: []string{"MESHD_DRAIN_GRACE=0s"}, Argv: append([]string{bin, "run", "-c", cfg,
			"--node", sc.node, "--admin-addr", admin,
			"--ingress-port", strconv.Itoa(sc.ingress), "--egress-port", strconv.Itoa(sc.egress)}, extra...)})
		if err != nil {
			in.stop()
			return nil, err
		}
		in.proxies = append(in.proxies, p)
		if err := p.WaitReady(ctx, startTimeout, httpReady("http://"+admin+"/ready")); err != nil {
			in.stop()
			return nil, err
		}
		if files != nil && sc.node == tlsServerNode {
			in.hop = &hopCheck{addr: "127.0.0.1:" + strconv.Itoa(sc.ingress), alpn: hopALPN(e.proto),
				counter: "listener.*.ssl.handshake on the ingress sidecar's /stats (successful handshakes)",
				handshakes: func(ctx context.Context) (uint64, error) {
					return meshdListenerHandshakes(ctx, admin)
				}}
		}
	}
	return in, nil
}

// nginxHasGRPC returns a SkipError when the nginx on PATH was built without
// ngx_http_grpc_module, which grpc_pass needs.
func nginxHasGRPC(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nginx", "-V").CombinedOutput()
	if err != nil {
		return fmt.Errorf("nginx -V: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if strings.Contains(string(out), "--without-http_grpc_module") {
		return &SkipError{Reason: "nginx built --without-http_grpc_module: it cannot carry gRPC (grpc_pass)"}
	}
	return nil
}

func httpReady(url string) func() error {
	c := &http.Client{Timeout: time.Second}
	return func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}
