package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meshd/meshd/config"
	"github.com/meshd/meshd/proxy/intercept"
	"github.com/meshd/meshd/router"
)

// The deployment artefacts cannot be run here (no Docker engine, no cluster, no ECS),
// so these tests check what can be checked: they parse, carry the fields their platforms
// require, and agree with each other and with meshd's defaults.

var deployDir = filepath.Join("..", "..", "deploy")

func readDeploy(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type ecsKV struct{ Name, Value string }

type ecsTaskDef struct {
	Family                  string
	NetworkMode             string
	RequiresCompatibilities []string
	ProxyConfiguration      *struct {
		Type          string
		ContainerName string
		Properties    []ecsKV
	}
	ContainerDefinitions []struct {
		Name         string
		Image        string
		Essential    *bool
		User         string
		Environment  []ecsKV
		PortMappings []struct{ ContainerPort int }
		DependsOn    []struct{ ContainerName, Condition string }
		HealthCheck  *struct {
			Command []string
		}
	}
}

func TestDeployECSTaskDefinition(t *testing.T) {
	raw := readDeploy(t, "ecs/task-definition.json")
	var td ecsTaskDef
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&td); err != nil {
		t.Fatalf("task definition is not valid JSON: %v", err)
	}
	if td.Family == "" || len(td.ContainerDefinitions) == 0 {
		t.Fatal("family and containerDefinitions are required")
	}
	if td.NetworkMode != "awsvpc" {
		t.Errorf("networkMode %q: APPMESH proxyConfiguration needs awsvpc", td.NetworkMode)
	}
	pc := td.ProxyConfiguration
	if pc == nil || pc.Type != "APPMESH" {
		t.Fatalf("proxyConfiguration.type must be APPMESH, got %+v", pc)
	}
	props := map[string]string{}
	for _, p := range pc.Properties {
		props[p.Name] = p.Value
	}
	for _, want := range []struct{ name, value string }{
		{"IgnoredUID", "1337"}, {"ProxyIngressPort", "15000"}, {"ProxyEgressPort", "15001"},
	} {
		if props[want.name] != want.value {
			t.Errorf("proxyConfiguration %s = %q, want %q (meshd's defaults)", want.name, props[want.name], want.value)
		}
	}
	appPorts, err := intercept.ParsePorts(props["AppPorts"])
	if err != nil || len(appPorts) == 0 {
		t.Errorf("proxyConfiguration AppPorts %q: %v", props["AppPorts"], err)
	}
	if _, err := intercept.ParsePrefixes(props["EgressIgnoredIPs"]); err != nil {
		t.Errorf("EgressIgnoredIPs: %v", err)
	}

	names := map[string]int{}
	for i, c := range td.ContainerDefinitions {
		if c.Name == "" || c.Image == "" {
			t.Errorf("containerDefinitions[%d]: name and image are required", i)
		}
		names[c.Name] = i
	}
	proxyIdx, ok := names[pc.ContainerName]
	if !ok {
		t.Fatalf("proxyConfiguration.containerName %q is not a container", pc.ContainerName)
	}
	proxy := td.ContainerDefinitions[proxyIdx]
	if proxy.User != "1337" || proxy.User != props["IgnoredUID"] {
		t.Errorf("meshd container user %q must be the IgnoredUID %q", proxy.User, props["IgnoredUID"])
	}
	// The health check needs no curl or wget: meshd health asks the admin itself.
	if proxy.HealthCheck == nil || !slices.Equal(proxy.HealthCheck.Command, []string{"CMD", "/usr/local/bin/meshd", "health"}) {
		t.Errorf("meshd container needs the health check [CMD /usr/local/bin/meshd health], got %+v", proxy.HealthCheck)
	}
	env := map[string]string{}
	for _, e := range proxy.Environment {
		env[e.Name] = e.Value
	}
	if env["MESHD_CONFIG"] == "" || env["MESHD_NODE"] == "" {
		t.Errorf("meshd container needs MESHD_CONFIG and MESHD_NODE, has %v", env)
	}
	for i, c := range td.ContainerDefinitions {
		if i == proxyIdx {
			continue
		}
		if !slices.ContainsFunc(c.DependsOn, func(d struct{ ContainerName, Condition string }) bool {
			return d.ContainerName == pc.ContainerName && d.Condition == "HEALTHY"
		}) {
			t.Errorf("container %q must dependsOn %q HEALTHY so it starts after interception works", c.Name, pc.ContainerName)
		}
		for _, pm := range c.PortMappings {
			if !slices.Contains(appPorts, pm.ContainerPort) {
				t.Errorf("container %q port %d is not in AppPorts %v", c.Name, pm.ContainerPort, appPorts)
			}
		}
	}
}

// k8sDocs splits a multi-document YAML file and decodes each document.
func k8sDocs(t *testing.T, raw []byte) []map[string]any {
	t.Helper()
	var docs []map[string]any
	for i, part := range strings.Split("\n"+string(raw), "\n---") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal([]byte(part), &m); err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		if m == nil {
			continue
		}
		docs = append(docs, m)
	}
	return docs
}

func get(m any, path ...string) any {
	for _, p := range path {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[p]
	}
	return m
}

func strs(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

func TestDeployKubernetes(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(deployDir, "k8s", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/k8s: %v", err)
	}
	meshes := map[string]string{} // ConfigMap name -> mesh.yaml
	var pods []map[string]any
	var services []map[string]any
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range k8sDocs(t, raw) {
			kind, _ := d["kind"].(string)
			name, _ := get(d, "metadata", "name").(string)
			if d["apiVersion"] == nil || kind == "" || name == "" {
				t.Errorf("%s: document without apiVersion/kind/metadata.name: %v", f, d)
			}
			switch kind {
			case "ConfigMap":
				if s, ok := get(d, "data", "mesh.yaml").(string); ok {
					meshes[name] = s
				}
			case "Deployment", "StatefulSet", "DaemonSet":
				if pod, ok := get(d, "spec", "template", "spec").(map[string]any); ok {
					pods = append(pods, pod)
				}
			case "Service":
				services = append(services, d)
			}
		}
	}
	if len(pods) == 0 {
		t.Fatal("no pod template in deploy/k8s")
	}
	gateways := 0
	defer func() {
		if gateways == 0 {
			t.Error("no gateway Deployment in deploy/k8s (MESHD_GATEWAY)")
		}
	}()
	for _, pod := range pods {
		if gatewayPod(t, pod, meshes, services) {
			gateways++
			continue
		}
		inits, _ := pod["initContainers"].([]any)
		if len(inits) < 2 {
			t.Fatalf("want an iptables init container and a meshd sidecar, got %d init containers", len(inits))
		}
		// The rules go in first, with NET_ADMIN.
		first := inits[0]
		if cmd := strings.Join(append(strs(get(first, "command")), strs(get(first, "args"))...), " "); cmd != "meshd iptables apply" {
			t.Errorf("first init container runs %q, want meshd iptables apply", cmd)
		}
		if !slices.Contains(strs(get(first, "securityContext", "capabilities", "add")), "NET_ADMIN") {
			t.Error("the iptables init container needs NET_ADMIN")
		}
		var sidecar any
		for _, c := range inits[1:] {
			if get(c, "restartPolicy") == "Always" {
				sidecar = c
			}
		}
		if sidecar == nil {
			t.Fatal("no native sidecar (init container with restartPolicy: Always)")
		}
		if cmd := strings.Join(append(strs(get(sidecar, "command")), strs(get(sidecar, "args"))...), " "); cmd != "meshd run" {
			t.Errorf("sidecar runs %q, want meshd run", cmd)
		}
		if uid, _ := get(sidecar, "securityContext", "runAsUser").(float64); uid != intercept.DefaultIgnoredUID {
			t.Errorf("sidecar runAsUser %v, want %d (the UID the rules exempt)", uid, intercept.DefaultIgnoredUID)
		}
		if caps := strs(get(sidecar, "securityContext", "capabilities", "add")); len(caps) > 0 {
			t.Errorf("the sidecar needs no capabilities, has %v", caps)
		}
		// Probes need no curl or wget in the image: meshd health asks the admin itself.
		for _, probe := range []string{"startupProbe", "readinessProbe"} {
			if cmd := strings.Join(strs(get(sidecar, probe, "exec", "command")), " "); cmd != "meshd health" {
				t.Errorf("sidecar %s runs %q, want meshd health", probe, cmd)
			}
		}
		env := map[string]string{}
		for _, e := range get(sidecar, "env").([]any) {
			n, _ := get(e, "name").(string)
			v, _ := get(e, "value").(string)
			env[n] = v
		}
		// The mounted config parses, validates and compiles for the sidecar's node.
		var cmName string
		for _, v := range pod["volumes"].([]any) {
			if n, ok := get(v, "configMap", "name").(string); ok {
				cmName = n
			}
		}
		mesh, ok := meshes[cmName]
		if !ok {
			t.Fatalf("pod mounts ConfigMap %q, which has no mesh.yaml", cmName)
		}
		cfg, err := config.Parse([]byte(mesh))
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil {
			_, err = router.Compile(cfg, env["MESHD_NODE"])
		}
		if err != nil {
			t.Errorf("ConfigMap %s mesh.yaml for node %q: %v", cmName, env["MESHD_NODE"], err)
		}
	}
}

// gatewayPod checks a pod whose meshd serves a virtual gateway (MESHD_GATEWAY set) and
// reports whether it is one: meshd is a plain container (nothing to intercept), the
// gateway compiles from the mounted config, the readiness probe asks the listener's
// health check path, and a LoadBalancer Service sends to the listener port with the
// NLB's health check on the same path.
func gatewayPod(t *testing.T, pod map[string]any, meshes map[string]string, services []map[string]any) bool {
	t.Helper()
	var meshd any
	env := map[string]string{}
	for _, c := range append(slices.Clone(anys(pod["containers"])), anys(pod["initContainers"])...) {
		for _, e := range anys(get(c, "env")) {
			n, _ := get(e, "name").(string)
			v, _ := get(e, "value").(string)
			if n == "MESHD_GATEWAY" {
				meshd = c
			}
			env[n] = v
		}
		if meshd != nil {
			break
		}
		clear(env)
	}
	if meshd == nil {
		return false
	}
	if len(anys(pod["initContainers"])) > 0 {
		t.Errorf("gateway pod has init containers: a gateway intercepts nothing")
	}
	if cmd := strings.Join(append(strs(get(meshd, "command")), strs(get(meshd, "args"))...), " "); cmd != "meshd run" {
		t.Errorf("gateway container runs %q, want meshd run", cmd)
	}
	var cmName string
	for _, v := range anys(pod["volumes"]) {
		if n, ok := get(v, "configMap", "name").(string); ok {
			cmName = n
		}
	}
	cfg, err := config.Parse([]byte(meshes[cmName]))
	if err == nil {
		err = cfg.Validate()
	}
	var gw *router.Gateway
	if err == nil {
		gw, err = router.CompileGateway(cfg, env["MESHD_GATEWAY"])
	}
	if err != nil {
		t.Fatalf("ConfigMap %s mesh.yaml for gateway %q: %v", cmName, env["MESHD_GATEWAY"], err)
	}
	port, _ := get(meshd, "readinessProbe", "httpGet", "port").(float64)
	path, _ := get(meshd, "readinessProbe", "httpGet", "path").(string)
	l := gw.Listeners[int(port)]
	if l == nil || l.HealthPath == "" || l.HealthPath != path {
		t.Errorf("gateway readinessProbe asks %s on port %v; want a listener's healthCheck path", path, port)
	}
	found := false
	for _, svc := range services {
		if get(svc, "spec", "type") != "LoadBalancer" {
			continue
		}
		for _, p := range anys(get(svc, "spec", "ports")) {
			if tp, _ := get(p, "targetPort").(float64); int(tp) == int(port) {
				found = true
				if hp := get(svc, "metadata", "annotations", "service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"); hp != path {
					t.Errorf("NLB health check path %v, want the listener's %s", hp, path)
				}
			}
		}
	}
	if !found {
		t.Errorf("no LoadBalancer Service sends to the gateway listener port %v", port)
	}
	return true
}

func anys(v any) []any {
	l, _ := v.([]any)
	return l
}

func TestDeploySystemd(t *testing.T) {
	unit := string(readDeploy(t, "systemd/meshd.service"))
	sections := map[string]map[string][]string{}
	var cur string
	for line := range strings.Lines(unit) {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			cur = line
			sections[cur] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || cur == "" {
				t.Errorf("unit line %q is not key=value in a section", line)
				continue
			}
			sections[cur][k] = append(sections[cur][k], v)
		}
	}
	for _, s := range []string{"[Unit]", "[Service]", "[Install]"} {
		if sections[s] == nil {
			t.Errorf("unit lacks %s", s)
		}
	}
	svc := sections["[Service]"]
	one := func(k string) string {
		if len(svc[k]) != 1 {
			t.Errorf("[Service] %s set %d times, want once", k, len(svc[k]))
			return ""
		}
		return svc[k][0]
	}
	if v := one("ExecStart"); !strings.HasSuffix(v, "meshd run") {
		t.Errorf("ExecStart=%s, want meshd run", v)
	}
	// "+" runs the rule commands as root while meshd itself runs as the meshd user.
	if v := one("ExecStartPre"); !strings.HasPrefix(v, "+") || !strings.HasSuffix(v, "meshd iptables apply") {
		t.Errorf("ExecStartPre=%s, want +.../meshd iptables apply", v)
	}
	if v := one("ExecStopPost"); !strings.HasPrefix(v, "+") || !strings.HasSuffix(v, "meshd iptables clean") {
		t.Errorf("ExecStopPost=%s, want +.../meshd iptables clean", v)
	}
	if v := one("User"); v != "meshd" {
		t.Errorf("User=%s, want meshd (UID 1337, created by setup.sh)", v)
	}

	setup := filepath.Join(deployDir, "systemd", "setup.sh")
	if out, err := exec.Command("bash", "-n", setup).CombinedOutput(); err != nil {
		t.Errorf("bash -n setup.sh: %v\n%s", err, out)
	}
	if fi, err := os.Stat(setup); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("setup.sh must be executable: %v", err)
	}
	if b := string(readDeploy(t, "systemd/setup.sh")); !strings.Contains(b, `uid="${MESHD_UID:-1337}"`) {
		t.Error("setup.sh must create the meshd user with UID 1337 by default")
	}

	// systemd's own checker, where installed; the binary is not installed here.
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		out, _ := exec.Command("systemd-analyze", "verify", filepath.Join(deployDir, "systemd", "meshd.service")).CombinedOutput()
		for line := range strings.Lines(string(out)) {
			if strings.TrimSpace(line) != "" && !strings.Contains(line, "/usr/local/bin/meshd is not executable") {
				t.Errorf("systemd-analyze verify: %s", line)
			}
		}
	}
}

func TestDeployDockerfile(t *testing.T) {
	df := string(readDeploy(t, "Dockerfile"))
	var stages []string
	var last []string // instructions of the final (default) stage
	for line := range strings.Lines(df) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "FROM ") {
			stages = append(stages, line)
			last = nil
		}
		if line != "" && !strings.HasPrefix(line, "#") {
			last = append(last, line)
		}
	}
	if len(stages) < 2 {
		t.Fatalf("want a multi-stage build, got %v", stages)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "AS init", "iptables-legacy"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	final := strings.Join(last, "\n")
	for _, want := range []string{"USER 1337", "EXPOSE 15000 15001 9901", `ENTRYPOINT ["/usr/local/bin/meshd", "run"]`, `CMD ["/usr/local/bin/meshd", "health"]`} {
		if !strings.Contains(final, want) {
			t.Errorf("final stage lacks %q:\n%s", want, final)
		}
	}
}
