package config

import (
	"errors"
	"strings"
	"testing"
)

// mtls gives backend-v1's listener the mutual TLS an authorization policy needs.
func mtls(c *Config) *Listener {
	l := listener0(c)
	l.TLS = &ListenerTLS{Mode: "STRICT",
		Certificate: &ListenerTLSCert{File: &TLSFileCertificate{CertificateChain: "/c/b.crt", PrivateKey: "/c/b.key"}},
		Validation:  &ListenerTLSValidation{Trust: &TLSValidationTrust{File: &TLSFileTrust{CertificateChain: "/c/ca.crt"}}}}
	return l
}

func allow(rules ...AuthorizationRule) *Authorization { return &Authorization{Allow: rules} }

// TestValidateAuthorization: every field of the authorization extension is checked,
// each problem reported at its path with its value; a policy on a listener without
// mutual TLS is refused (it would deny every request).
func TestValidateAuthorization(t *testing.T) {
	const ap = lp + ".authorization"
	bad := []struct {
		name  string
		mut   func(c *Config)
		path  string
		value string
		msg   string
	}{
		{"no tls", func(c *Config) { listener0(c).Authorization = allow(AuthorizationRule{Callers: []string{"frontend"}}) },
			ap, "", "has no tls"},
		{"tls disabled", func(c *Config) {
			l := mtls(c)
			l.TLS.Mode = "DISABLED"
			l.Authorization = allow(AuthorizationRule{Callers: []string{"frontend"}})
		}, ap, "", `tls.mode is "DISABLED"`},
		{"tls without validation", func(c *Config) {
			l := mtls(c)
			l.TLS.Validation = nil
			l.Authorization = allow(AuthorizationRule{Callers: []string{"frontend"}})
		}, ap, "", "no validation block"},
		{"no rules", func(c *Config) { mtls(c).Authorization = allow() }, ap + ".allow", "", "at least one rule"},
		{"no callers", func(c *Config) { mtls(c).Authorization = allow(AuthorizationRule{Methods: []string{"GET"}}) },
			ap + ".allow[0].callers", "", "at least one caller"},
		{"unknown node", func(c *Config) {
			mtls(c).Authorization = allow(AuthorizationRule{Callers: []string{"frontend", "fronted"}})
		},
			ap + ".allow[0].callers[1]", "fronted", "is not defined"},
		{"star with others", func(c *Config) { mtls(c).Authorization = allow(AuthorizationRule{Callers: []string{"frontend", "*"}}) },
			ap + ".allow[0].callers[1]", "*", "list it alone"},
		{"duplicate caller", func(c *Config) {
			mtls(c).Authorization = allow(AuthorizationRule{Callers: []string{"frontend", "frontend"}})
		}, ap + ".allow[0].callers[1]", "frontend", "listed twice"},
		{"upper-case trust domain", func(c *Config) {
			mtls(c).Authorization = allow(AuthorizationRule{Callers: []string{"spiffe://Shop/frontend"}})
		}, ap + ".allow[0].callers[0]", "spiffe://Shop/frontend", "trust domain"},
		{"not spiffe", func(c *Config) {
			mtls(c).Authorization = allow(AuthorizationRule{Callers: []string{"https://shop/frontend"}})
		}, ap + ".allow[0].callers[0]", "https://shop/frontend", "not a SPIFFE ID"},
		{"dot segment in id", func(c *Config) {
			mtls(c).Authorization = allow(AuthorizationRule{Callers: []string{"spiffe://shop/a/../b"}})
		}, ap + ".allow[0].callers[0]", "spiffe://shop/a/../b", "path segment"},
		{"mesh name is no trust domain", func(c *Config) {
			c.Mesh.MeshName = "Shop"
			mtls(c).Authorization = allow(AuthorizationRule{Callers: []string{"frontend"}})
		}, ap + ".allow[0].callers[0]", "frontend", "not a SPIFFE trust domain"},
		{"path prefix without slash", func(c *Config) {
			mtls(c).Authorization = allow(AuthorizationRule{Callers: []string{"*"}, PathPrefixes: []string{"api"}})
		}, ap + ".allow[0].pathPrefixes[0]", "api", "start with"},
		{"path prefix with dot segment", func(c *Config) {
			mtls(c).Authorization = allow(AuthorizationRule{Callers: []string{"*"}, PathPrefixes: []string{"/a/../admin"}})
		}, ap + ".allow[0].pathPrefixes[0]", "/a/../admin", "segments"},
		{"method", func(c *Config) {
			mtls(c).Authorization = allow(AuthorizationRule{Callers: []string{"*"}, Methods: []string{"get"}})
		}, ap + ".allow[0].methods[0]", "get", "one of"},
		{"unknown route", func(c *Config) {
			mtls(c).Authorization = allow(AuthorizationRule{Callers: []string{"*"}, Routes: []string{"splt"}})
		}, ap + ".allow[0].routes[0]", "splt", "no route is called"},
		{"unknown router", func(c *Config) {
			mtls(c).Authorization = allow(AuthorizationRule{Callers: []string{"*"}, Routes: []string{"other-router/split"}})
		}, ap + ".allow[0].routes[0]", "other-router/split", "has no route"},
		{"route that never leads here", func(c *Config) {
			mtls(c).Authorization = allow(AuthorizationRule{Callers: []string{"*"}, Routes: []string{"canary-header"}})
		}, ap + ".allow[0].routes[0]", "canary-header", "no weighted target on virtual node \"backend-v1\" port 9001"},
		{"ambiguous route name", func(c *Config) {
			c.VirtualRouters = append(c.VirtualRouters, VirtualRouter{VirtualRouterName: "r2", Spec: c.VirtualRouters[0].Spec})
			r := c.Routes[1]
			r.VirtualRouterName = "r2"
			c.Routes = append(c.Routes, r)
			mtls(c).Authorization = allow(AuthorizationRule{Callers: []string{"*"}, Routes: []string{"split"}})
		}, ap + ".allow[0].routes[0]", "split", "write virtualRouterName/routeName"},
		{"narrowing a tcp listener", func(c *Config) {
			l := mtls(c)
			l.PortMapping.Protocol = ProtoTCP
			c.Routes = nil
			c.VirtualServices[0].Spec.Provider = &VirtualServiceProvider{VirtualNode: &VirtualNodeRef{VirtualNodeName: "backend-v1"}}
			l.Authorization = allow(AuthorizationRule{Callers: []string{"*"}, Methods: []string{"GET"}})
		}, ap + ".allow[0].methods", "", "not \"tcp\""},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			c := shop(t)
			tt.mut(c)
			err := c.Validate()
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Validate = %v, want *Errors", err)
			}
			for _, fe := range errs.List {
				if fe.Path == tt.path && fe.Value == tt.value && strings.Contains(fe.Msg, tt.msg) {
					return
				}
			}
			t.Fatalf("no error at %s with value %q and %q; got:\n%v", tt.path, tt.value, tt.msg, err)
		})
	}

	good := []struct {
		name string
		mut  func(c *Config)
	}{
		{"node names and ids", func(c *Config) {
			mtls(c).Authorization = allow(AuthorizationRule{Callers: []string{"frontend", "spiffe://other.org/ns/a/sa/b", "spiffe://shop"}})
		}},
		{"any caller, narrowed", func(c *Config) {
			mtls(c).Authorization = allow(
				AuthorizationRule{Callers: []string{"*"}, PathPrefixes: []string{"/health"}, Methods: []string{"GET", "HEAD"}},
				AuthorizationRule{Callers: []string{"frontend"}, Routes: []string{"split", "backend-router/split"}})
		}},
		{"permissive with validation", func(c *Config) {
			l := mtls(c)
			l.TLS.Mode = "PERMISSIVE"
			l.Authorization = allow(AuthorizationRule{Callers: []string{"frontend"}})
		}},
		{"tcp listener, callers only", func(c *Config) {
			l := mtls(c)
			l.PortMapping.Protocol = ProtoTCP
			c.Routes = nil
			c.VirtualServices[0].Spec.Provider = &VirtualServiceProvider{VirtualNode: &VirtualNodeRef{VirtualNodeName: "backend-v1"}}
			l.Authorization = allow(AuthorizationRule{Callers: []string{"frontend"}})
		}},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			c := shop(t)
			tt.mut(c)
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

// TestParseAuthorization: the extension reads the same in YAML and JSON, strictly (an
// unknown field is an error with its path and a hint).
func TestParseAuthorization(t *testing.T) {
	yaml := `mesh: {meshName: shop}
virtualNodes:
  - virtualNodeName: b
    spec:
      listeners:
        - portMapping: {port: 9001, protocol: http}
          authorization:
            allow:
              - callers: [frontend, "spiffe://shop/gateway"]
                pathPrefixes: [/api/]
                methods: [GET]
`
	json := `{"mesh": {"meshName": "shop"}, "virtualNodes": [{"virtualNodeName": "b", "spec": {"listeners": [{
  "portMapping": {"port": 9001, "protocol": "http"},
  "authorization": {"allow": [{"callers": ["frontend", "spiffe://shop/gateway"], "pathPrefixes": ["/api/"], "methods": ["GET"]}]}}]}}]}`
	for name, doc := range map[string]string{"yaml": yaml, "json": json} {
		c, err := Parse([]byte(doc))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		a := c.VirtualNodes[0].Spec.Listeners[0].Authorization
		if a == nil || len(a.Allow) != 1 || strings.Join(a.Allow[0].Callers, ",") != "frontend,spiffe://shop/gateway" ||
			a.Allow[0].PathPrefixes[0] != "/api/" || a.Allow[0].Methods[0] != "GET" {
			t.Fatalf("%s: parsed %+v", name, a)
		}
	}
	_, err := Parse([]byte(strings.Replace(yaml, "- callers:", "- caller:", 1)))
	if err == nil || !strings.Contains(err.Error(), "virtualNodes[0].spec.listeners[0].authorization.allow[0].caller: unknown field; did you mean callers?") {
		t.Fatalf("unknown field: %v", err)
	}
}

func TestNormalPath(t *testing.T) {
	for p, want := range map[string]bool{
		"/": true, "/api/v1": true, "/a.b/c..d/.e": true, "/a/%41": true, "/a%2": true,
		"/a/../b": false, "/a/./b": false, "/..": false, "/a/..": false, "/a/%2e%2E/b": false,
		"/a%2Fb": false, "/a\\b": false, "/a%5cb": false, ".": false,
	} {
		if got := NormalPath(p); got != want {
			t.Errorf("NormalPath(%q) = %v, want %v", p, got, want)
		}
	}
}
