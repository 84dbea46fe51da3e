package push

import (
	"encoding/json"
	"testing"
)

type apsAlert struct {
	Title string `json:"title,omitempty"`
	Body  string `json:"body,omitempty"`
}

type apsDict struct {
	Alert            *apsAlert `json:"alert,omitempty"`
	ContentAvailable int       `json:"content-available"`
	MutableContent   int       `json:"mutable-content,omitempty"`
}

type apnsBody struct {
	Aps    apsDict `json:"aps"`
	Type   string  `json:"type"`
	Task   string  `json:"task"`
	Feeds  string  `json:"feeds"`
	Event  string  `json:"event,omitempty"`
	PushID string  `json:"push_id,omitempty"`
	Reason string  `json:"reason"`
	Since  string  `json:"since,omitempty"`
	SentAt string  `json:"sent_at"`
}

func TestAPNsPayloadMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		f     fields
		alert *Alert
	}{
		{"plain", fields{typ: "nudge.sync", task: "nudge.sync", feeds: "a,b", reason: "feed", sentAt: "1"}, nil},
		{"all fields", fields{typ: "nudge.sync", task: "t", feeds: "a", event: "e", pushID: "p", reason: "stale", since: "a:1", sentAt: "2"}, nil},
		{"escapes", fields{typ: "nudge.sync", task: "q\"uote\\back\nnl\x01ctl", feeds: "é日本", reason: "feed", sentAt: "3", event: "bad\xffutf8"}, nil},
		{"alert", fields{typ: "nudge.sync", task: "t", feeds: "a", reason: "breaking", sentAt: "4"}, &Alert{Title: "Breaking \"news\"", Body: "line\nbreak"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := apnsPayload(&tt.f, tt.alert)
			if err != nil {
				t.Fatal(err)
			}
			ref := apnsBody{Aps: apsDict{ContentAvailable: 1}, Type: tt.f.typ, Task: tt.f.task, Feeds: tt.f.feeds,
				Event: tt.f.event, PushID: tt.f.pushID, Reason: tt.f.reason, Since: tt.f.since, SentAt: tt.f.sentAt}
			if tt.alert != nil {
				ref.Aps.Alert = &apsAlert{Title: tt.alert.Title, Body: tt.alert.Body}
				ref.Aps.MutableContent = 1
			}
			var gotV, wantV any
			wantB, _ := json.Marshal(&ref)
			if err := json.Unmarshal(got, &gotV); err != nil {
				t.Fatalf("payload is not JSON: %v: %s", err, got)
			}
			json.Unmarshal(wantB, &wantV)
			g, _ := json.Marshal(gotV)
			w, _ := json.Marshal(wantV)
			if string(g) != string(w) {
				t.Fatalf("payload: got %s, want %s", g, w)
			}
		})
	}
}
