package httpapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// openAPI is docs/openapi.yaml, loaded once.
type openAPI struct {
	doc      map[string]any
	compiler *jsonschema.Compiler
	mu       sync.Mutex
	schemas  map[string]*jsonschema.Schema
}

const docURL = "file:///openapi.json"

var (
	specOnce sync.Once
	spec     *openAPI
	specErr  error
)

func loadSpec(t *testing.T) *openAPI {
	t.Helper()
	specOnce.Do(func() {
		raw, err := os.ReadFile("../../docs/openapi.yaml")
		if err != nil {
			specErr = err
			return
		}
		var y any
		if err := yaml.Unmarshal(raw, &y); err != nil {
			specErr = err
			return
		}
		j, err := json.Marshal(y)
		if err != nil {
			specErr = err
			return
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
		if err != nil {
			specErr = err
			return
		}
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		c.AssertFormat()
		if err := c.AddResource(docURL, doc); err != nil {
			specErr = err
			return
		}
		spec = &openAPI{doc: doc.(map[string]any), compiler: c, schemas: map[string]*jsonschema.Schema{}}
	})
	if specErr != nil {
		t.Fatalf("load docs/openapi.yaml: %v", specErr)
	}
	return spec
}

func pointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// responseSchema returns the compiled JSON schema of the documented
// response, following a $ref to components/responses. ok is false when the
// document has no such response.
func (o *openAPI) responseSchema(t *testing.T, method, pattern string, status int) (sch *jsonschema.Schema, hasBody, ok bool) {
	t.Helper()
	paths, _ := o.doc["paths"].(map[string]any)
	item, _ := paths[pattern].(map[string]any)
	op, _ := item[strings.ToLower(method)].(map[string]any)
	resps, _ := op["responses"].(map[string]any)
	resp, found := resps[strconv.Itoa(status)].(map[string]any)
	if !found {
		return nil, false, false
	}
	ptr := "#/paths/" + pointerEscape(pattern) + "/" + strings.ToLower(method) + "/responses/" + strconv.Itoa(status)
	if ref, isRef := resp["$ref"].(string); isRef {
		name := strings.TrimPrefix(ref, "#/components/responses/")
		comps := o.doc["components"].(map[string]any)["responses"].(map[string]any)
		resp = comps[name].(map[string]any)
		ptr = "#/components/responses/" + pointerEscape(name)
	}
	content, _ := resp["content"].(map[string]any)
	if _, isJSON := content["application/json"]; !isJSON {
		return nil, false, true
	}
	ptr += "/content/application~1json/schema"
	o.mu.Lock()
	defer o.mu.Unlock()
	if s, cached := o.schemas[ptr]; cached {
		return s, true, true
	}
	s, err := o.compiler.Compile(docURL + ptr)
	if err != nil {
		t.Fatalf("compile schema %s: %v", ptr, err)
	}
	o.schemas[ptr] = s
	return s, true, true
}

// checkResponse fails the test if the response is not documented, or its
// body does not match the documented schema.
func checkResponse(t *testing.T, method, pattern string, status int, body []byte) {
	t.Helper()
	o := loadSpec(t)
	sch, hasBody, ok := o.responseSchema(t, method, pattern, status)
	if !ok {
		t.Fatalf("%s %s answered %d, which docs/openapi.yaml does not document (body %s)", method, pattern, status, body)
	}
	if !hasBody {
		if len(bytes.TrimSpace(body)) != 0 && status != http.StatusOK {
			t.Fatalf("%s %s %d: documented without a JSON body, got %s", method, pattern, status, body)
		}
		return
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s %s %d: body is not JSON: %v: %s", method, pattern, status, err, body)
	}
	if err := sch.Validate(v); err != nil {
		t.Fatalf("%s %s %d: body does not match docs/openapi.yaml: %v\nbody: %s", method, pattern, status, err, body)
	}
}

// TestOpenAPIListsEveryRoute walks the router and compares its routes with
// the paths and methods of docs/openapi.yaml, both ways.
func TestOpenAPIListsEveryRoute(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	var routes []string
	err := chi.Walk(b.srv.Router(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routes = append(routes, method+" "+strings.TrimSuffix(strings.ReplaceAll(route, "/*/", "/"), "/*"))
		return nil
	})
	if err != nil {
		t.Fatalf("walk routes: %v", err)
	}
	var documented []string
	for path, item := range loadSpec(t).doc["paths"].(map[string]any) {
		for method := range item.(map[string]any) {
			switch method {
			case "get", "put", "post", "patch", "delete", "head", "options":
				documented = append(documented, strings.ToUpper(method)+" "+path)
			}
		}
	}
	sort.Strings(routes)
	sort.Strings(documented)
	for _, r := range routes {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is missing from docs/openapi.yaml", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routes, d) {
			t.Errorf("docs/openapi.yaml documents %s, which the router does not serve", d)
		}
	}
	if len(routes) < 9 {
		t.Fatalf("walked only %d routes: %v", len(routes), routes)
	}
}
