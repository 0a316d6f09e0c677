package state

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
)

const meshDoc = `
mesh: {meshName: MESH}
virtualNodes:
  - virtualNodeName: front
    spec:
      listeners: [{portMapping: {port: 9000, protocol: http}}]
`

// TestHolderMeshRefusesOtherMeshes: a Holder bound to a mesh (the deployment's
// APPMESH_RESOURCE_ARN) refuses a config of another mesh at the first apply (nothing is
// in force) and at a reload (the config in force keeps serving), naming the field, the
// value and where the mesh came from.
func TestHolderMeshRefusesOtherMeshes(t *testing.T) {
	h := &Holder{Node: "front", Mesh: "shop", MeshFrom: `APPMESH_RESOURCE_ARN="arn:...:mesh/shop/virtualNode/front"`,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Options: originOptions(t)}
	ctx := context.Background()
	doc := func(mesh string) []byte { return []byte(strings.ReplaceAll(meshDoc, "MESH", mesh)) }
	check := func(err error) {
		t.Helper()
		var re *RejectedError
		if !errors.As(err, &re) || re.Stage != StageValidate {
			t.Fatalf("apply of mesh other: %v, want a rejection at validation", err)
		}
		for _, w := range []string{"mesh.meshName", `"other"`, `serves mesh "shop"`, "APPMESH_RESOURCE_ARN"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error lacks %q: %v", w, err)
			}
		}
	}
	_, err := h.ApplyDocument(ctx, ApplyRequest{Data: doc("other"), Source: "test"})
	check(err)
	if h.Load() != nil {
		t.Fatal("a config of another mesh is in force")
	}
	if _, err := h.ApplyDocument(ctx, ApplyRequest{Data: doc("shop"), Source: "test"}); err != nil {
		t.Fatalf("apply of mesh shop: %v", err)
	}
	v := h.Load().Version()
	_, err = h.ApplyDocument(ctx, ApplyRequest{Data: doc("other"), Source: "reload"})
	check(err)
	if got := h.Load().Version(); got != v {
		t.Fatalf("version in force %q, want %q kept", got, v)
	}
}

// TestConfigErrorsPlaceMultiDocumentErrors: a problem in the second document of a YAML
// stream is placed by its document in /config's errors (as in the error text).
func TestConfigErrorsPlaceMultiDocumentErrors(t *testing.T) {
	h := &Holder{Node: "front", Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Options: originOptions(t)}
	doc := "mesh: {meshName: shop}\n---\nvirtualNode:\n  meshName: shop\n  virtualNodeName: front\n  spec: {listeners: [{portMapping: {port: 9000, protocol: htp}}]}\n"
	_, err := h.ApplyDocument(context.Background(), ApplyRequest{Data: []byte(doc), Source: "test"})
	if err == nil {
		t.Fatal("an invalid protocol was applied")
	}
	errs := ConfigErrors(err)
	if len(errs) == 0 || errs[0].Doc != 2 || !strings.Contains(errs[0].Path, "protocol") {
		t.Fatalf("errors %+v (from %v), want the second document's protocol", errs, err)
	}
}
