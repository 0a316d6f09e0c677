package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshd/meshd/config"
)

// describeFiles is reloadCfg as App Mesh users kept it: describe-* outputs, the nodes
// appended to one file with >>, the service as YAML.
func describeFiles(port int) map[string]string {
	meta := `"metadata": {"version": 3, "uid": "x"}, "status": {"status": "ACTIVE"}`
	return map[string]string{
		"mesh.json": `{"mesh": {"meshName": "m", "spec": {"egressFilter": {"type": "DROP_ALL"}}, ` + meta + `}}` + "\n",
		"nodes.json": `{"virtualNode": {"meshName": "m", "virtualNodeName": "client", "spec": {"listeners": [{"portMapping": {"port": 1234, "protocol": "http"}}], ` +
			`"serviceDiscovery": {"static": {"endpoints": ["127.0.0.1:1234"]}}, "backends": [{"virtualService": {"virtualServiceName": "app.local"}}]}, ` + meta + "}}\n" +
			fmt.Sprintf(`{"virtualNode": {"meshName": "m", "virtualNodeName": "app", "spec": {"listeners": [{"portMapping": {"port": %d, "protocol": "http"}}], `+
				`"serviceDiscovery": {"static": {"endpoints": ["127.0.0.1:%d"]}}}, `, port, port) + meta + "}}\n",
		"service.yaml": "virtualService:\n  meshName: m\n  virtualServiceName: app.local\n  spec: {provider: {virtualNode: {virtualNodeName: app}}}\n",
	}
}

func writeDir(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, s := range files {
		// Through a rename, as deploy tools write: the watcher never reads half a file.
		tmp := filepath.Join(dir, ".tmp-"+name)
		writeFile(t, tmp, s)
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRunDirectoryBinary: meshd run -c DIR serves a directory of describe-* outputs,
// reloads when one of its files changes, keeps the last good config when a file added
// to it defines a resource twice, and serves the same version as the one-file layout.
func TestRunDirectoryBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the meshd binary; skipped with -short")
	}
	bin := meshdBinary(t)
	dir := t.TempDir()
	writeDir(t, dir, describeFiles(7000))
	p := startMeshd(t, bin, nil, "-c", dir)
	if c := p.config(t); c.Version != dirDigest(t, 7000) || c.Source != "file:"+dir {
		t.Fatalf("initial config %+v, want version %s", c, dirDigest(t, 7000))
	}

	writeDir(t, dir, map[string]string{"nodes.json": describeFiles(7001)["nodes.json"]})
	p.waitVersion(t, dirDigest(t, 7001))

	writeDir(t, dir, map[string]string{"zz-again.yaml": "virtualNode: {meshName: m, virtualNodeName: app, spec: {}}\n"})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(p.logs.String(), `virtual node \"app\" is defined twice`) {
		if time.Now().After(deadline) {
			t.Fatal("the directory with a resource defined twice was never rejected")
		}
		time.Sleep(20 * time.Millisecond) // polling an external process's log
	}
	if c := p.config(t); c.Version != dirDigest(t, 7001) {
		t.Fatalf("after a rejected directory, serving %+v", c)
	}
	if !strings.Contains(p.logs.String(), "zz-again.yaml") || !strings.Contains(p.logs.String(), "nodes.json") {
		t.Errorf("the rejection does not name both files:\n%s", p.logs.String())
	}

	if err := os.Remove(filepath.Join(dir, "zz-again.yaml")); err != nil {
		t.Fatal(err)
	}
	writeDir(t, dir, map[string]string{"nodes.json": describeFiles(7002)["nodes.json"]})
	p.waitVersion(t, dirDigest(t, 7002))
}

// dirDigest is the version of describeFiles(port) read as a directory.
func dirDigest(t *testing.T, port int) string {
	t.Helper()
	dir := t.TempDir()
	writeDir(t, dir, describeFiles(port))
	c, err := config.ParseFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	return c.Digest()
}

// TestDescribeFilesMatchLayout: the directory of describe-* outputs is the mesh of the
// one-document layout: the same resources, with the meshName each output carries, and
// no metadata or status (the version does not change when App Mesh's bookkeeping does).
func TestDescribeFilesMatchLayout(t *testing.T) {
	dir := t.TempDir()
	writeDir(t, dir, describeFiles(7000))
	c, err := config.ParseFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	want, err := config.Parse([]byte(reloadCfg(7000)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range want.VirtualNodes {
		want.VirtualNodes[i].MeshName = "m"
	}
	for i := range want.VirtualServices {
		want.VirtualServices[i].MeshName = "m"
	}
	if c.Digest() != want.Digest() {
		gj, _ := json.Marshal(c)
		wj, _ := json.Marshal(want)
		t.Fatalf("directory:\n%s\nlayout:\n%s", gj, wj)
	}
	files := describeFiles(7000)
	files["nodes.json"] = strings.ReplaceAll(files["nodes.json"], `"version": 3`, `"version": 4`)
	writeDir(t, dir, files)
	if c2, err := config.ParseFile(dir); err != nil || c2.Digest() != c.Digest() {
		t.Fatalf("a new metadata.version changed the config: %v", err)
	}
}
