// Package canary is the logic of `meshd canary`: moving a route's weight to a canary
// target in a config document (keeping the document's layout, comments and key order),
// reading the sidecars' metrics of the canary and the primary, and deciding each step:
// go on, hold, or roll back. The command (cmd/meshd) owns the loop, the clock and the
// writes; everything here is pure or takes its I/O as arguments, so it is tested
// without sidecars.
package canary

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/meshd/meshd/config"
)

// Target is one weighted target of a route.
type Target struct {
	Node   string
	Weight int
}

// Doc is a config document open for editing: its YAML node tree, so that a weight
// change leaves everything else as it was written.
type Doc struct {
	root *yaml.Node
	json bool // written as JSON (and so written back as JSON)
}

// ParseDoc reads a config document (YAML or JSON, the documented layout).
func ParseDoc(data []byte) (*Doc, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) != 1 || root.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("config: want one document with a mapping at the top (mesh, virtualNodes, routes, ...); convert other forms with meshd import")
	}
	trimmed := bytes.TrimSpace(data)
	return &Doc{root: root.Content[0], json: len(trimmed) > 0 && trimmed[0] == '{'}, nil
}

// targets finds the weightedTargets sequence of route ROUTER/ROUTE.
func (d *Doc) targets(router, route string) (*yaml.Node, error) {
	routes := mapGet(d.root, "routes")
	if routes == nil || routes.Kind != yaml.SequenceNode {
		return nil, errors.New("config: no routes list: meshd canary edits the one-document layout (mesh, virtualNodes, routes, ...); convert describe-* outputs, manifests or a directory with meshd import")
	}
	for i, r := range routes.Content {
		if scalar(mapGet(r, "routeName")) != route || scalar(mapGet(r, "virtualRouterName")) != router {
			continue
		}
		spec := mapGet(r, "spec")
		for _, kind := range []string{"httpRoute", "http2Route", "grpcRoute", "tcpRoute"} {
			if rt := mapGet(spec, kind); rt != nil {
				wt := mapGet(mapGet(rt, "action"), "weightedTargets")
				if wt == nil || wt.Kind != yaml.SequenceNode {
					return nil, fmt.Errorf("routes[%d].spec.%s.action.weightedTargets: missing", i, kind)
				}
				return wt, nil
			}
		}
		return nil, fmt.Errorf("routes[%d].spec: no httpRoute, http2Route, grpcRoute or tcpRoute", i)
	}
	return nil, fmt.Errorf("route %s/%s: not in the config (routes[].virtualRouterName / routeName)", router, route)
}

// Targets is the route's weighted targets as written.
func (d *Doc) Targets(router, route string) ([]Target, error) {
	wt, err := d.targets(router, route)
	if err != nil {
		return nil, err
	}
	out := make([]Target, 0, len(wt.Content))
	for i, t := range wt.Content {
		w, err := strconv.Atoi(scalar(mapGet(t, "weight")))
		if err != nil {
			return nil, fmt.Errorf("route %s/%s: weightedTargets[%d].weight %q: not a whole number", router, route, i, scalar(mapGet(t, "weight")))
		}
		out = append(out, Target{Node: scalar(mapGet(t, "virtualNode")), Weight: w})
	}
	return out, nil
}

// CanaryPercent is the canary's share of the route's total weight, in percent (rounded
// down), and whether the canary is one of its targets.
func CanaryPercent(ts []Target, canary string) (pct int, found bool) {
	total, cw := 0, 0
	for _, t := range ts {
		total += t.Weight
		if t.Node == canary {
			cw += t.Weight
			found = true
		}
	}
	if total == 0 {
		return 0, found
	}
	return cw * 100 / total, found
}

// Split is the route's targets with the canary at pct of 100 and the others sharing
// the rest in the proportions they have now (equally when they have none), the
// rounding given to the largest remainders so the weights add up to 100.
func Split(ts []Target, canary string, pct int) []Target {
	pct = min(max(pct, 0), 100)
	out := make([]Target, 0, len(ts)+1)
	total, others := 0, 0
	for _, t := range ts {
		if t.Node != canary {
			total += t.Weight
			others++
		}
	}
	rest := 100 - pct
	type share struct{ i, rem int }
	var shares []share
	given := 0
	for _, t := range ts {
		if t.Node == canary {
			continue
		}
		num := rest
		den := others
		if total > 0 {
			num, den = rest*t.Weight, total
		}
		w := num / den
		given += w
		shares = append(shares, share{len(out), num % den})
		out = append(out, Target{Node: t.Node, Weight: w})
	}
	// Largest remainders first, earlier targets first among equals.
	for left := rest - given; left > 0 && len(shares) > 0; left-- {
		best := 0
		for j := range shares {
			if shares[j].rem > shares[best].rem {
				best = j
			}
		}
		out[shares[best].i].Weight++
		shares[best].rem = -1
	}
	return append(out, Target{Node: canary, Weight: pct})
}

// SetCanary writes the canary's share pct into route ROUTER/ROUTE (Split), adding the
// canary as a target when the route does not have it (with the port of the route's
// first target, when that has one). It returns the targets written.
func (d *Doc) SetCanary(router, route, canary string, pct int) ([]Target, error) {
	wt, err := d.targets(router, route)
	if err != nil {
		return nil, err
	}
	cur, err := d.Targets(router, route)
	if err != nil {
		return nil, err
	}
	split := Split(cur, canary, pct)
	if len(split) == 1 && pct < 100 {
		return nil, fmt.Errorf("route %s/%s: the canary %s is its only target; there is no primary to keep the rest", router, route, canary)
	}
	weights := map[string]int{}
	for _, t := range split {
		weights[t.Node] = t.Weight
	}
	found := false
	for _, t := range wt.Content {
		node := scalar(mapGet(t, "virtualNode"))
		if node == canary {
			if found {
				// A second entry of the canary (another port) keeps nothing.
				setScalar(mapGet(t, "weight"), 0)
				continue
			}
			found = true
		}
		setScalar(mapGet(t, "weight"), weights[node])
	}
	if !found {
		n := &yaml.Node{Kind: yaml.MappingNode}
		n.Content = append(n.Content, keyNode("virtualNode"), strNode(canary))
		if len(wt.Content) > 0 {
			if p := mapGet(wt.Content[0], "port"); p != nil {
				n.Content = append(n.Content, keyNode("port"), &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: p.Value})
			}
		}
		w := &yaml.Node{Kind: yaml.ScalarNode}
		setScalar(w, pct)
		n.Content = append(n.Content, keyNode("weight"), w)
		if len(wt.Content) > 0 {
			n.Style = wt.Content[0].Style
		}
		wt.Content = append(wt.Content, n)
	}
	return split, nil
}

// Bytes is the document as written back: YAML, or JSON when it was read as JSON. It is
// checked with config.Parse, so a write never leaves a config meshd would refuse.
func (d *Doc) Bytes() ([]byte, error) {
	var out []byte
	if d.json {
		var b bytes.Buffer
		if err := writeJSON(&b, d.root, ""); err != nil {
			return nil, err
		}
		b.WriteByte('\n')
		out = b.Bytes()
	} else {
		var b bytes.Buffer
		enc := yaml.NewEncoder(&b)
		enc.SetIndent(2)
		if err := enc.Encode(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{d.root}}); err != nil {
			return nil, err
		}
		out = b.Bytes()
	}
	if _, err := config.Parse(out); err != nil {
		return nil, fmt.Errorf("the edited config does not parse: %w", err)
	}
	return out, nil
}

func mapGet(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func setScalar(n *yaml.Node, v int) {
	if n == nil {
		return
	}
	n.Kind, n.Tag, n.Value, n.Style = yaml.ScalarNode, "!!int", strconv.Itoa(v), 0
}

func keyNode(k string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k} }
func strNode(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }

// writeJSON writes n as JSON in document order (a decode into Go maps would sort it).
func writeJSON(b *bytes.Buffer, n *yaml.Node, indent string) error {
	switch n.Kind {
	case yaml.AliasNode:
		return writeJSON(b, n.Alias, indent)
	case yaml.MappingNode:
		if len(n.Content) == 0 {
			b.WriteString("{}")
			return nil
		}
		b.WriteString("{\n")
		for i := 0; i+1 < len(n.Content); i += 2 {
			b.WriteString(indent + "  ")
			k, _ := json.Marshal(n.Content[i].Value)
			b.Write(k)
			b.WriteString(": ")
			if err := writeJSON(b, n.Content[i+1], indent+"  "); err != nil {
				return err
			}
			if i+2 < len(n.Content) {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(indent + "}")
	case yaml.SequenceNode:
		if len(n.Content) == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteString("[\n")
		for i, c := range n.Content {
			b.WriteString(indent + "  ")
			if err := writeJSON(b, c, indent+"  "); err != nil {
				return err
			}
			if i+1 < len(n.Content) {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(indent + "]")
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!int", "!!float", "!!bool", "!!null":
			if n.ShortTag() == "!!null" {
				b.WriteString("null")
			} else {
				b.WriteString(strings.ToLower(n.Value))
			}
		default:
			v, _ := json.Marshal(n.Value)
			b.Write(v)
		}
	default:
		return fmt.Errorf("config: unexpected YAML node kind %d", n.Kind)
	}
	return nil
}
