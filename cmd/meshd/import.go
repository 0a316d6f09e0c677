package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/meshd/meshd/config"
)

// meshd import converts what App Mesh users kept (CloudFormation templates, App Mesh
// controller manifests, describe-* outputs) into one meshd mesh file, and says on
// stderr, one line each, what it could not carry over and why.

// paramFlags collects repeated --parameter K=V.
type paramFlags map[string]string

func (p paramFlags) String() string { return "" }

func (p paramFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want KEY=VALUE, not %q", s)
	}
	p[k] = v
	return nil
}

func cmdImport(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("meshd import", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "write the mesh file here (.json: JSON, else YAML) instead of stdout")
	params := paramFlags{}
	fs.Var(params, "parameter", "a CloudFormation template parameter, KEY=VALUE (repeatable); overrides its Default")
	meshName := fs.String("mesh", "", "the mesh's name when the inputs name none (controller manifests without a Mesh)")
	tlsDir := fs.String("tls-dir", "/etc/meshd/tls", "where the certificates exported from ACM are expected")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: meshd import [-o FILE] [--parameter K=V ...] [--mesh NAME] INPUT...")
		fmt.Fprintln(stderr, "INPUT: a CloudFormation template (JSON or YAML), App Mesh controller manifests")
		fmt.Fprintln(stderr, "(appmesh.k8s.aws/v1beta2), describe-* outputs, or a directory of them.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "meshd import: name at least one INPUT (file or directory)")
		fs.Usage()
		return 2
	}
	im := &importer{params: params, tlsDir: *tlsDir, report: func(s string) { fmt.Fprintln(stderr, "meshd import:", s) }}
	for _, in := range fs.Args() {
		if err := im.input(in); err != nil {
			fmt.Fprintln(stderr, "meshd import:", err)
			return 1
		}
	}
	cfg, err := im.result(*meshName)
	if err != nil {
		fmt.Fprintln(stderr, "meshd import:", err)
		return 1
	}
	data, err := encodeMesh(cfg, strings.HasSuffix(strings.ToLower(*out), ".json"))
	if err != nil {
		fmt.Fprintln(stderr, "meshd import:", err)
		return 1
	}
	// What meshd validate checks, on the bytes written: a file that does not validate is
	// still written (to be fixed by hand), and the exit status says so.
	verr := validateImported(data)
	if *out == "" {
		if _, err := stdout.Write(data); err != nil {
			fmt.Fprintln(stderr, "meshd import:", err)
			return 1
		}
	} else if err := os.WriteFile(*out, data, 0o644); err != nil {
		fmt.Fprintln(stderr, "meshd import:", err)
		return 1
	}
	if verr != nil {
		fmt.Fprintln(stderr, "meshd import: the result does not validate; fix it by hand:")
		var errs *config.Errors
		if errors.As(verr, &errs) {
			for _, fe := range errs.List {
				fmt.Fprintln(stderr, "  ", fe.Error())
			}
		} else {
			fmt.Fprintln(stderr, "  ", verr)
		}
		return 1
	}
	return 0
}

func validateImported(data []byte) error {
	c, err := config.Parse(data)
	if err == nil {
		err = c.Validate()
	}
	if err == nil {
		err = validateTLS(c, "")
	}
	return err
}

// importer accumulates the resources of every input.
type importer struct {
	params paramFlags
	tlsDir string
	report func(string)

	cfg    config.Config
	seen   map[string]string // kind/name → where it was defined
	meshAt string            // where the mesh was defined
	// meshNames: the mesh names the inputs use, each with where it was first seen.
	meshNames [][2]string
	// k8s manifests are converted once all inputs are read: references cross files.
	k8s    []k8sObject
	failed bool
}

// input reads one INPUT: a file or a directory of files.
func (im *importer) input(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return im.file(path)
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return err
	}
	n := 0
	for _, e := range entries {
		name := e.Name()
		ext := strings.ToLower(filepath.Ext(name))
		if e.IsDir() || strings.HasPrefix(name, ".") || (ext != ".json" && ext != ".yaml" && ext != ".yml") {
			continue
		}
		if err := im.file(filepath.Join(path, name)); err != nil {
			return err
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s: no *.json, *.yaml or *.yml file in the directory", path)
	}
	return nil
}

// file reads one file and decides what it is: a CloudFormation template (a mapping
// with Resources), controller manifests (apiVersion appmesh.k8s.aws/...), or App Mesh
// resources in any form meshd run reads.
func (im *importer) file(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Size() > config.MaxConfigSize {
		return fmt.Errorf("%s: %d bytes, larger than the %d byte limit", path, fi.Size(), config.MaxConfigSize)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	docs, derr := yamlDocs(data)
	if derr == nil && len(docs) > 0 {
		root := docs[0]
		switch {
		case len(docs) == 1 && mapKey(root, "Resources") != nil:
			return im.cfn(path, root)
		case slices.ContainsFunc(docs, isK8s):
			return im.k8sDocs(path, docs)
		}
	}
	// describe-* outputs, their streams and lists, meshd's layout: config reads them.
	c, err := config.Parse(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	im.merge(path, c)
	return nil
}

// yamlDocs decodes a YAML stream's non-empty documents.
func yamlDocs(data []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return docs, nil
			}
			return nil, err
		}
		r := &n
		if r.Kind == yaml.DocumentNode && len(r.Content) > 0 {
			r = r.Content[0]
		}
		if r.Kind == yaml.ScalarNode && r.ShortTag() == "!!null" {
			continue
		}
		docs = append(docs, r)
	}
}

func mapKey(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func isK8s(n *yaml.Node) bool {
	if v := mapKey(n, "apiVersion"); v != nil && strings.HasPrefix(v.Value, "appmesh.k8s.aws/") {
		return true
	}
	// kubectl get -o yaml: a List of them.
	if k := mapKey(n, "kind"); k != nil && k.Value == "List" {
		if items := mapKey(n, "items"); items != nil && len(items.Content) > 0 {
			return isK8s(items.Content[0])
		}
	}
	return false
}

// merge adds a parsed fragment's resources, refusing a resource defined twice and a
// second mesh name.
func (im *importer) merge(where string, c *config.Config) {
	if im.seen == nil {
		im.seen = map[string]string{}
	}
	add := func(kind, name, mesh string) bool {
		im.useMesh(mesh, where)
		k := kind + "/" + name
		if first, dup := im.seen[k]; dup {
			im.fail("%s: %s %q is defined twice: here and in %s", where, kind, name, first)
			return false
		}
		im.seen[k] = where
		return true
	}
	if c.Mesh.MeshName != "" && (!reflect.DeepEqual(c.Mesh.Spec, config.MeshSpec{}) || isMeshDef(c)) {
		if im.meshAt != "" {
			im.fail("%s: the mesh is defined twice: here and in %s", where, im.meshAt)
		} else {
			im.meshAt = where
			im.cfg.Mesh = c.Mesh
			im.cfg.Mesh.ResourceMeta = config.ResourceMeta{}
		}
		im.useMesh(c.Mesh.MeshName, where)
	}
	for _, r := range c.VirtualNodes {
		if add("virtual node", r.VirtualNodeName, r.MeshName) {
			r.ResourceMeta = config.ResourceMeta{MeshName: r.MeshName}
			im.cfg.VirtualNodes = append(im.cfg.VirtualNodes, r)
		}
	}
	for _, r := range c.VirtualServices {
		if add("virtual service", r.VirtualServiceName, r.MeshName) {
			r.ResourceMeta = config.ResourceMeta{MeshName: r.MeshName}
			im.cfg.VirtualServices = append(im.cfg.VirtualServices, r)
		}
	}
	for _, r := range c.VirtualRouters {
		if add("virtual router", r.VirtualRouterName, r.MeshName) {
			r.ResourceMeta = config.ResourceMeta{MeshName: r.MeshName}
			im.cfg.VirtualRouters = append(im.cfg.VirtualRouters, r)
		}
	}
	for _, r := range c.Routes {
		if add("route", r.VirtualRouterName+"/"+r.RouteName, r.MeshName) {
			r.ResourceMeta = config.ResourceMeta{MeshName: r.MeshName}
			im.cfg.Routes = append(im.cfg.Routes, r)
		}
	}
	for _, r := range c.VirtualGateways {
		if add("virtual gateway", r.VirtualGatewayName, r.MeshName) {
			r.ResourceMeta = config.ResourceMeta{MeshName: r.MeshName}
			im.cfg.VirtualGateways = append(im.cfg.VirtualGateways, r)
		}
	}
	for _, r := range c.GatewayRoutes {
		if add("gateway route", r.VirtualGatewayName+"/"+r.GatewayRouteName, r.MeshName) {
			r.ResourceMeta = config.ResourceMeta{MeshName: r.MeshName}
			im.cfg.GatewayRoutes = append(im.cfg.GatewayRoutes, r)
		}
	}
}

// isMeshDef reports whether c's mesh was written rather than filled in by Parse from
// the resources' meshName (describe-* outputs without describe-mesh).
func isMeshDef(c *config.Config) bool {
	return len(c.VirtualNodes)+len(c.VirtualServices)+len(c.VirtualRouters)+len(c.Routes)+len(c.VirtualGateways)+len(c.GatewayRoutes) == 0
}

func (im *importer) useMesh(name, where string) {
	if name == "" {
		return
	}
	for _, u := range im.meshNames {
		if u[0] == name {
			return
		}
	}
	if len(im.meshNames) > 0 {
		im.fail("%s: mesh %q differs from mesh %q of %s; import one mesh at a time", where, name, im.meshNames[0][0], im.meshNames[0][1])
	}
	im.meshNames = append(im.meshNames, [2]string{name, where})
}

var errImport = errors.New("import failed")

// fail reports a problem that makes the result unusable.
func (im *importer) fail(format string, args ...any) {
	im.report(fmt.Sprintf(format, args...))
	im.failed = true
}

// result converts the manifests gathered, names the mesh, rewrites ACM sources.
func (im *importer) result(meshName string) (*config.Config, error) {
	im.convertK8s()
	if im.failed {
		return nil, fmt.Errorf("%w: see the messages above", errImport)
	}
	if im.cfg.Mesh.MeshName == "" {
		switch {
		case meshName != "":
			im.cfg.Mesh.MeshName = meshName
		case len(im.meshNames) > 0:
			im.cfg.Mesh.MeshName = im.meshNames[0][0]
			im.report(fmt.Sprintf("no mesh resource among the inputs: mesh %q (named by %s) gets App Mesh's defaults (egress DROP_ALL)",
				im.meshNames[0][0], im.meshNames[0][1]))
		default:
			return nil, errors.New("no mesh among the inputs and none named by a resource: pass --mesh NAME")
		}
	} else if meshName != "" && meshName != im.cfg.Mesh.MeshName {
		return nil, fmt.Errorf("--mesh %q: the inputs define mesh %q", meshName, im.cfg.Mesh.MeshName)
	}
	im.rewriteACM()
	return &im.cfg, nil
}

// encodeMesh renders c in the documented layout: YAML with the model's field order, or
// indented JSON.
func encodeMesh(c *config.Config, asJSON bool) ([]byte, error) {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	if asJSON {
		return append(data, '\n'), nil
	}
	var n yaml.Node
	if err := yaml.Unmarshal(data, &n); err != nil {
		return nil, err
	}
	blockStyle(&n)
	var b bytes.Buffer
	b.WriteString("# meshd mesh file, written by meshd import\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// blockStyle undoes the flow style JSON input gives every node; scalars keep their
// tags, so the encoder still quotes a string that would read as a number.
func blockStyle(n *yaml.Node) {
	if n.Kind != yaml.ScalarNode {
		n.Style = 0
	} else {
		n.Style &^= yaml.DoubleQuotedStyle | yaml.FlowStyle
	}
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// ---------------------------------------------------------------------------
// From CloudFormation's and the controller's field names to the API's

// normalize maps v (decoded YAML/JSON: maps, lists, scalars) onto the model type t,
// renaming each key to the field whose JSON name matches it regardless of case
// (CloudFormation's Spec.Listeners[].PortMapping.Port is the API's
// spec.listeners[].portMapping.port; the controller's certificateARN is certificateArn)
// and turning the strings CloudFormation passes parameters as into numbers and booleans
// where the model wants them. A key no field matches is reported and left out.
func normalize(v any, t reflect.Type, path string, report func(path, msg string)) any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return v // a scalar StaticEndpoint, or a type error config reports
		}
		fields := map[string]reflect.StructField{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.IsExported() && !f.Anonymous {
				fields[strings.ToLower(jsonFieldName(f))] = f
			}
		}
		out := map[string]any{}
		for _, k := range sortedKeys(m) {
			f, ok := fields[strings.ToLower(k)]
			if !ok {
				report(joinDot(path, k), "not carried over: no such field in the App Mesh spec meshd reads")
				continue
			}
			// The path keeps the input's spelling, so a report points at what was written.
			out[jsonFieldName(f)] = normalize(m[k], f.Type, joinDot(path, k), report)
		}
		return out
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			return v
		}
		out := make([]any, len(l))
		for i, e := range l {
			out[i] = normalize(e, t.Elem(), path+"["+strconv.Itoa(i)+"]", report)
		}
		return out
	case reflect.Int, reflect.Int64, reflect.Int32:
		if s, ok := v.(string); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil {
				return n
			}
		}
	case reflect.Float64:
		if s, ok := v.(string); ok {
			if f, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil {
				return f
			}
		}
	case reflect.Bool:
		if s, ok := v.(string); ok {
			if b, err := strconv.ParseBool(s); err == nil {
				return b
			}
		}
	case reflect.String:
		switch x := v.(type) {
		case int64:
			return strconv.FormatInt(x, 10)
		case int:
			return strconv.Itoa(x)
		}
	}
	return v
}

func jsonFieldName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	if name == "" {
		return f.Name
	}
	return name
}

func joinDot(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// specTypes are the model's spec types by describe-* key.
var specTypes = map[string]reflect.Type{
	"mesh":           reflect.TypeFor[config.MeshSpec](),
	"virtualNode":    reflect.TypeFor[config.VirtualNodeSpec](),
	"virtualService": reflect.TypeFor[config.VirtualServiceSpec](),
	"virtualRouter":  reflect.TypeFor[config.VirtualRouterSpec](),
	"route":          reflect.TypeFor[config.RouteSpec](),
	"virtualGateway": reflect.TypeFor[config.VirtualGatewaySpec](),
	"gatewayRoute":   reflect.TypeFor[config.GatewayRouteSpec](),
}

// addResource type-checks one resource in the API's shape (names and spec) through
// config.Parse, so a CloudFormation or controller resource is held to the same rules
// as a describe-* output, and merges it.
func (im *importer) addResource(where, kind string, res map[string]any) {
	wrapped := map[string]any{kind: res}
	data, err := json.Marshal(wrapped)
	if err != nil {
		im.fail("%s: %v", where, err)
		return
	}
	c, err := config.Parse(data)
	if err != nil {
		var errs *config.Errors
		if errors.As(err, &errs) {
			for _, fe := range errs.List {
				im.fail("%s: %s", where, fe.Error())
			}
		} else {
			im.fail("%s: %v", where, err)
		}
		return
	}
	if kind == "mesh" {
		im.merge(where, &config.Config{Mesh: c.Mesh})
		return
	}
	c.Mesh = config.Mesh{}
	im.merge(where, c)
}

// ---------------------------------------------------------------------------
// ACM

// rewriteACM replaces ACM certificate and trust sources, which meshd cannot read, with
// file sources under the TLS directory, and lists what to export to where.
func (im *importer) rewriteACM() { im.rewriteACMInto(&im.cfg) }

func (im *importer) rewriteACMInto(cfg *config.Config) {
	lt := func(path string, t *config.ListenerTLS) {
		if t == nil || t.Certificate == nil || t.Certificate.ACM == nil {
			return
		}
		arn := t.Certificate.ACM.CertificateArn
		dir := filepath.Join(im.tlsDir, "acm-"+arnID(arn))
		t.Certificate.ACM = nil
		t.Certificate.File = &config.TLSFileCertificate{
			CertificateChain: filepath.Join(dir, "cert.pem"),
			PrivateKey:       filepath.Join(dir, "key.pem"),
		}
		im.report(fmt.Sprintf("%s.tls.certificate: ACM certificate %s is now a file source: export it "+
			"(aws acm export-certificate --certificate-arn %s, an ACM Private CA certificate) "+
			"to %s (chain) and %s (decrypted key)", path, arn, arn, t.Certificate.File.CertificateChain, t.Certificate.File.PrivateKey))
	}
	trust := func(path string, tr *config.TLSValidationTrust) {
		if tr == nil || tr.ACM == nil {
			return
		}
		arns := tr.ACM.CertificateAuthorityArns
		ids := make([]string, len(arns))
		for i, a := range arns {
			ids[i] = arnID(a)
		}
		file := filepath.Join(im.tlsDir, "acm-pca-"+strings.Join(ids, "+")+".pem")
		tr.ACM = nil
		tr.File = &config.TLSFileTrust{CertificateChain: file}
		im.report(fmt.Sprintf("%s.trust: ACM Private CA trust %s is now a file source: write each CA's certificate "+
			"(aws acm-pca get-certificate-authority-certificate --certificate-authority-arn ARN) into %s",
			path, strings.Join(arns, ", "), file))
	}
	client := func(path string, cp *config.ClientPolicy) {
		if cp == nil || cp.TLS == nil {
			return
		}
		trust(path+".tls.validation", &cp.TLS.Validation.Trust)
	}
	for i := range cfg.VirtualNodes {
		n := &cfg.VirtualNodes[i]
		p := fmt.Sprintf("virtualNodes[%d] (%s).spec", i, n.VirtualNodeName)
		for j := range n.Spec.Listeners {
			l := &n.Spec.Listeners[j]
			lp := fmt.Sprintf("%s.listeners[%d]", p, j)
			lt(lp, l.TLS)
			if l.TLS != nil && l.TLS.Validation != nil {
				trust(lp+".tls.validation", l.TLS.Validation.Trust)
			}
		}
		if n.Spec.BackendDefaults != nil {
			client(p+".backendDefaults.clientPolicy", n.Spec.BackendDefaults.ClientPolicy)
		}
		for j, b := range n.Spec.Backends {
			if b.VirtualService != nil {
				client(fmt.Sprintf("%s.backends[%d].virtualService.clientPolicy", p, j), b.VirtualService.ClientPolicy)
			}
		}
	}
	for i := range cfg.VirtualGateways {
		g := &cfg.VirtualGateways[i]
		p := fmt.Sprintf("virtualGateways[%d] (%s).spec", i, g.VirtualGatewayName)
		for j := range g.Spec.Listeners {
			l := &g.Spec.Listeners[j]
			lp := fmt.Sprintf("%s.listeners[%d]", p, j)
			lt(lp, l.TLS)
			if l.TLS != nil && l.TLS.Validation != nil {
				trust(lp+".tls.validation", l.TLS.Validation.Trust)
			}
		}
		if g.Spec.BackendDefaults != nil {
			client(p+".backendDefaults.clientPolicy", g.Spec.BackendDefaults.ClientPolicy)
		}
	}
}

// arnID is the last part of an ARN (a certificate's or CA's ID), safe as a file name.
func arnID(arn string) string {
	id := arn[strings.LastIndexAny(arn, "/:")+1:]
	id = strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r == '.' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') {
			return r
		}
		return '_'
	}, id)
	if id == "" {
		id = "certificate"
	}
	return id
}

// nameFromARN is the resource name an App Mesh ARN ends in.
func nameFromARN(arn string) string {
	return arn[strings.LastIndex(arn, "/")+1:]
}
