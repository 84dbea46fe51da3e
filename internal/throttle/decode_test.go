package throttle

import (
	"reflect"
	"strings"
	"testing"
)

// checkFastDecode decodes b on both paths: when the fast path takes it,
// it must give what encoding/json gives; wantFast says the fast path must
// take it (every payload the scripts write, but for alerts).
func checkFastDecode(t testing.TB, b []byte, wantFast bool) {
	t.Helper()
	fast, ok := decodePushFast(b)
	if !ok {
		if wantFast {
			t.Fatalf("fast decode refused a script's payload %s", b)
		}
		return
	}
	slow, err := decodePushJSON(b)
	if err != nil {
		t.Fatalf("fast decode took %s, encoding/json refused it: %v", b, err)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("payload %s: fast decode %+v, encoding/json %+v", b, fast, slow)
	}
}

func TestDecodePushFastMatchesJSON(t *testing.T) {
	const base = `{"device":"42","events":["e1","e2"],"dropped":3,"feeds":["a","b"],"since":{"a":120,"b":-5},"lane":"breaking","reason":"breaking","queued_at":1700000000123}`
	taken := []string{
		base,
		`{"device":"0","events":["e"],"dropped":0,"feeds":[],"since":{},"lane":"feed","reason":"feed","queued_at":0}`,
		`{"device":"18446744073709551615","events":["é✓"],"dropped":0,"feeds":["f"],"since":{"f":9223372036854775807},"lane":"feed","reason":"stale","queued_at":-9223372036854775808}`,
		`{"device":"7","events":["x"],"dropped":0,"feeds":["f"],"since":{"f":1,"f":2},"lane":"feed","reason":"feed","queued_at":1}`,
	}
	for _, s := range taken {
		checkFastDecode(t, []byte(s), true)
	}
	// Forms the fast path leaves to encoding/json, which decodes some and
	// refuses others; DecodePush must say what encoding/json says.
	refused := []string{
		strings.Replace(base, `"e1"`, `"e\u00e91"`, 1), // escape
		strings.Replace(base, `"e1"`, `"e\"1"`, 1),     // escaped quote
		strings.Replace(base, `"e1"`, "\"e\xff1\"", 1), // invalid UTF-8
		strings.Replace(base, `"e1"`, "\"e\t1\"", 1),   // control character
		strings.Replace(base, `"42"`, `"042"`, 1),      // leading zero
		strings.Replace(base, `"42"`, `"-42"`, 1),      // sign
		strings.Replace(base, `"42"`, `"18446744073709551616"`, 1),
		strings.Replace(base, `:3,`, `:3.0,`, 1), // fraction
		strings.Replace(base, `:3,`, `:3e0,`, 1), // exponent
		strings.Replace(base, `:3,`, `:03,`, 1),  // leading zero
		strings.Replace(base, `:120,`, `:99999999999999999999,`, 1),
		strings.Replace(base, `"feeds":["a","b"]`, `"feeds":null`, 1),
		strings.Replace(base, `"since":{"a":120,"b":-5}`, `"since":null`, 1),
		strings.Replace(base, `,"queued_at"`, `,"alert":{"title":"T","body":"B"},"queued_at"`, 1),
		strings.Replace(base, `,"dropped"`, ` ,"dropped"`, 1), // whitespace
		strings.Replace(base, `"lane"`, `"extra":1,"lane"`, 1),
		base + " ",
		base + "x",
		base[:len(base)-1],
		`{"events":["e"],"device":"1","dropped":0,"feeds":[],"since":{},"lane":"feed","reason":"feed","queued_at":0}`,
		``,
	}
	for _, s := range refused {
		if _, ok := decodePushFast([]byte(s)); ok {
			t.Errorf("fast decode took %q; want it left to encoding/json", s)
		}
		got, gerr := DecodePush([]byte(s))
		want, werr := decodePushJSON([]byte(s))
		if (gerr == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("DecodePush(%q) = %+v, %v; encoding/json gives %+v, %v", s, got, gerr, want, werr)
		}
	}
	noEvents := `{"device":"7","events":[],"dropped":0,"feeds":["f"],"since":{"f":1},"lane":"feed","reason":"feed","queued_at":1}`
	if _, err := DecodePush([]byte(noEvents)); err == nil {
		t.Error("DecodePush of a push without events: got no error")
	}
}

// BenchmarkDecodePush decodes a breaking push job as the scripts write it
// (a closed range: since and until), on the path DecodePush takes and with
// encoding/json alone.
func BenchmarkDecodePush(b *testing.B) {
	payload := []byte(`{"device":"123457","events":["01JEXAMPLE7Q3M9ZP2K4W8XYV"],"dropped":0,"feeds":["headlines"],"since":{"headlines":120,"~headlines":-125},"lane":"breaking","reason":"breaking","queued_at":1765000000123}`)
	for _, c := range []struct {
		name   string
		decode func([]byte) (Push, error)
	}{{"DecodePush", DecodePush}, {"encoding_json", decodePushJSON}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.decode(payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
