package main

import (
	"fmt"
	"maps"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// CloudFormation: the AWS::AppMesh::* resources of a template, with the intrinsic
// functions that name resources or parameters of the same template resolved.

// cfnKinds maps an App Mesh resource type to its describe-* key and name properties
// (the resource's own first, then its parents'), as CloudFormation spells them.
var cfnKinds = map[string]struct {
	kind  string
	names []string // CloudFormation property → API field, own name first
	api   []string
}{
	"AWS::AppMesh::Mesh":           {"mesh", []string{"MeshName"}, []string{"meshName"}},
	"AWS::AppMesh::VirtualNode":    {"virtualNode", []string{"VirtualNodeName", "MeshName"}, []string{"virtualNodeName", "meshName"}},
	"AWS::AppMesh::VirtualService": {"virtualService", []string{"VirtualServiceName", "MeshName"}, []string{"virtualServiceName", "meshName"}},
	"AWS::AppMesh::VirtualRouter":  {"virtualRouter", []string{"VirtualRouterName", "MeshName"}, []string{"virtualRouterName", "meshName"}},
	"AWS::AppMesh::Route":          {"route", []string{"RouteName", "MeshName", "VirtualRouterName"}, []string{"routeName", "meshName", "virtualRouterName"}},
	"AWS::AppMesh::VirtualGateway": {"virtualGateway", []string{"VirtualGatewayName", "MeshName"}, []string{"virtualGatewayName", "meshName"}},
	"AWS::AppMesh::GatewayRoute":   {"gatewayRoute", []string{"GatewayRouteName", "MeshName", "VirtualGatewayName"}, []string{"gatewayRouteName", "meshName", "virtualGatewayName"}},
}

// cfnAttrs are the GetAtt attributes of App Mesh resources that are names.
var cfnNameAttrs = []string{"MeshName", "VirtualNodeName", "VirtualServiceName", "VirtualRouterName", "RouteName", "VirtualGatewayName", "GatewayRouteName"}

type cfnResource struct {
	typ       string
	props     map[string]any
	condition string
}

type cfnTemplate struct {
	file       string
	params     map[string]any // resolved parameter values; absent: unresolvable
	paramWhy   map[string]string
	resources  map[string]*cfnResource
	mappings   map[string]any
	conditions map[string]any
	condCache  map[string]condResult
	// resolving guards against a GetAtt cycle between resources.
	resolving map[string]bool
}

type condResult struct {
	val bool
	err error
}

// unresolved says why a value cannot be known from the template alone.
type unresolved struct{ why string }

func (u *unresolved) Error() string { return u.why }

// noValue is AWS::NoValue: the property is left out, as CloudFormation does.
type noValueT struct{}

var noValue = noValueT{}

// Bounds on what one input file may expand to: YAML aliases let a small file describe
// an exponentially large tree, and an alias inside its own anchor an infinite one.
const (
	maxImportNodes = 1 << 22
	maxImportDepth = 128
)

// nodeReader turns YAML nodes into plain values within those bounds; err is set (and
// the values are incomplete) once a bound is passed.
type nodeReader struct {
	visits int
	err    error
}

func (r *nodeReader) value(n *yaml.Node) any { return r.node(n, 0) }

// node turns a template node into plain values, the YAML short forms (!Ref, !Sub,
// !GetAtt "A.b", ...) into their long forms ({"Ref": ...}, {"Fn::Sub": ...}).
func (r *nodeReader) node(n *yaml.Node, depth int) any {
	r.visits++
	switch {
	case r.err != nil:
		return nil
	case r.visits > maxImportNodes:
		r.err = fmt.Errorf("line %d: more than %d YAML nodes (aliases expanded)", n.Line, maxImportNodes)
		return nil
	case depth > maxImportDepth:
		r.err = fmt.Errorf("line %d: nesting deeper than %d levels (an alias that refers to itself?)", n.Line, maxImportDepth)
		return nil
	}
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	var v any
	switch n.Kind {
	case yaml.MappingNode:
		m := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			m[n.Content[i].Value] = r.node(n.Content[i+1], depth+1)
		}
		v = m
	case yaml.SequenceNode:
		l := make([]any, len(n.Content))
		for i, c := range n.Content {
			l[i] = r.node(c, depth+1)
		}
		v = l
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!int":
			var i int64
			if n.Decode(&i) == nil {
				v = i
			} else {
				v = n.Value
			}
		case "!!float":
			var f float64
			if n.Decode(&f) == nil {
				v = f
			} else {
				v = n.Value
			}
		case "!!bool":
			var b bool
			_ = n.Decode(&b)
			v = b
		case "!!null":
			v = nil
		default:
			v = n.Value
		}
	}
	tag := n.Tag
	if !strings.HasPrefix(tag, "!") || strings.HasPrefix(tag, "!!") {
		return v
	}
	fn := tag[1:]
	switch fn {
	case "Ref":
		return map[string]any{"Ref": n.Value}
	case "Condition":
		return map[string]any{"Condition": n.Value}
	case "GetAtt":
		if n.Kind == yaml.ScalarNode {
			res, attr, _ := strings.Cut(n.Value, ".")
			return map[string]any{"Fn::GetAtt": []any{res, attr}}
		}
	}
	if n.Kind == yaml.ScalarNode {
		v = n.Value // a tagged scalar is a string argument whatever it looks like
	}
	return map[string]any{"Fn::" + fn: v}
}

// cfn imports a CloudFormation template.
func (im *importer) cfn(path string, root *yaml.Node) error {
	var nr nodeReader
	doc, ok := nr.value(root).(map[string]any)
	if nr.err != nil {
		return fmt.Errorf("%s: %w", path, nr.err)
	}
	if !ok {
		return fmt.Errorf("%s: a template is a mapping", path)
	}
	t := &cfnTemplate{file: path, params: map[string]any{}, paramWhy: map[string]string{}, resources: map[string]*cfnResource{},
		condCache: map[string]condResult{}, resolving: map[string]bool{}}
	t.mappings, _ = doc["Mappings"].(map[string]any)
	t.conditions, _ = doc["Conditions"].(map[string]any)
	// Pseudo parameters CloudFormation would know; --parameter may set them too.
	t.params["AWS::Partition"] = "aws"
	t.params["AWS::URLSuffix"] = "amazonaws.com"
	for _, p := range []string{"AWS::Region", "AWS::AccountId", "AWS::StackName", "AWS::StackId", "AWS::NotificationARNs"} {
		t.paramWhy[p] = fmt.Sprintf("the pseudo parameter %s is known only in a deployed stack; pass --parameter %s=VALUE", p, p)
	}
	params, _ := doc["Parameters"].(map[string]any)
	for _, name := range sortedKeys(params) {
		decl, _ := params[name].(map[string]any)
		def, hasDef := decl["Default"]
		if hasDef {
			t.params[name] = def
		} else {
			t.paramWhy[name] = fmt.Sprintf("parameter %s has no Default; pass --parameter %s=VALUE", name, name)
		}
		if typ, _ := decl["Type"].(string); typ == "CommaDelimitedList" || strings.HasPrefix(typ, "List<") {
			if s, ok := t.params[name].(string); ok {
				t.params[name] = splitAny(s, ",")
			}
		}
	}
	for k, v := range im.params {
		if _, declared := params[k]; !declared && !strings.HasPrefix(k, "AWS::") {
			im.report(fmt.Sprintf("%s: --parameter %s: the template declares no such parameter; not used", path, k))
			continue
		}
		t.params[k] = v
		delete(t.paramWhy, k)
		if decl, _ := params[k].(map[string]any); decl != nil {
			if typ, _ := decl["Type"].(string); typ == "CommaDelimitedList" || strings.HasPrefix(typ, "List<") {
				t.params[k] = splitAny(v, ",")
			}
		}
	}
	resources, _ := doc["Resources"].(map[string]any)
	for id, r := range resources {
		rm, _ := r.(map[string]any)
		typ, _ := rm["Type"].(string)
		props, _ := rm["Properties"].(map[string]any)
		cond, _ := rm["Condition"].(string)
		t.resources[id] = &cfnResource{typ: typ, props: props, condition: cond}
	}
	others := map[string]int{}
	imported := 0
	for _, id := range sortedKeys(resources) {
		r := t.resources[id]
		k, ok := cfnKinds[r.typ]
		if !ok {
			others[r.typ]++
			continue
		}
		where := fmt.Sprintf("%s: %s (%s)", path, id, r.typ)
		if r.condition != "" {
			on, err := t.cond(r.condition)
			switch {
			case err != nil:
				im.report(fmt.Sprintf("%s: Condition %s cannot be decided (%v); imported as if true", where, r.condition, err))
			case !on:
				im.report(fmt.Sprintf("%s: Condition %s is false; not imported", where, r.condition))
				continue
			}
		}
		res := map[string]any{}
		for i, prop := range k.names {
			name, err := t.name(id, prop)
			if err != nil {
				if _, set := r.props[prop]; i == 0 && !set {
					im.report(fmt.Sprintf("%s: %s: %v; named %q after its logical ID", where, prop, err, id))
					name = id
				} else {
					im.fail("%s: %s: %v", where, prop, err)
					continue
				}
			}
			res[k.api[i]] = name
		}
		for _, p := range sortedKeys(r.props) {
			switch {
			case p == "Spec", containsStr(k.names, p):
			case p == "Tags":
				im.report(fmt.Sprintf("%s: Tags not carried over: meshd has no use for them", where))
			case p == "MeshOwner":
				im.report(fmt.Sprintf("%s: MeshOwner not carried over: meshd has no shared meshes", where))
			default:
				im.report(fmt.Sprintf("%s: property %s not carried over: App Mesh has no such property", where, p))
			}
		}
		if spec, ok := r.props["Spec"]; ok {
			rv, err := t.resolve(spec, "Spec", func(path, why string) {
				im.report(fmt.Sprintf("%s: %s not carried over: %s", where, path, why))
			})
			if err != nil {
				im.fail("%s: Spec: %v", where, err)
				continue
			}
			res["spec"] = normalize(rv, specTypes[k.kind], "Spec", func(p, msg string) {
				im.report(fmt.Sprintf("%s: %s %s", where, p, msg))
			})
		}
		im.addResource(where, k.kind, res)
		imported++
	}
	if len(others) > 0 {
		var parts []string
		for _, typ := range sortedCounts(others) {
			parts = append(parts, fmt.Sprintf("%s ×%d", typ, others[typ]))
		}
		im.report(fmt.Sprintf("%s: resources that are not App Mesh's left out: %s", path, strings.Join(parts, ", ")))
	}
	if imported == 0 {
		im.report(fmt.Sprintf("%s: the template holds no AWS::AppMesh::* resource", path))
	}
	return nil
}

func containsStr(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func sortedCounts(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func splitAny(s, sep string) []any {
	parts := strings.Split(s, sep)
	out := make([]any, len(parts))
	for i, p := range parts {
		out[i] = p
	}
	return out
}

// name resolves the name property prop of resource id (an App Mesh resource). An own
// name left out is CloudFormation's to generate: unresolvable.
func (t *cfnTemplate) name(id, prop string) (string, error) {
	if t.resolving[id+"."+prop] {
		return "", &unresolved{"refers to itself"}
	}
	t.resolving[id+"."+prop] = true
	defer delete(t.resolving, id+"."+prop)
	r := t.resources[id]
	v, ok := r.props[prop]
	if !ok {
		return "", &unresolved{"not set, so CloudFormation generated one when the stack was created"}
	}
	rv, err := t.resolve(v, prop, nil)
	if err != nil {
		return "", err
	}
	s, ok := scalarString(rv)
	if !ok {
		return "", &unresolved{"not a string"}
	}
	return s, nil
}

// resolve evaluates the intrinsic functions in v. Where one cannot be resolved, the
// property holding it is left out and drop says so (with drop nil, the error is
// returned instead).
func (t *cfnTemplate) resolve(v any, path string, drop func(path, why string)) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 1 {
			for k, arg := range x {
				if k == "Ref" || strings.HasPrefix(k, "Fn::") {
					r, err := t.intrinsic(k, arg)
					if err != nil {
						return nil, err
					}
					return r, nil
				}
			}
		}
		out := map[string]any{}
		for _, k := range sortedKeys(x) {
			r, err := t.resolve(x[k], joinDot(path, k), drop)
			if err != nil {
				if drop == nil {
					return nil, err
				}
				drop(joinDot(path, k), err.Error())
				continue
			}
			if r == noValue {
				continue
			}
			out[k] = r
		}
		return out, nil
	case []any:
		out := make([]any, 0, len(x))
		for i, e := range x {
			p := path + "[" + strconv.Itoa(i) + "]"
			r, err := t.resolve(e, p, drop)
			if err != nil {
				if drop == nil {
					return nil, err
				}
				drop(p, err.Error())
				continue
			}
			if r == noValue {
				continue
			}
			out = append(out, r)
		}
		return out, nil
	}
	return v, nil
}

// arg resolves an intrinsic function's argument, failing on anything unresolved.
func (t *cfnTemplate) arg(v any) (any, error) { return t.resolve(v, "", nil) }

func (t *cfnTemplate) intrinsic(fn string, a any) (any, error) {
	switch fn {
	case "Ref":
		name, ok := a.(string)
		if !ok {
			return nil, &unresolved{"Ref takes a name"}
		}
		return t.ref(name)
	case "Fn::GetAtt":
		var res, attr string
		switch x := a.(type) {
		case []any:
			if len(x) == 2 {
				res, _ = x[0].(string)
				av, err := t.arg(x[1])
				if err != nil {
					return nil, err
				}
				attr, _ = av.(string)
			}
		case string:
			res, attr, _ = strings.Cut(x, ".")
		}
		if res == "" || attr == "" {
			return nil, &unresolved{"Fn::GetAtt takes [resource, attribute]"}
		}
		return t.getAtt(res, attr)
	case "Fn::Sub":
		var tmpl string
		vars := map[string]any{}
		switch x := a.(type) {
		case string:
			tmpl = x
		case []any:
			if len(x) != 2 {
				return nil, &unresolved{"Fn::Sub takes a string or [string, {variables}]"}
			}
			tmpl, _ = x[0].(string)
			m, _ := x[1].(map[string]any)
			maps.Copy(vars, m)
		}
		return t.sub(tmpl, vars)
	case "Fn::Join":
		l, ok := a.([]any)
		if !ok || len(l) != 2 {
			return nil, &unresolved{"Fn::Join takes [delimiter, [values]]"}
		}
		delim, _ := l[0].(string)
		items, err := t.arg(l[1])
		if err != nil {
			return nil, err
		}
		list, ok := items.([]any)
		if !ok {
			return nil, &unresolved{"Fn::Join's values are not a list"}
		}
		parts := make([]string, len(list))
		for i, e := range list {
			s, ok := scalarString(e)
			if !ok {
				return nil, &unresolved{"Fn::Join of a value that is not a string"}
			}
			parts[i] = s
		}
		return strings.Join(parts, delim), nil
	case "Fn::Select":
		l, ok := a.([]any)
		if !ok || len(l) != 2 {
			return nil, &unresolved{"Fn::Select takes [index, [values]]"}
		}
		iv, err := t.arg(l[0])
		if err != nil {
			return nil, err
		}
		is, _ := scalarString(iv)
		idx, err := strconv.Atoi(is)
		if err != nil {
			return nil, &unresolved{"Fn::Select's index is not a number"}
		}
		lv, err := t.arg(l[1])
		if err != nil {
			return nil, err
		}
		list, ok := lv.([]any)
		if !ok || idx < 0 || idx >= len(list) {
			return nil, &unresolved{"Fn::Select's index is out of range"}
		}
		return list[idx], nil
	case "Fn::Split":
		l, ok := a.([]any)
		if !ok || len(l) != 2 {
			return nil, &unresolved{"Fn::Split takes [delimiter, string]"}
		}
		delim, _ := l[0].(string)
		sv, err := t.arg(l[1])
		if err != nil {
			return nil, err
		}
		s, ok := scalarString(sv)
		if !ok {
			return nil, &unresolved{"Fn::Split of a value that is not a string"}
		}
		return splitAny(s, delim), nil
	case "Fn::FindInMap":
		l, ok := a.([]any)
		if !ok || len(l) != 3 {
			return nil, &unresolved{"Fn::FindInMap takes [map, key, key]"}
		}
		var keys [3]string
		for i, e := range l {
			ev, err := t.arg(e)
			if err != nil {
				return nil, err
			}
			keys[i], _ = scalarString(ev)
		}
		m1, _ := t.mappings[keys[0]].(map[string]any)
		m2, _ := m1[keys[1]].(map[string]any)
		v, ok := m2[keys[2]]
		if !ok {
			return nil, &unresolved{fmt.Sprintf("Fn::FindInMap: no %s.%s.%s in Mappings", keys[0], keys[1], keys[2])}
		}
		return t.arg(v)
	case "Fn::If":
		l, ok := a.([]any)
		if !ok || len(l) != 3 {
			return nil, &unresolved{"Fn::If takes [condition, then, else]"}
		}
		name, _ := l[0].(string)
		on, err := t.cond(name)
		if err != nil {
			return nil, err
		}
		if on {
			return t.arg(l[1])
		}
		return t.arg(l[2])
	case "Fn::ImportValue":
		return nil, &unresolved{"Fn::ImportValue reads another stack's export, which a template alone does not hold"}
	}
	return nil, &unresolved{fn + " is not resolved by meshd import"}
}

func (t *cfnTemplate) ref(name string) (any, error) {
	if name == "AWS::NoValue" {
		return noValue, nil
	}
	if v, ok := t.params[name]; ok {
		return t.arg(v)
	}
	if why, ok := t.paramWhy[name]; ok {
		return nil, &unresolved{why}
	}
	if r, ok := t.resources[name]; ok {
		if k, ok := cfnKinds[r.typ]; ok {
			return nil, &unresolved{fmt.Sprintf("Ref %s is the resource's ARN, known only once deployed; use !GetAtt %s.%s", name, name, k.names[0])}
		}
		return nil, &unresolved{fmt.Sprintf("Ref %s (%s) is known only once the stack is deployed", name, r.typ)}
	}
	return nil, &unresolved{fmt.Sprintf("Ref %s names no parameter or resource of this template", name)}
}

func (t *cfnTemplate) getAtt(id, attr string) (any, error) {
	r, ok := t.resources[id]
	if !ok {
		return nil, &unresolved{fmt.Sprintf("Fn::GetAtt %s.%s names no resource of this template", id, attr)}
	}
	if k, ok := cfnKinds[r.typ]; ok {
		if containsStr(cfnNameAttrs, attr) && containsStr(k.names, attr) {
			if _, set := r.props[attr]; !set && attr == k.names[0] {
				// CloudFormation generated the name; the import names the resource after
				// its logical ID (reported there).
				return id, nil
			}
			return t.name(id, attr)
		}
		return nil, &unresolved{fmt.Sprintf("Fn::GetAtt %s.%s is known only once the stack is deployed", id, attr)}
	}
	// Another resource's attribute that is one of its own literal properties (a Cloud
	// Map service's Name, say) is that property.
	if v, ok := r.props[attr]; ok {
		key := id + "." + attr
		if t.resolving[key] {
			return nil, &unresolved{"refers to itself"}
		}
		t.resolving[key] = true
		defer delete(t.resolving, key)
		return t.arg(v)
	}
	return nil, &unresolved{fmt.Sprintf("Fn::GetAtt %s.%s (%s) is known only once the stack is deployed", id, attr, r.typ)}
}

var subVar = regexp.MustCompile(`\$\{([^}]*)\}`)

func (t *cfnTemplate) sub(tmpl string, vars map[string]any) (any, error) {
	var firstErr error
	out := subVar.ReplaceAllStringFunc(tmpl, func(m string) string {
		name := m[2 : len(m)-1]
		if strings.HasPrefix(name, "!") {
			return "${" + name[1:] + "}" // ${!Literal}
		}
		var v any
		var err error
		if x, ok := vars[name]; ok {
			v, err = t.arg(x)
		} else if res, attr, ok := strings.Cut(name, "."); ok {
			v, err = t.getAtt(res, attr)
		} else {
			v, err = t.ref(name)
		}
		if err == nil {
			s, ok := scalarString(v)
			if !ok {
				err = &unresolved{fmt.Sprintf("Fn::Sub: ${%s} is not a string", name)}
			}
			if err == nil {
				return s
			}
		}
		if firstErr == nil {
			firstErr = err
		}
		return m
	})
	if firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

// cond evaluates a named condition.
func (t *cfnTemplate) cond(name string) (bool, error) {
	if r, ok := t.condCache[name]; ok {
		return r.val, r.err
	}
	def, ok := t.conditions[name]
	if !ok {
		return false, &unresolved{fmt.Sprintf("no condition %s in Conditions", name)}
	}
	t.condCache[name] = condResult{err: &unresolved{fmt.Sprintf("condition %s refers to itself", name)}}
	v, err := t.condExpr(def)
	t.condCache[name] = condResult{v, err}
	return v, err
}

func (t *cfnTemplate) condExpr(v any) (bool, error) {
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 {
		return false, &unresolved{"a condition is one of Fn::Equals, Fn::Not, Fn::And, Fn::Or or Condition"}
	}
	for fn, a := range m {
		l, _ := a.([]any)
		switch fn {
		case "Condition":
			name, _ := a.(string)
			return t.cond(name)
		case "Fn::Equals":
			if len(l) != 2 {
				return false, &unresolved{"Fn::Equals takes two values"}
			}
			x, err := t.arg(l[0])
			if err != nil {
				return false, err
			}
			y, err := t.arg(l[1])
			if err != nil {
				return false, err
			}
			xs, _ := scalarString(x)
			ys, _ := scalarString(y)
			return xs == ys, nil
		case "Fn::Not":
			if len(l) != 1 {
				return false, &unresolved{"Fn::Not takes one condition"}
			}
			b, err := t.condExpr(l[0])
			return !b, err
		case "Fn::And", "Fn::Or":
			and := fn == "Fn::And"
			for _, e := range l {
				b, err := t.condExpr(e)
				if err != nil {
					return false, err
				}
				if b != and {
					return b, nil
				}
			}
			return and, nil
		}
	}
	return false, &unresolved{"a condition is one of Fn::Equals, Fn::Not, Fn::And, Fn::Or or Condition"}
}

func scalarString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case int64:
		return strconv.FormatInt(x, 10), true
	case int:
		return strconv.Itoa(x), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(x), true
	}
	return "", false
}
