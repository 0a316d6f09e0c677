package main

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// App Mesh controller manifests (appmesh.k8s.aws/v1beta2): each object is named in App
// Mesh by its spec.awsName, or by the default the controller's webhook gave it
// (<name>_<namespace>; a virtual service <name>.<namespace>; a mesh its name), and
// refers to others by Kubernetes name and namespace (virtualNodeRef, ...), which the
// conversion turns into those App Mesh names.

type k8sObject struct {
	where     string
	kind      string
	name      string
	namespace string
	spec      map[string]any
}

func (o k8sObject) key() string { return o.kind + "/" + o.namespace + "/" + o.name }

// k8sDocs collects a manifest file's App Mesh objects; they are converted in result,
// once every input is read, since references cross files.
func (im *importer) k8sDocs(path string, docs []*yaml.Node) error {
	var nr nodeReader
	var add func(n *yaml.Node, where string)
	add = func(n *yaml.Node, where string) {
		v, _ := nr.value(n).(map[string]any)
		if nr.err != nil {
			return
		}
		kind, _ := v["kind"].(string)
		if kind == "List" {
			if items := mapKey(n, "items"); items != nil {
				for i, it := range items.Content {
					add(it, fmt.Sprintf("%s items[%d]", where, i))
				}
			}
			return
		}
		api, _ := v["apiVersion"].(string)
		if !strings.HasPrefix(api, "appmesh.k8s.aws/") {
			im.report(fmt.Sprintf("%s: %s %s is not an App Mesh object; left out", where, api, kind))
			return
		}
		if api != "appmesh.k8s.aws/v1beta2" {
			im.report(fmt.Sprintf("%s: apiVersion %s: read as v1beta2, the version the controller last served", where, api))
		}
		md, _ := v["metadata"].(map[string]any)
		name, _ := md["name"].(string)
		ns, _ := md["namespace"].(string)
		if ns == "" && kind != "Mesh" {
			ns = "default" // kubectl applies a manifest without one to the default namespace
		}
		spec, _ := v["spec"].(map[string]any)
		if spec == nil {
			spec = map[string]any{}
		}
		o := k8sObject{where: fmt.Sprintf("%s %s %s", where, kind, nsName(ns, name)), kind: kind, name: name, namespace: ns, spec: spec}
		if name == "" {
			im.fail("%s: metadata.name is required", o.where)
			return
		}
		im.k8s = append(im.k8s, o)
	}
	for i, d := range docs {
		where := path
		if len(docs) > 1 {
			where = fmt.Sprintf("%s document %d", path, i+1)
		}
		add(d, where)
	}
	if nr.err != nil {
		return fmt.Errorf("%s: %w", path, nr.err)
	}
	return nil
}

func nsName(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

// awsName is the App Mesh name of a controller object.
func (o k8sObject) awsName() string {
	if n, _ := o.spec["awsName"].(string); n != "" {
		return n
	}
	switch o.kind {
	case "Mesh":
		return o.name
	case "VirtualService":
		return o.name + "." + o.namespace
	}
	return o.name + "_" + o.namespace
}

// convertK8s turns the collected objects into App Mesh resources.
func (im *importer) convertK8s() {
	if len(im.k8s) == 0 {
		return
	}
	byKey := map[string]k8sObject{}
	var meshes, gateways []k8sObject
	for _, o := range im.k8s {
		if _, dup := byKey[o.key()]; dup {
			im.fail("%s: defined twice (also %s)", o.where, byKey[o.key()].where)
			continue
		}
		byKey[o.key()] = o
		switch o.kind {
		case "Mesh":
			meshes = append(meshes, o)
		case "VirtualGateway":
			gateways = append(gateways, o)
		}
	}
	if len(meshes) > 1 {
		im.fail("manifests define %d meshes (%s, %s, ...); import one mesh at a time", len(meshes), meshes[0].where, meshes[1].where)
		return
	}
	c := &k8sConv{im: im, byKey: byKey, gateways: gateways}
	if len(meshes) == 1 {
		c.mesh = meshes[0].awsName()
		c.meshK8s = meshes[0].name
	}
	for _, o := range im.k8s {
		c.object(o)
	}
}

type k8sConv struct {
	im       *importer
	byKey    map[string]k8sObject
	gateways []k8sObject
	mesh     string // the App Mesh name of the one Mesh, "" when the manifests have none
	meshK8s  string
}

func (c *k8sConv) report(o k8sObject, format string, args ...any) {
	c.im.report(o.where + ": " + fmt.Sprintf(format, args...))
}

// ref resolves a reference ({name, namespace}) to an object of kind, or an ARN, to an
// App Mesh name. The object need not be among the inputs: then the name is the
// controller's default for it, and the report says so.
func (c *k8sConv) ref(o k8sObject, path, kind string, refField, arnField string, m map[string]any) (string, bool) {
	if arn, _ := m[arnField].(string); arn != "" {
		delete(m, arnField)
		delete(m, refField)
		return nameFromARN(arn), true
	}
	r, ok := m[refField].(map[string]any)
	if !ok {
		c.im.fail("%s: %s: neither %s nor %s", o.where, path, refField, arnField)
		return "", false
	}
	delete(m, refField)
	name, _ := r["name"].(string)
	ns, _ := r["namespace"].(string)
	if ns == "" {
		ns = o.namespace
	}
	target := k8sObject{kind: kind, name: name, namespace: ns, spec: map[string]any{}}
	if t, ok := c.byKey[target.key()]; ok {
		return t.awsName(), true
	}
	n := target.awsName()
	c.report(o, "%s.%s: %s %s is not among the inputs; assumed named %q, the controller's default", path, refField, kind, nsName(ns, name), n)
	return n, true
}

// common drops the fields every controller spec has that App Mesh's do not.
func (c *k8sConv) common(o k8sObject, spec map[string]any) {
	delete(spec, "awsName")
	if mr, ok := spec["meshRef"].(map[string]any); ok {
		if name, _ := mr["name"].(string); c.meshK8s != "" && name != c.meshK8s {
			c.im.fail("%s: spec.meshRef names mesh %q, not the manifests' mesh %q", o.where, name, c.meshK8s)
		}
		delete(spec, "meshRef")
	}
	for _, f := range []string{"podSelector", "namespaceSelector", "gatewayRouteSelector"} {
		if _, ok := spec[f]; !ok {
			continue
		}
		delete(spec, f)
		if f == "podSelector" && o.kind == "VirtualNode" {
			c.report(o, "spec.podSelector not carried over: meshd is configured per node; run the sidecar of the pods it selected with meshd run --node %s", o.awsName())
		} else if f == "podSelector" && o.kind == "VirtualGateway" {
			c.report(o, "spec.podSelector not carried over: run the gateway's pods as meshd run --gateway %s (docs/gateway.md)", o.awsName())
		} else {
			c.report(o, "spec.%s not carried over: meshd selects no pods, namespaces or routes by label; every resource of the input is in the mesh", f)
		}
	}
	for k := range spec {
		if strings.HasSuffix(k, "ARN") && k != "virtualServiceARN" {
			delete(spec, k)
		}
	}
}

func (c *k8sConv) object(o k8sObject) {
	spec := deepCopy(o.spec).(map[string]any)
	c.common(o, spec)
	res := map[string]any{}
	if c.mesh != "" {
		res["meshName"] = c.mesh
	}
	kind := ""
	switch o.kind {
	case "Mesh":
		kind = "mesh"
		res["meshName"] = o.awsName()
		if sd, ok := spec["meshServiceDiscovery"]; ok {
			spec["serviceDiscovery"] = sd
			delete(spec, "meshServiceDiscovery")
		}
		if _, ok := spec["meshOwner"]; ok {
			delete(spec, "meshOwner")
			c.report(o, "spec.meshOwner not carried over: meshd has no shared meshes")
		}
	case "VirtualNode":
		kind = "virtualNode"
		res["virtualNodeName"] = o.awsName()
		if bs, ok := spec["backends"].([]any); ok {
			for i, b := range bs {
				bm, _ := b.(map[string]any)
				vs, _ := bm["virtualService"].(map[string]any)
				if vs == nil {
					continue
				}
				if n, ok := c.ref(o, fmt.Sprintf("spec.backends[%d].virtualService", i), "VirtualService", "virtualServiceRef", "virtualServiceARN", vs); ok {
					vs["virtualServiceName"] = n
				}
			}
		}
		if _, ok := spec["backendGroups"]; ok {
			delete(spec, "backendGroups")
			c.report(o, "spec.backendGroups not carried over: meshd has no backend groups; list their virtual services as backends")
		}
	case "VirtualService":
		kind = "virtualService"
		res["virtualServiceName"] = o.awsName()
		if p, ok := spec["provider"].(map[string]any); ok {
			if vn, ok := p["virtualNode"].(map[string]any); ok {
				if n, ok := c.ref(o, "spec.provider.virtualNode", "VirtualNode", "virtualNodeRef", "virtualNodeARN", vn); ok {
					vn["virtualNodeName"] = n
				}
			}
			if vr, ok := p["virtualRouter"].(map[string]any); ok {
				if n, ok := c.ref(o, "spec.provider.virtualRouter", "VirtualRouter", "virtualRouterRef", "virtualRouterARN", vr); ok {
					vr["virtualRouterName"] = n
				}
			}
		}
	case "VirtualRouter":
		kind = "virtualRouter"
		router := o.awsName()
		res["virtualRouterName"] = router
		routes, _ := spec["routes"].([]any)
		delete(spec, "routes")
		for i, r := range routes {
			rm, _ := r.(map[string]any)
			name, _ := rm["name"].(string)
			delete(rm, "name")
			for _, proto := range []string{"httpRoute", "http2Route", "grpcRoute", "tcpRoute"} {
				pr, _ := rm[proto].(map[string]any)
				act, _ := pr["action"].(map[string]any)
				wts, _ := act["weightedTargets"].([]any)
				for j, wt := range wts {
					wm, _ := wt.(map[string]any)
					if n, ok := c.ref(o, fmt.Sprintf("spec.routes[%d].%s.action.weightedTargets[%d]", i, proto, j), "VirtualNode", "virtualNodeRef", "virtualNodeARN", wm); ok {
						wm["virtualNode"] = n
					}
				}
			}
			route := map[string]any{"routeName": name, "virtualRouterName": router}
			if c.mesh != "" {
				route["meshName"] = c.mesh
			}
			where := fmt.Sprintf("%s spec.routes[%d] (%s)", o.where, i, name)
			route["spec"] = normalize(rm, specTypes["route"], fmt.Sprintf("spec.routes[%d]", i), func(p, msg string) {
				c.report(o, "%s %s", p, msg)
			})
			c.im.addResource(where, "route", route)
		}
	case "VirtualGateway":
		kind = "virtualGateway"
		res["virtualGatewayName"] = o.awsName()
	case "GatewayRoute":
		kind = "gatewayRoute"
		res["gatewayRouteName"] = o.awsName()
		if gr, ok := spec["virtualGatewayRef"].(map[string]any); ok {
			if n, ok := c.ref(o, "spec", "VirtualGateway", "virtualGatewayRef", "virtualGatewayARN", map[string]any{"virtualGatewayRef": gr}); ok {
				res["virtualGatewayName"] = n
			}
			delete(spec, "virtualGatewayRef")
		} else if len(c.gateways) == 1 {
			// The controller's webhook picks the gateway whose namespaceSelector (and
			// gatewayRouteSelector) matches; with one gateway that is it.
			res["virtualGatewayName"] = c.gateways[0].awsName()
			c.report(o, "no spec.virtualGatewayRef: assigned to the one virtual gateway, %s", c.gateways[0].where)
		} else {
			c.im.fail("%s: no spec.virtualGatewayRef and %d virtual gateways among the inputs: set virtualGatewayRef", o.where, len(c.gateways))
			return
		}
		for _, proto := range []string{"httpRoute", "http2Route", "grpcRoute"} {
			pr, _ := spec[proto].(map[string]any)
			act, _ := pr["action"].(map[string]any)
			tgt, _ := act["target"].(map[string]any)
			vs, _ := tgt["virtualService"].(map[string]any)
			if vs == nil {
				continue
			}
			if n, ok := c.ref(o, "spec."+proto+".action.target.virtualService", "VirtualService", "virtualServiceRef", "virtualServiceARN", vs); ok {
				vs["virtualServiceName"] = n
			}
		}
	default:
		c.report(o, "kind %s is not converted (BackendGroup: list its virtual services as backends)", o.kind)
		return
	}
	res["spec"] = normalize(spec, specTypes[kind], "spec", func(p, msg string) { c.report(o, "%s %s", p, msg) })
	c.im.addResource(o.where, kind, res)
}

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = deepCopy(e)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = deepCopy(e)
		}
		return l
	}
	return v
}
