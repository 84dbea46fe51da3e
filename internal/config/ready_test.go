package config_test

import (
	"bytes"
	"testing"

	"github.com/nudge-dev/nudge/internal/config"
)

func TestReadyWriterReportsTheFirstReadyAddress(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	w := config.NewReadyWriter(&out, config.ReadyAPI)
	for _, chunk := range []string{
		`{"msg":"starting"}` + "\n" + `{"msg":"api lis`,
		`tening","addr":"127.0.0.1:4321"}` + "\n",
		`{"msg":"api listening","addr":"127.0.0.1:9999"}` + "\n" + `{"msg":"tail"`,
	} {
		if _, err := w.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case addr := <-w.Ready():
		if addr != "127.0.0.1:4321" {
			t.Fatalf("address: got %q, want 127.0.0.1:4321", addr)
		}
	default:
		t.Fatal("no address reported")
	}
	select {
	case addr := <-w.Ready():
		t.Fatalf("a second address was reported: %q", addr)
	default:
	}
	if want := `{"msg":"starting"}` + "\n" + `{"msg":"api listening","addr":"127.0.0.1:4321"}` + "\n" + `{"msg":"api listening","addr":"127.0.0.1:9999"}` + "\n"; out.String() != want {
		t.Fatalf("passed through:\n%s\nwant whole lines only:\n%s", out.String(), want)
	}
}
