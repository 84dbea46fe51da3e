package freshness

import (
	"bytes"
	"encoding/json"
	"strings"
)

// decodeState reads an item's state. Redis's cjson writes an empty table
// as {}, other Lua JSON encoders (the embedded Redis's) as [], and whole
// numbers may come in exponent form, which encoding/json reads into int64
// only through json.Number. The state holds no strings with brackets.
func decodeState(s string) (state, error) {
	s = strings.ReplaceAll(s, "[]", "{}")
	var raw struct {
		P json.Number            `json:"p"`
		D map[string]json.Number `json:"d"`
		N map[string]json.Number `json:"n"`
		L map[string]json.Number `json:"l"`
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return state{}, err
	}
	st := state{D: map[string]int64{}, N: map[string]int64{}, L: map[string]int64{}}
	var err error
	if st.P, err = num(raw.P); err != nil {
		return state{}, err
	}
	for _, m := range []struct {
		src map[string]json.Number
		dst map[string]int64
	}{{raw.D, st.D}, {raw.N, st.N}, {raw.L, st.L}} {
		for k, v := range m.src {
			if m.dst[k], err = num(v); err != nil {
				return state{}, err
			}
		}
	}
	return st, nil
}

// num reads a whole number that may be written as 1.7e+12.
func num(n json.Number) (int64, error) {
	if i, err := n.Int64(); err == nil {
		return i, nil
	}
	f, err := n.Float64()
	return int64(f), err
}
