package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/meshd/meshd/config"
)

// runImport runs `meshd import args...` and returns the exit code, the mesh file it
// wrote (-o is added) and its report.
func runImport(t *testing.T, args ...string) (int, []byte, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "mesh.yaml")
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"import", "-o", out}, args...), &stdout, &stderr)
	data, _ := os.ReadFile(out)
	return code, data, stderr.String()
}

// validates runs `meshd validate` on an imported file, as a user would next.
func validates(t *testing.T, data []byte) *config.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "imported.yaml")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-c", p}, &out, &errb); code != 0 {
		t.Fatalf("meshd validate of the imported file: exit %d\n%s%s\nfile:\n%s", code, out.String(), errb.String(), data)
	}
	c, err := config.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantLines(t *testing.T, report string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(report, w) {
			t.Errorf("report lacks %q; report:\n%s", w, report)
		}
	}
}

// howtoTemplate is a template in the shape of aws-app-mesh-examples' howto-*
// CloudFormation (a mesh, Cloud Map discovery, nodes, a router with a weighted route, a
// service, a gateway with its route; names built with !Sub from parameters, resources
// referred to with !GetAtt), written for this test.
const howtoTemplate = `AWSTemplateFormatVersion: "2010-09-09"
Description: colorapp mesh
Parameters:
  EnvironmentName:
    Type: String
    Description: prefix of every name
  ServicesDomain:
    Type: String
    Default: colorapp.local
  ColorPort:
    Type: Number
    Default: 8080
  UseTLS:
    Type: String
    Default: "true"
    AllowedValues: ["true", "false"]
Mappings:
  Retry:
    Http:
      Max: 3
Conditions:
  TLSEnabled: !Equals [!Ref UseTLS, "true"]
Resources:
  Mesh:
    Type: AWS::AppMesh::Mesh
    Properties:
      MeshName: !Sub ${EnvironmentName}-mesh
      Spec:
        EgressFilter:
          Type: DROP_ALL
      Tags:
        - Key: team
          Value: colors
  ColorTellerWhiteServiceDiscovery:
    Type: AWS::ServiceDiscovery::Service
    Properties:
      Name: colorteller-white
      DnsConfig:
        NamespaceId: !ImportValue shared-namespace-id
        DnsRecords: [{Type: A, TTL: 300}]
  ColorTellerWhiteVirtualNode:
    Type: AWS::AppMesh::VirtualNode
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualNodeName: colorteller-white-vn
      Spec:
        Listeners:
          - PortMapping:
              Port: !Ref ColorPort
              Protocol: http
            HealthCheck:
              Protocol: http
              Path: /ping
              HealthyThreshold: 2
              UnhealthyThreshold: 3
              TimeoutMillis: 2000
              IntervalMillis: 5000
            TLS: !If
              - TLSEnabled
              - Mode: STRICT
                Certificate:
                  ACM:
                    CertificateArn: arn:aws:acm:eu-west-1:111122223333:certificate/7e3c1ab2-white
              - !Ref AWS::NoValue
        ServiceDiscovery:
          AWSCloudMap:
            NamespaceName: !Ref ServicesDomain
            ServiceName: !GetAtt ColorTellerWhiteServiceDiscovery.Name
        Logging:
          AccessLog:
            File:
              Path: /dev/stdout
  ColorTellerBlackVirtualNode:
    Type: AWS::AppMesh::VirtualNode
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualNodeName: colorteller-black-vn
      Spec:
        Listeners:
          - PortMapping: {Port: !Ref ColorPort, Protocol: http}
        ServiceDiscovery:
          DNS:
            Hostname: !Sub "colorteller-black.${ServicesDomain}"
  ColorGatewayVirtualNode:
    Type: AWS::AppMesh::VirtualNode
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualNodeName: colorgateway-vn
      Spec:
        Listeners:
          - PortMapping: {Port: 9080, Protocol: http}
        ServiceDiscovery:
          DNS:
            Hostname: !Join [".", [colorgateway, !Ref ServicesDomain]]
        Backends:
          - VirtualService:
              VirtualServiceName: !GetAtt ColorTellerVirtualService.VirtualServiceName
        BackendDefaults:
          ClientPolicy:
            TLS:
              Validation:
                Trust:
                  ACM:
                    CertificateAuthorityArns:
                      - arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/ca-1
  ColorTellerVirtualRouter:
    Type: AWS::AppMesh::VirtualRouter
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualRouterName: colorteller-vr
      Spec:
        Listeners:
          - PortMapping: {Port: !Ref ColorPort, Protocol: http}
  ColorTellerRoute:
    Type: AWS::AppMesh::Route
    DependsOn: [ColorTellerVirtualRouter]
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualRouterName: !GetAtt ColorTellerVirtualRouter.VirtualRouterName
      RouteName: colorteller-route
      Spec:
        Priority: 10
        HttpRoute:
          Match:
            Prefix: /
            Headers:
              - Name: color
                Match: {Exact: black}
          Action:
            WeightedTargets:
              - VirtualNode: !GetAtt ColorTellerWhiteVirtualNode.VirtualNodeName
                Weight: 3
              - VirtualNode: !GetAtt ColorTellerBlackVirtualNode.VirtualNodeName
                Weight: 1
          RetryPolicy:
            MaxRetries: !FindInMap [Retry, Http, Max]
            PerRetryTimeout: {Unit: ms, Value: 2000}
            HttpRetryEvents: [server-error, gateway-error]
            TcpRetryEvents: [connection-error]
          Timeout:
            PerRequest: {Unit: s, Value: 15}
  ColorTellerVirtualService:
    Type: AWS::AppMesh::VirtualService
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualServiceName: !Sub colorteller.${ServicesDomain}
      Spec:
        Provider:
          VirtualRouter:
            VirtualRouterName: !GetAtt ColorTellerVirtualRouter.VirtualRouterName
  VirtualGateway:
    Type: AWS::AppMesh::VirtualGateway
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualGatewayName: !Sub ${EnvironmentName}-gateway
      Spec:
        Listeners:
          - PortMapping: {Port: 9080, Protocol: http}
  GatewayRoute:
    Type: AWS::AppMesh::GatewayRoute
    Properties:
      MeshName: !GetAtt Mesh.MeshName
      VirtualGatewayName: !GetAtt VirtualGateway.VirtualGatewayName
      GatewayRouteName: colorteller-gateway-route
      Spec:
        HttpRoute:
          Match:
            Prefix: /color
          Action:
            Target:
              VirtualService:
                VirtualServiceName: !GetAtt ColorTellerVirtualService.VirtualServiceName
  TaskRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument: {}
Outputs:
  MeshName:
    Value: !GetAtt Mesh.MeshName
`

func TestImportCloudFormation(t *testing.T) {
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(tmpl, []byte(howtoTemplate), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("a parameter without Default", func(t *testing.T) {
		code, _, report := runImport(t, tmpl)
		if code != 1 {
			t.Fatalf("exit %d, want 1; report:\n%s", code, report)
		}
		wantLines(t, report, "parameter EnvironmentName has no Default; pass --parameter EnvironmentName=VALUE")
	})

	code, data, report := runImport(t, "--parameter", "EnvironmentName=prod", tmpl)
	if code != 0 {
		t.Fatalf("exit %d; report:\n%s\nfile:\n%s", code, report, data)
	}
	c := validates(t, data)
	if c.Mesh.MeshName != "prod-mesh" || c.Mesh.Spec.EgressFilter == nil || c.Mesh.Spec.EgressFilter.Type != "DROP_ALL" {
		t.Errorf("mesh = %+v", c.Mesh)
	}
	white := c.VirtualNode("colorteller-white-vn")
	if white == nil || white.Spec.Listeners[0].PortMapping.Port != 8080 ||
		white.Spec.ServiceDiscovery.AWSCloudMap == nil || white.Spec.ServiceDiscovery.AWSCloudMap.ServiceName != "colorteller-white" ||
		white.Spec.ServiceDiscovery.AWSCloudMap.NamespaceName != "colorapp.local" {
		t.Fatalf("white node = %+v", white)
	}
	cert := white.Spec.Listeners[0].TLS.Certificate
	if cert.ACM != nil || cert.File == nil || cert.File.CertificateChain != "/etc/meshd/tls/acm-7e3c1ab2-white/cert.pem" ||
		cert.File.PrivateKey != "/etc/meshd/tls/acm-7e3c1ab2-white/key.pem" {
		t.Errorf("white listener certificate = %+v", cert)
	}
	if hc := white.Spec.Listeners[0].HealthCheck; hc == nil || hc.UnhealthyThreshold != 3 || hc.Path != "/ping" {
		t.Errorf("health check = %+v", hc)
	}
	gw := c.VirtualNode("colorgateway-vn")
	if gw == nil || gw.Spec.ServiceDiscovery.DNS.Hostname != "colorgateway.colorapp.local" ||
		gw.Spec.Backends[0].VirtualService.VirtualServiceName != "colorteller.colorapp.local" ||
		gw.Spec.BackendDefaults.ClientPolicy.TLS.Validation.Trust.File.CertificateChain != "/etc/meshd/tls/acm-pca-ca-1.pem" {
		t.Errorf("gateway node = %+v", gw)
	}
	if len(c.Routes) != 1 {
		t.Fatalf("routes = %+v", c.Routes)
	}
	r := c.Routes[0]
	hr := r.Spec.HTTPRoute
	if r.VirtualRouterName != "colorteller-vr" || r.Spec.Priority == nil || *r.Spec.Priority != 10 || hr.RetryPolicy.MaxRetries != 3 ||
		len(hr.Action.WeightedTargets) != 2 || hr.Action.WeightedTargets[1].VirtualNode != "colorteller-black-vn" ||
		hr.Match.Headers[0].Match.Exact != "black" || hr.Timeout.PerRequest.Value != 15 {
		t.Errorf("route = %+v", r)
	}
	if len(c.GatewayRoutes) != 1 || c.GatewayRoutes[0].VirtualGatewayName != "prod-gateway" ||
		c.GatewayRoutes[0].Spec.HTTPRoute.Action.Target.VirtualService.VirtualServiceName != "colorteller.colorapp.local" {
		t.Errorf("gateway routes = %+v", c.GatewayRoutes)
	}
	wantLines(t, report,
		"Mesh (AWS::AppMesh::Mesh): Tags not carried over",
		"resources that are not App Mesh's left out: AWS::IAM::Role ×1, AWS::ServiceDiscovery::Service ×1",
		"ACM certificate arn:aws:acm:eu-west-1:111122223333:certificate/7e3c1ab2-white is now a file source",
		"to /etc/meshd/tls/acm-7e3c1ab2-white/cert.pem (chain) and /etc/meshd/tls/acm-7e3c1ab2-white/key.pem",
		"ACM Private CA trust arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/ca-1 is now a file source",
	)

	t.Run("condition false drops the TLS block", func(t *testing.T) {
		code, data, report := runImport(t, "--parameter", "EnvironmentName=prod", "--parameter", "UseTLS=false", tmpl)
		if code != 0 {
			t.Fatalf("exit %d; report:\n%s", code, report)
		}
		c := validates(t, data)
		if l := c.VirtualNode("colorteller-white-vn").Spec.Listeners[0]; l.TLS != nil {
			t.Errorf("listener TLS = %+v, want none (Fn::If to AWS::NoValue)", l.TLS)
		}
	})
}

// TestImportCloudFormationJSON: the long forms (Ref, Fn::Sub with variables, Fn::Join,
// Fn::Select/Fn::Split) in a JSON template, and what cannot be resolved.
func TestImportCloudFormationJSON(t *testing.T) {
	tmpl := `{
  "Parameters": {"Mesh": {"Type": "String", "Default": "json-mesh"}, "Ports": {"Type": "CommaDelimitedList", "Default": "8080,9090"}},
  "Resources": {
    "M": {"Type": "AWS::AppMesh::Mesh", "Properties": {"MeshName": {"Ref": "Mesh"}}},
    "Node": {"Type": "AWS::AppMesh::VirtualNode", "Properties": {
      "MeshName": {"Fn::GetAtt": ["M", "MeshName"]},
      "VirtualNodeName": {"Fn::Sub": ["${Name}-vn", {"Name": {"Fn::Select": [0, {"Fn::Split": ["-", "api-v1"]}]}}]},
      "Spec": {
        "Listeners": [{"PortMapping": {"Port": {"Fn::Select": [1, {"Ref": "Ports"}]}, "Protocol": "grpc"}}],
        "ServiceDiscovery": {"DNS": {"Hostname": {"Fn::Join": ["", ["api.", {"Ref": "AWS::Region"}, ".internal"]]}}}
      }}},
    "Other": {"Type": "AWS::AppMesh::VirtualNode", "Properties": {
      "MeshName": {"Fn::GetAtt": ["M", "MeshName"]},
      "VirtualNodeName": "other",
      "Spec": {"Listeners": [{"PortMapping": {"Port": 8080, "Protocol": "http"}}],
        "ServiceDiscovery": {"DNS": {"Hostname": "other.internal", "ResponseType": "LOADBALANCER", "Bogus": 1}}}}}
  }
}`
	p := filepath.Join(t.TempDir(), "template.json")
	if err := os.WriteFile(p, []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	code, data, report := runImport(t, p)
	if code != 1 {
		t.Fatalf("exit %d, want 1 (the hostname cannot be resolved); report:\n%s", code, report)
	}
	if !strings.Contains(string(data), "virtualNodeName: api-vn") {
		t.Errorf("the file that does not validate was not written for fixing by hand:\n%s", data)
	}
	wantLines(t, report,
		"Node (AWS::AppMesh::VirtualNode): Spec.ServiceDiscovery.DNS.Hostname not carried over: the pseudo parameter AWS::Region is known only in a deployed stack; pass --parameter AWS::Region=VALUE",
		"Other (AWS::AppMesh::VirtualNode): Spec.ServiceDiscovery.DNS.Bogus not carried over: no such field",
		"the result does not validate",
		"virtualNodes[0].spec.serviceDiscovery.dns.hostname: is required",
	)
	code, data, report = runImport(t, "--parameter", "AWS::Region=eu-west-1", p)
	if code != 0 {
		t.Fatalf("exit %d; report:\n%s", code, report)
	}
	c := validates(t, data)
	n := c.VirtualNode("api-vn")
	if c.Mesh.MeshName != "json-mesh" || n == nil || n.Spec.Listeners[0].PortMapping.Port != 9090 ||
		n.Spec.ServiceDiscovery.DNS.Hostname != "api.eu-west-1.internal" {
		t.Fatalf("config = %+v", c)
	}
}

// The EKS walkthroughs' manifests (howto-k8s-*), in their shapes, written for this test:
// a Mesh selecting namespaces, nodes selecting pods, a service with awsName and one
// without, a router with routes, a gateway and a gateway route.
const controllerManifests = `apiVersion: appmesh.k8s.aws/v1beta2
kind: Mesh
metadata:
  name: howto-k8s
spec:
  namespaceSelector:
    matchLabels:
      mesh: howto-k8s
  egressFilter:
    type: ALLOW_ALL
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata:
  name: front
  namespace: howto-k8s
spec:
  podSelector:
    matchLabels:
      app: front
  listeners:
    - portMapping:
        port: 8080
        protocol: http
      healthCheck:
        protocol: http
        path: /ping
        healthyThreshold: 2
        unhealthyThreshold: 2
        timeoutMillis: 2000
        intervalMillis: 5000
  backends:
    - virtualService:
        virtualServiceRef:
          name: color
  backendDefaults:
    clientPolicy:
      tls:
        validation:
          trust:
            acm:
              certificateAuthorityARNs:
                - arn:aws:acm-pca:us-west-2:111122223333:certificate-authority/pca-9
  serviceDiscovery:
    dns:
      hostname: front.howto-k8s.svc.cluster.local
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata:
  name: blue
  namespace: howto-k8s
spec:
  podSelector:
    matchLabels:
      app: color
      version: blue
  listeners:
    - portMapping:
        port: 8080
        protocol: http
      tls:
        mode: STRICT
        certificate:
          acm:
            certificateARN: arn:aws:acm:us-west-2:111122223333:certificate/blue-cert
  serviceDiscovery:
    dns:
      hostname: color-blue.howto-k8s.svc.cluster.local
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata:
  name: red
  namespace: howto-k8s
spec:
  awsName: red-node
  podSelector:
    matchLabels:
      version: red
  listeners:
    - portMapping:
        port: 8080
        protocol: http
  serviceDiscovery:
    awsCloudMap:
      namespaceName: howto-k8s.pvt.aws.local
      serviceName: color-red
`

const controllerManifests2 = `apiVersion: v1
kind: Namespace
metadata:
  name: howto-k8s
  labels:
    mesh: howto-k8s
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata:
  name: color
  namespace: howto-k8s
spec:
  awsName: color.howto-k8s.svc.cluster.local
  provider:
    virtualRouter:
      virtualRouterRef:
        name: color
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualService
metadata:
  name: front
  namespace: howto-k8s
spec:
  provider:
    virtualNode:
      virtualNodeRef:
        name: front
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualRouter
metadata:
  namespace: howto-k8s
  name: color
spec:
  listeners:
    - portMapping:
        port: 8080
        protocol: http
  routes:
    - name: color-route-blue
      priority: 10
      httpRoute:
        match:
          prefix: /
          headers:
            - name: color_header
              match:
                exact: blue
        action:
          weightedTargets:
            - virtualNodeRef:
                name: blue
              weight: 1
    - name: color-route-default
      priority: 20
      httpRoute:
        match:
          prefix: /
        action:
          weightedTargets:
            - virtualNodeRef:
                name: blue
              weight: 1
            - virtualNodeRef:
                name: red
              weight: 1
        retryPolicy:
          maxRetries: 2
          perRetryTimeout:
            unit: ms
            value: 2000
          httpRetryEvents:
            - server-error
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualGateway
metadata:
  name: ingress-gw
  namespace: howto-k8s
spec:
  namespaceSelector:
    matchLabels:
      gateway: ingress-gw
  podSelector:
    matchLabels:
      app: ingress-gw
  listeners:
    - portMapping:
        port: 8088
        protocol: http
---
apiVersion: appmesh.k8s.aws/v1beta2
kind: GatewayRoute
metadata:
  name: gateway-route-front
  namespace: howto-k8s
spec:
  httpRoute:
    match:
      prefix: "/"
    action:
      target:
        virtualService:
          virtualServiceRef:
            name: front
`

func TestImportControllerManifests(t *testing.T) {
	dir := t.TempDir()
	for name, s := range map[string]string{"mesh.yaml": controllerManifests, "routing.yaml": controllerManifests2} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, data, report := runImport(t, dir)
	if code != 0 {
		t.Fatalf("exit %d; report:\n%s\nfile:\n%s", code, report, data)
	}
	c := validates(t, data)
	if c.Mesh.MeshName != "howto-k8s" || c.Mesh.Spec.EgressFilter.Type != "ALLOW_ALL" {
		t.Errorf("mesh = %+v", c.Mesh)
	}
	// Names as the controller's webhook gave them: <name>_<namespace> for nodes and
	// gateways, <name>.<namespace> for services, awsName when set.
	for _, n := range []string{"front_howto-k8s", "blue_howto-k8s", "red-node"} {
		if c.VirtualNode(n) == nil {
			t.Errorf("no virtual node %q", n)
		}
	}
	front := c.VirtualNode("front_howto-k8s")
	if front != nil && front.Spec.Backends[0].VirtualService.VirtualServiceName != "color.howto-k8s.svc.cluster.local" {
		t.Errorf("front's backend = %+v", front.Spec.Backends[0].VirtualService)
	}
	if vs := c.VirtualService("front.howto-k8s"); vs == nil || vs.Spec.Provider.VirtualNode.VirtualNodeName != "front_howto-k8s" {
		t.Errorf("service front.howto-k8s = %+v", vs)
	}
	if vs := c.VirtualService("color.howto-k8s.svc.cluster.local"); vs == nil || vs.Spec.Provider.VirtualRouter.VirtualRouterName != "color_howto-k8s" {
		t.Errorf("service color = %+v", vs)
	}
	if len(c.Routes) != 2 || c.Routes[0].RouteName != "color-route-blue" || c.Routes[0].VirtualRouterName != "color_howto-k8s" ||
		c.Routes[1].Spec.HTTPRoute.Action.WeightedTargets[1].VirtualNode != "red-node" || c.Routes[1].Spec.Priority == nil || *c.Routes[1].Spec.Priority != 20 {
		t.Errorf("routes = %+v", c.Routes)
	}
	if len(c.GatewayRoutes) != 1 || c.GatewayRoutes[0].GatewayRouteName != "gateway-route-front_howto-k8s" ||
		c.GatewayRoutes[0].VirtualGatewayName != "ingress-gw_howto-k8s" ||
		c.GatewayRoutes[0].Spec.HTTPRoute.Action.Target.VirtualService.VirtualServiceName != "front.howto-k8s" {
		t.Errorf("gateway routes = %+v", c.GatewayRoutes)
	}
	blue := c.VirtualNode("blue_howto-k8s")
	if blue != nil && blue.Spec.Listeners[0].TLS.Certificate.File.CertificateChain != "/etc/meshd/tls/acm-blue-cert/cert.pem" {
		t.Errorf("blue's certificate = %+v", blue.Spec.Listeners[0].TLS.Certificate)
	}
	wantLines(t, report,
		"VirtualNode howto-k8s/front: spec.podSelector not carried over: meshd is configured per node; run the sidecar of the pods it selected with meshd run --node front_howto-k8s",
		"VirtualGateway howto-k8s/ingress-gw: spec.podSelector not carried over: run the gateway's pods as meshd run --gateway ingress-gw_howto-k8s",
		"Mesh howto-k8s: spec.namespaceSelector not carried over",
		"routing.yaml document 1: v1 Namespace is not an App Mesh object; left out",
		"GatewayRoute howto-k8s/gateway-route-front: no spec.virtualGatewayRef: assigned to the one virtual gateway",
		"ACM certificate arn:aws:acm:us-west-2:111122223333:certificate/blue-cert is now a file source",
		"ACM Private CA trust arn:aws:acm-pca:us-west-2:111122223333:certificate-authority/pca-9 is now a file source: write each CA's certificate",
	)

	t.Run("a reference outside the inputs", func(t *testing.T) {
		code, data, report := runImport(t, filepath.Join(dir, "mesh.yaml"))
		if code != 1 {
			t.Fatalf("exit %d, want 1 (front's backend service is not defined); report:\n%s", code, report)
		}
		wantLines(t, report,
			`spec.backends[0].virtualService.virtualServiceRef: VirtualService howto-k8s/color is not among the inputs; assumed named "color.howto-k8s", the controller's default`,
			"the result does not validate")
		if len(data) == 0 {
			t.Error("the file that does not validate was not written for fixing by hand")
		}
	})
}

// TestImportKubectlList: what `kubectl get ... -o yaml` prints: a List of the objects
// as the controller's webhook left them (awsName and meshRef filled in, status set).
func TestImportKubectlList(t *testing.T) {
	list := `apiVersion: v1
kind: List
items:
  - apiVersion: appmesh.k8s.aws/v1beta2
    kind: Mesh
    metadata: {name: shop, uid: 1c5e}
    spec: {awsName: shop-mesh, namespaceSelector: {matchLabels: {mesh: shop}}}
    status: {meshARN: "arn:aws:appmesh:eu-west-1:111122223333:mesh/shop-mesh", observedGeneration: 1}
  - apiVersion: appmesh.k8s.aws/v1beta2
    kind: VirtualNode
    metadata: {name: cart, namespace: shop, managedFields: [{manager: kubectl}]}
    spec:
      awsName: cart_shop
      meshRef: {name: shop, uid: 1c5e}
      podSelector: {matchLabels: {app: cart}}
      listeners: [{portMapping: {port: 8080, protocol: http}}]
      serviceDiscovery: {dns: {hostname: cart.shop.svc.cluster.local}}
    status: {virtualNodeARN: "arn:aws:appmesh:eu-west-1:111122223333:mesh/shop-mesh/virtualNode/cart_shop"}
`
	p := filepath.Join(t.TempDir(), "appmesh.yaml")
	if err := os.WriteFile(p, []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}
	code, data, report := runImport(t, p)
	if code != 0 {
		t.Fatalf("exit %d; report:\n%s", code, report)
	}
	c := validates(t, data)
	if c.Mesh.MeshName != "shop-mesh" || c.VirtualNode("cart_shop") == nil {
		t.Fatalf("config = %+v", c)
	}

	t.Run("meshRef to another mesh", func(t *testing.T) {
		other := strings.Replace(list, "meshRef: {name: shop,", "meshRef: {name: books,", 1)
		if err := os.WriteFile(p, []byte(other), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, report := runImport(t, p)
		if code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		wantLines(t, report, `VirtualNode shop/cart: spec.meshRef names mesh "books", not the manifests' mesh "shop"`)
	})
	t.Run("no Mesh: --mesh names it", func(t *testing.T) {
		node := "apiVersion: appmesh.k8s.aws/v1beta2\nkind: VirtualNode\nmetadata: {name: cart, namespace: shop}\n" +
			"spec: {listeners: [{portMapping: {port: 8080, protocol: http}}], serviceDiscovery: {dns: {hostname: cart.local}}}\n"
		if err := os.WriteFile(p, []byte(node), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, report := runImport(t, p)
		if code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		wantLines(t, report, "no mesh among the inputs and none named by a resource: pass --mesh NAME")
		code, data, report := runImport(t, "--mesh", "shop", p)
		if code != 0 {
			t.Fatalf("exit %d; report:\n%s", code, report)
		}
		if c := validates(t, data); c.Mesh.MeshName != "shop" || c.VirtualNode("cart_shop") == nil {
			t.Fatalf("config = %+v", c)
		}
	})
	t.Run("two meshes", func(t *testing.T) {
		two := list + `  - apiVersion: appmesh.k8s.aws/v1beta2
    kind: Mesh
    metadata: {name: books}
    spec: {}
`
		if err := os.WriteFile(p, []byte(two), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, report := runImport(t, p)
		if code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		wantLines(t, report, "manifests define 2 meshes", "import one mesh at a time")
	})
}

// TestImportDescribeDirectory: a directory of describe-* outputs (one per file, a >>
// stream, a YAML multi-document) imports into one file; a resource in two files is an
// error naming both.
func TestImportDescribeDirectory(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"mesh.json": `{"mesh": {"meshName": "shop", "spec": {}, "metadata": {"version": 1}, "status": {"status": "ACTIVE"}}}`,
		"nodes.json": `{"virtualNode": {"meshName": "shop", "virtualNodeName": "cart", "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}], "serviceDiscovery": {"dns": {"hostname": "cart.local"}}}, "metadata": {}, "status": {}}}
{"virtualNode": {"meshName": "shop", "virtualNodeName": "web", "spec": {"backends": [{"virtualService": {"virtualServiceName": "cart.local"}}]}, "metadata": {}, "status": {}}}
`,
		"service.yaml": "virtualService:\n  meshName: shop\n  virtualServiceName: cart.local\n  spec: {provider: {virtualNode: {virtualNodeName: cart}}}\n---\n" +
			"virtualService:\n  meshName: shop\n  virtualServiceName: web.local\n  spec: {}\n",
	}
	for name, s := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, data, report := runImport(t, dir)
	if code != 0 {
		t.Fatalf("exit %d; report:\n%s", code, report)
	}
	c := validates(t, data)
	if c.Mesh.MeshName != "shop" || len(c.VirtualNodes) != 2 || len(c.VirtualServices) != 2 {
		t.Fatalf("config = %+v", c)
	}
	if strings.Contains(string(data), "metadata") || strings.Contains(string(data), "status") {
		t.Errorf("metadata or status carried into the mesh file:\n%s", data)
	}

	dup := filepath.Join(t.TempDir(), "again.json")
	if err := os.WriteFile(dup, []byte(`{"virtualNode": {"meshName": "shop", "virtualNodeName": "cart", "spec": {}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, report = runImport(t, dir, dup)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	wantLines(t, report, dup+`: virtual node "cart" is defined twice: here and in `+filepath.Join(dir, "nodes.json"))

	other := filepath.Join(t.TempDir(), "other.json")
	if err := os.WriteFile(other, []byte(`{"virtualNode": {"meshName": "books", "virtualNodeName": "x", "spec": {}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, report = runImport(t, dir, other)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	wantLines(t, report, other+`: mesh "books" differs from mesh "shop" of `+filepath.Join(dir, "mesh.json"))
}

func TestImportUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"import"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "name at least one INPUT") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"import", "--parameter", "novalue", "x"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `want KEY=VALUE, not "novalue"`) {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"import", filepath.Join(t.TempDir(), "missing.yaml")}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "no such file") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	errb.Reset()
	run([]string{"help"}, &out, &errb)
	if !strings.Contains(out.String(), "meshd import") {
		t.Errorf("usage lacks meshd import:\n%s", out.String())
	}
}

// TestValidateDirectory: meshd validate -c DIR merges the directory, and names both
// files of a resource defined twice.
func TestValidateDirectory(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"a.json": `{"virtualNode": {"meshName": "shop", "virtualNodeName": "cart", "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}], "serviceDiscovery": {"dns": {"hostname": "cart.local"}}}}}` + "\n" +
			`{"virtualService": {"meshName": "shop", "virtualServiceName": "cart.local", "spec": {"provider": {"virtualNode": {"virtualNodeName": "cart"}}}}}`,
		"b.yaml": "mesh: {meshName: shop}\n",
	}
	for name, s := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-c", dir, "--node", "cart"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s%s", code, out.String(), errb.String())
	}
	if err := os.WriteFile(filepath.Join(dir, "c.yaml"), []byte("virtualNode: {meshName: shop, virtualNodeName: cart, spec: {}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run([]string{"validate", "-c", dir}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1: %s", code, out.String())
	}
	want := dir + `: c.yaml: virtualNode.virtualNodeName: virtual node "cart" is defined twice: here and in a.json, document 1, virtualNode, line 1 (line 1)`
	if !strings.Contains(out.String(), want) {
		t.Fatalf("validate output:\n%s\nwant %s", out.String(), want)
	}
}

// ---------------------------------------------------------------------------
// The App Mesh corpus through import

type corpusEntry struct{ file, kind, raw string }

func corpus(t *testing.T) []corpusEntry {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "..", "shared", "appmesh-corpus")
	f, err := os.Open(filepath.Join(dir, "MANIFEST.tsv"))
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("App Mesh corpus not found at %s, and CI is set", dir)
		}
		t.Skipf("App Mesh corpus not found at %s", dir)
	}
	defer f.Close()
	var out []corpusEntry
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) < 2 || specTypes[cols[1]] == nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, cols[0]))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, corpusEntry{cols[0], cols[1], string(raw)})
	}
	if len(out) < 100 {
		t.Fatalf("only %d corpus resources; the manifest lists 121", len(out))
	}
	return out
}

// cfnName is how CloudFormation spells a spec field: PascalCase, with the acronyms its
// App Mesh schema writes in capitals.
func cfnName(k string) string {
	switch k {
	case "awsCloudMap":
		return "AWSCloudMap"
	case "dns", "tls", "acm", "sds", "grpc", "http", "http2", "tcp":
		return strings.ToUpper(k)
	}
	return strings.ToUpper(k[:1]) + k[1:]
}

func toCFN(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := map[string]any{}
		for k, e := range x {
			m[cfnName(k)] = toCFN(e)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = toCFN(e)
		}
	}
	return v
}

var cfnTypes = map[string]string{
	"mesh": "Mesh", "virtualNode": "VirtualNode", "virtualService": "VirtualService", "virtualRouter": "VirtualRouter",
	"route": "Route", "virtualGateway": "VirtualGateway", "gatewayRoute": "GatewayRoute",
}

// TestImportCorpus imports every corpus resource twice, as a describe-* output and as
// a CloudFormation resource (its spec in CloudFormation's PascalCase), and checks both
// arrive as exactly what meshd reads from the describe-* output (which
// config.TestCorpusDescribeForm validates), ACM sources rewritten to files.
func TestImportCorpus(t *testing.T) {
	n := 0
	for _, e := range corpus(t) {
		t.Run(e.file, func(t *testing.T) {
			var res map[string]any
			if err := json.Unmarshal([]byte(e.raw), &res); err != nil {
				t.Fatal(err)
			}
			// A route names its router, a gateway route its gateway; CloudFormation
			// requires them (the corpus' templates left some to the CLI's command line).
			if e.kind == "route" && res["virtualRouterName"] == nil {
				res["virtualRouterName"] = "corpus-router"
			}
			if e.kind == "gatewayRoute" && res["virtualGatewayName"] == nil {
				res["virtualGatewayName"] = "corpus-gateway"
			}
			describe := map[string]any{e.kind: res}
			dj, _ := json.Marshal(describe)
			want, err := config.Parse(dj)
			if err != nil {
				t.Fatal(err)
			}
			(&importer{cfg: *want, tlsDir: "/etc/meshd/tls", report: func(string) {}}).rewriteACMInto(want)

			dir := t.TempDir()
			dp := filepath.Join(dir, "describe.json")
			if err := os.WriteFile(dp, dj, 0o644); err != nil {
				t.Fatal(err)
			}
			props := map[string]any{}
			for k, v := range res {
				if k == "spec" {
					props["Spec"] = toCFN(v)
				} else {
					props[cfnName(k)] = v
				}
			}
			if _, ok := props["MeshName"]; !ok {
				props["MeshName"] = "corpus"
			}
			tmpl, _ := json.Marshal(map[string]any{"Resources": map[string]any{
				"R": map[string]any{"Type": "AWS::AppMesh::" + cfnTypes[e.kind], "Properties": props},
			}})
			tp := filepath.Join(dir, "template.json")
			if err := os.WriteFile(tp, tmpl, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, in := range []string{dp, tp} {
				// A lone resource refers to others the corpus file does not hold, so the
				// result need not validate here; it must equal the describe form.
				_, data, report := runImport(t, "--mesh", meshOf(want), in)
				got, err := config.Parse(data)
				if err != nil {
					t.Fatalf("%s: the imported file does not parse: %v\n%s\nreport:\n%s", in, err, data, report)
				}
				if strings.Contains(report, "not carried over") {
					t.Errorf("%s: import dropped fields:\n%s", in, report)
				}
				if !sameResources(got, want, in == tp) {
					gj, _ := json.MarshalIndent(got, "", " ")
					wj, _ := json.MarshalIndent(want, "", " ")
					t.Fatalf("%s imported as\n%s\nwant\n%s\nreport:\n%s", in, gj, wj, report)
				}
			}
			n++
		})
	}
	t.Logf("%d corpus resources imported", n)
}

func meshOf(c *config.Config) string {
	if c.Mesh.MeshName != "" {
		return c.Mesh.MeshName
	}
	return "corpus"
}

// sameResources compares the resources' names and specs (not the bookkeeping around
// them). From CloudFormation a resource without a name is named after its logical ID.
func sameResources(got, want *config.Config, fromCFN bool) bool {
	strip := func(c *config.Config) config.Config {
		out := *c
		out.Mesh.ResourceMeta = config.ResourceMeta{}
		out.Mesh.MeshName = ""
		clear := func(m *config.ResourceMeta) { *m = config.ResourceMeta{} }
		out.VirtualNodes = append([]config.VirtualNode(nil), c.VirtualNodes...)
		for i := range out.VirtualNodes {
			clear(&out.VirtualNodes[i].ResourceMeta)
			if fromCFN && out.VirtualNodes[i].VirtualNodeName == "R" {
				out.VirtualNodes[i].VirtualNodeName = ""
			}
		}
		out.VirtualServices = append([]config.VirtualService(nil), c.VirtualServices...)
		for i := range out.VirtualServices {
			clear(&out.VirtualServices[i].ResourceMeta)
			if fromCFN && out.VirtualServices[i].VirtualServiceName == "R" {
				out.VirtualServices[i].VirtualServiceName = ""
			}
		}
		out.VirtualRouters = append([]config.VirtualRouter(nil), c.VirtualRouters...)
		for i := range out.VirtualRouters {
			clear(&out.VirtualRouters[i].ResourceMeta)
			if fromCFN && out.VirtualRouters[i].VirtualRouterName == "R" {
				out.VirtualRouters[i].VirtualRouterName = ""
			}
		}
		out.Routes = append([]config.Route(nil), c.Routes...)
		for i := range out.Routes {
			clear(&out.Routes[i].ResourceMeta)
			if fromCFN && out.Routes[i].RouteName == "R" {
				out.Routes[i].RouteName = ""
			}
		}
		out.VirtualGateways = append([]config.VirtualGateway(nil), c.VirtualGateways...)
		for i := range out.VirtualGateways {
			clear(&out.VirtualGateways[i].ResourceMeta)
			if fromCFN && out.VirtualGateways[i].VirtualGatewayName == "R" {
				out.VirtualGateways[i].VirtualGatewayName = ""
			}
		}
		out.GatewayRoutes = append([]config.GatewayRoute(nil), c.GatewayRoutes...)
		for i := range out.GatewayRoutes {
			clear(&out.GatewayRoutes[i].ResourceMeta)
			if fromCFN && out.GatewayRoutes[i].GatewayRouteName == "R" {
				out.GatewayRoutes[i].GatewayRouteName = ""
			}
		}
		return out
	}
	g, w := strip(got), strip(want)
	gj, _ := json.Marshal(g)
	wj, _ := json.Marshal(w)
	return bytes.Equal(gj, wj) && reflect.DeepEqual(len(g.Routes), len(w.Routes))
}

// toCRD renames a spec's references and ACM fields to the controller's spelling: names
// of other resources become ARNs (which the controller's CRDs accept beside refs), and
// the ACM ARN fields take its capitals.
func toCRD(v any) any {
	const arn = "arn:aws:appmesh:eu-west-1:111122223333:mesh/corpus/"
	switch x := v.(type) {
	case map[string]any:
		m := map[string]any{}
		for k, e := range x {
			switch k {
			case "virtualServiceName":
				m["virtualServiceARN"] = arn + "virtualService/" + e.(string)
			case "virtualNodeName":
				m["virtualNodeARN"] = arn + "virtualNode/" + e.(string)
			case "virtualRouterName":
				m["virtualRouterARN"] = arn + "virtualRouter/" + e.(string)
			case "certificateArn":
				m["certificateARN"] = e
			case "certificateAuthorityArns":
				m["certificateAuthorityARNs"] = e
			case "weightedTargets":
				src := e.([]any)
				l := make([]any, len(src))
				for i, wt := range src {
					w := toCRD(wt).(map[string]any)
					if n, ok := w["virtualNode"].(string); ok {
						delete(w, "virtualNode")
						w["virtualNodeARN"] = arn + "virtualNode/" + n
					}
					l[i] = w
				}
				m[k] = l
			default:
				m[k] = toCRD(e)
			}
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, e := range x {
			l[i] = toCRD(e)
		}
		return l
	}
	return v
}

// TestImportCorpusControllerManifests imports every corpus resource as an App Mesh
// controller manifest (references by ARN, the routes inside their router, a gateway
// route beside its gateway) and checks that the resource arrives as meshd reads its
// describe-* output.
func TestImportCorpusControllerManifests(t *testing.T) {
	n := 0
	for _, e := range corpus(t) {
		t.Run(e.file, func(t *testing.T) {
			var res map[string]any
			if err := json.Unmarshal([]byte(e.raw), &res); err != nil {
				t.Fatal(err)
			}
			spec, _ := res["spec"].(map[string]any)
			if spec == nil {
				spec = map[string]any{}
			}
			name := func(field, def string) string {
				if s, _ := res[field].(string); s != "" {
					return s
				}
				res[field] = def
				return def
			}
			obj := func(kind, name string, spec map[string]any) map[string]any {
				return map[string]any{"apiVersion": "appmesh.k8s.aws/v1beta2", "kind": kind,
					"metadata": map[string]any{"name": name, "namespace": "corpus"}, "spec": spec}
			}
			var objs []map[string]any
			crd := toCRD(spec).(map[string]any)
			switch e.kind {
			case "mesh":
				crd["awsName"] = name("meshName", "corpus")
				if sd, ok := crd["serviceDiscovery"]; ok {
					crd["meshServiceDiscovery"] = sd
					delete(crd, "serviceDiscovery")
				}
				m := obj("Mesh", "corpus", crd)
				delete(m["metadata"].(map[string]any), "namespace")
				objs = append(objs, m)
			case "virtualNode":
				crd["awsName"] = name("virtualNodeName", "corpus-node")
				objs = append(objs, obj("VirtualNode", "node", crd))
			case "virtualService":
				crd["awsName"] = name("virtualServiceName", "corpus-service")
				objs = append(objs, obj("VirtualService", "service", crd))
			case "virtualRouter":
				crd["awsName"] = name("virtualRouterName", "corpus-router")
				objs = append(objs, obj("VirtualRouter", "router", crd))
			case "route":
				crd["name"] = name("routeName", "corpus-route")
				objs = append(objs, obj("VirtualRouter", "router", map[string]any{
					"awsName": name("virtualRouterName", "corpus-router"), "routes": []any{crd}}))
			case "virtualGateway":
				crd["awsName"] = name("virtualGatewayName", "corpus-gateway")
				objs = append(objs, obj("VirtualGateway", "gateway", crd))
			case "gatewayRoute":
				crd["awsName"] = name("gatewayRouteName", "corpus-gateway-route")
				crd["virtualGatewayRef"] = map[string]any{"name": "gateway"}
				objs = append(objs, obj("VirtualGateway", "gateway", map[string]any{"awsName": name("virtualGatewayName", "corpus-gateway")}),
					obj("GatewayRoute", "route", crd))
			}
			var docs []string
			for _, o := range objs {
				b, _ := json.Marshal(o)
				docs = append(docs, string(b))
			}
			p := filepath.Join(t.TempDir(), "manifests.yaml")
			if err := os.WriteFile(p, []byte(strings.Join(docs, "\n---\n")), 0o644); err != nil {
				t.Fatal(err)
			}
			dj, _ := json.Marshal(map[string]any{e.kind: res})
			want, err := config.Parse(dj)
			if err != nil {
				t.Fatal(err)
			}
			(&importer{tlsDir: "/etc/meshd/tls", report: func(string) {}}).rewriteACMInto(want)

			_, data, report := runImport(t, "--mesh", meshOf(want), p)
			got, err := config.Parse(data)
			if err != nil {
				t.Fatalf("the imported file does not parse: %v\n%s\nreport:\n%s", err, data, report)
			}
			if strings.Contains(report, "not carried over") {
				t.Errorf("import dropped fields:\n%s", report)
			}
			// The router a route came in and the gateway of a gateway route are not
			// what is compared.
			switch e.kind {
			case "route":
				got.VirtualRouters = nil
			case "gatewayRoute":
				got.VirtualGateways = nil
			}
			if !sameResources(got, want, false) {
				gj, _ := json.MarshalIndent(got, "", " ")
				wj, _ := json.MarshalIndent(want, "", " ")
				t.Fatalf("imported as\n%s\nwant\n%s\nreport:\n%s", gj, wj, report)
			}
			n++
		})
	}
	t.Logf("%d corpus resources imported from controller manifests", n)
}

// TestImportAliasBomb: a template whose aliases expand past the node bound, or refer
// to themselves, is an error, not a hang.
func TestImportAliasBomb(t *testing.T) {
	rep := func(alias string) string {
		return "[" + strings.TrimSuffix(strings.Repeat(alias+", ", 100), ", ") + "]"
	}
	bomb := "Resources:\n  R:\n    Type: AWS::AppMesh::Mesh\n    Properties:\n      MeshName: m\n" +
		"      Metadata: {a: &a x, b: &b " + rep("*a") + ", c: &c " + rep("*b") + ", d: &d " + rep("*c") + "}\n" +
		"      Spec: " + rep("*d") + "\n"
	p := filepath.Join(t.TempDir(), "bomb.yaml")
	if err := os.WriteFile(p, []byte(bomb), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, report := runImport(t, p)
	if code != 1 || !strings.Contains(report, "YAML nodes (aliases expanded)") {
		t.Fatalf("exit %d; report:\n%s", code, report)
	}
}
