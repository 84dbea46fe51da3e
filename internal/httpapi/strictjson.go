package httpapi

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"unicode"
)

// decodeStrict decodes b, which must be exactly one JSON object, into dst,
// a pointer to a request struct. It is stricter than encoding/json:
//
//   - the body must be an object: `null`, arrays, strings and an empty body
//     are 400 (encoding/json accepts `null` as "no change");
//   - object keys must match the json tag exactly, at every depth:
//     encoding/json would also take "Token" or "TOKEN" for "token";
//   - a key may appear once per object (encoding/json keeps the last);
//   - unknown fields, wrong types and trailing data are 400 as well.
//
// Every failure is an *HTTPError with status 400.
func decodeStrict(b []byte, dst any) error {
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return &HTTPError{Code: http.StatusBadRequest, Kind: "malformed", Msg: "request body must be a JSON object"}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := checkKeys(dec, reflect.TypeOf(dst).Elem()); err != nil {
		return err
	}
	dec = json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(dst)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errors.New("trailing data after the JSON object")
		}
	}
	if err == nil {
		return nil
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return &HTTPError{Code: http.StatusBadRequest, Kind: "invalid_field", Field: te.Field,
			Msg: fmt.Sprintf("%s: wrong type %s, want %s", te.Field, te.Value, te.Type), Err: err}
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		f = strings.Trim(f, `"`)
		return &HTTPError{Code: http.StatusBadRequest, Kind: "unknown_field", Field: f, Msg: "unknown field " + f, Err: err}
	}
	if errors.Is(err, io.EOF) {
		return &HTTPError{Code: http.StatusBadRequest, Kind: "malformed", Msg: "request body must be a JSON object", Err: err}
	}
	return &HTTPError{Code: http.StatusBadRequest, Kind: "malformed", Msg: "malformed JSON: " + err.Error(), Err: err}
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// checkKeys reads one JSON value from dec and checks the keys of every
// object in it against the struct type t expects there: exact tag names,
// each at most once. t nil means "not a struct we check" (a map, a type
// with its own UnmarshalJSON, or a value of the wrong kind, which Decode
// then reports). Syntax errors are left to Decode as well.
func checkKeys(dec *json.Decoder, t reflect.Type) error {
	if err := checkValue(dec, t, ""); err != nil && !errors.Is(err, errSyntax) {
		return err
	}
	return nil // a syntax error is Decode's to report, with its offset
}

// errSyntax stops checkValue at the first token it cannot read.
var errSyntax = errors.New("json syntax")

func checkValue(dec *json.Decoder, t reflect.Type, path string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && reflect.PointerTo(t).Implements(unmarshalerType) {
		t = nil
	}
	tok, err := dec.Token()
	if err != nil {
		return errSyntax
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	switch d {
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for dec.More() {
			if err := checkValue(dec, elem, path+"[]"); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return errSyntax
		}
	case '{':
		var fields map[string]reflect.Type
		if t != nil && t.Kind() == reflect.Struct {
			fields = jsonFields(t)
		}
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return errSyntax
			}
			key, _ := kt.(string)
			name := key
			if path != "" {
				name = path + "." + key
			}
			if seen[key] {
				return &HTTPError{Code: http.StatusBadRequest, Kind: "invalid_field", Field: name, Msg: "field " + name + " appears twice"}
			}
			seen[key] = true
			var ft reflect.Type
			if fields != nil {
				var known bool
				if ft, known = fields[key]; !known {
					return &HTTPError{Code: http.StatusBadRequest, Kind: "unknown_field", Field: name,
						Msg: "unknown field " + name + " (field names are case-sensitive)"}
				}
			}
			if err := checkValue(dec, ft, name); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return errSyntax
		}
	}
	return nil
}

// jsonFields maps the JSON names of t's exported fields to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		m[cmp.Or(name, f.Name)] = f.Type
	}
	return m
}

// hasControl reports whether s contains a control character (newlines
// and tabs included): names and titles are one line of text.
func hasControl(s string) bool { return strings.ContainsFunc(s, unicode.IsControl) }
