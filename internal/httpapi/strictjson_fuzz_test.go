package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// seeds are bodies every decoder's fuzz target starts from: valid ones,
// and the shapes strict decoding must refuse. `go test` runs them as
// ordinary tests; `go test -fuzz FuzzDecodeRegister ./internal/httpapi`
// explores further.
var seeds = []string{
	`{"provider":"fcm","token":"t","platform":"android","feeds":["world"],"background_sync":{"enabled":true,"min_interval":"15m"}}`,
	`{"token":"t2","locale":"de-DE","feeds":[]}`,
	`{"title":"World","url":"https://e.com/w","poll_interval":"5m","id":"world"}`,
	`{"push_id":"fabc.c1","received_at":"2026-01-01T00:00:00Z","outcome":"synced","items":3}`,
	`{"feeds":["world"],"lane":"breaking","alert":{"title":"t","body":"b"}}`,
	`{"id":"news","name":"News","apns":{"topic":"com.e","key_file":"/k.p8","key_id":"ABCDEFGHIJ","team_id":"TEAM123456"},"fcm":{"credentials_file":"/f.json"},"policy":{"ios":{"limit":2,"min_gap":"15m"}},"feeds":["world"]}`,
	`{"policy":{"ios":{"Limit":1}}}`, `{"apns":{"topic":"t","topic":"u"}}`, `{"policy":{"android":{"window":5}}}`,
	`{"source":"background_fetch","cursors":{"world":12,"tech":0}}`, `{"source":"foreground","cursors":{"world":"1"}}`,
	`{"cursors":{"world":-1}}`, `{"cursors":{"world":1.5}}`, `{"cursors":null}`,
	`null`, ` null `, `[]`, `"x"`, `1`, ``, `{}`, `{"Token":"x"}`, `{"TOKEN":"x"}`,
	`{"token":"a","token":"b"}`, `{"background_sync":{"Enabled":true}}`, `{"alert":{"Title":"x"}}`,
	`{"feeds":[{"x":1}]}`, `{"token":"a"} {}`, `{"token":"a"`, `{"items":-1}`, `{"received_at":{"wall":1}}`,
	"{\"title\":\"a\u0000b\"}", `{"token":"\ud800"}`, `{"feeds":null}`, `{"background_sync":null}`,
}

// fuzzDecoder checks the invariants of decodeStrict for one request type:
// it never panics; it fails only with a 400 *HTTPError; and when it
// succeeds the body was one JSON object whose keys, at the top level,
// are all exact tag names of T (so no case-folded or unknown key got in).
func fuzzDecoder[T any](f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	fields := jsonFields(reflect.TypeFor[T]())
	f.Fuzz(func(t *testing.T, b []byte) {
		var dst T
		err := decodeStrict(b, &dst)
		if err != nil {
			he, ok := errors.AsType[*HTTPError](err)
			if !ok || he.Code != http.StatusBadRequest {
				t.Fatalf("decodeStrict(%q) = %v, want a 400 *HTTPError", b, err)
			}
			return
		}
		if !json.Valid(b) || !bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{")) {
			t.Fatalf("decodeStrict(%q) accepted a body that is not one JSON object", b)
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(b, &top); err != nil {
			t.Fatalf("decodeStrict(%q) accepted, but it is not an object: %v", b, err)
		}
		for k := range top {
			if _, ok := fields[k]; !ok {
				for name := range fields {
					if strings.EqualFold(name, k) {
						t.Fatalf("decodeStrict(%q) accepted key %q for field %q", b, k, name)
					}
				}
				t.Fatalf("decodeStrict(%q) accepted unknown key %q", b, k)
			}
		}
	})
}

func FuzzDecodeRegister(f *testing.F) { fuzzDecoder[registerRequest](f) }
func FuzzDecodePatch(f *testing.F)    { fuzzDecoder[patchRequest](f) }
func FuzzDecodeFeed(f *testing.F)     { fuzzDecoder[feedRequest](f) }
func FuzzDecodeReceipt(f *testing.F)  { fuzzDecoder[receiptRequest](f) }
func FuzzDecodeSync(f *testing.F)     { fuzzDecoder[syncRequest](f) }
func FuzzDecodeApp(f *testing.F)      { fuzzDecoder[appRequest](f) }
