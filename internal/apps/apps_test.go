package apps_test

import (
	"strings"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/apps"
)

const twoApps = `
apps:
  - id: news
    name: Daily News
    apns: {topic: com.example.news, key_file: /run/secrets/news.p8, key_id: ABCDEFGHIJ, team_id: TEAM123456}
    fcm: {credentials_file: /run/secrets/news-fcm.json, project_id: news-prod}
    policy: {ios: {limit: 2, min_gap: 15m}}
    feeds: [headlines, recent]
  - id: sports
    name: Sports
    fcm: {credentials_file: /run/secrets/sports-fcm.json}
`

func TestParseReadsEveryField(t *testing.T) {
	got, err := apps.Parse(strings.NewReader(twoApps), "apps.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "news" || got[1].ID != "sports" {
		t.Fatalf("apps = %+v", got)
	}
	n := got[0]
	if n.APNs.Topic != "com.example.news" || n.APNs.KeyID != "ABCDEFGHIJ" || n.FCM.ProjectID != "news-prod" {
		t.Errorf("providers = %+v %+v", n.APNs, n.FCM)
	}
	if n.Policy.IOS.Limit != 2 || time.Duration(n.Policy.IOS.MinGap) != 15*time.Minute || n.Policy.Android != (apps.Limits{}) {
		t.Errorf("policy = %+v", n.Policy)
	}
	if !n.Offers("recent") || n.Offers("popular") || !got[1].Offers("popular") {
		t.Errorf("Offers wrong for %v / all feeds", n.Feeds)
	}
}

func TestParseRejectsWithTheAppAndField(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"empty", ``, "is empty"},
		{"no apps", `apps: []`, "lists no apps"},
		{"unknown field", "apps:\n  - id: a\n    name: A\n    colour: red\n", "colour"},
		{"bad id", "apps:\n  - id: Bad_Id\n    name: A\n    fcm: {credentials_file: f}\n", `app "Bad_Id": id`},
		{"no provider", "apps:\n  - id: a\n    name: A\n", "set at least one provider"},
		{"key and cert", "apps:\n  - id: a\n    name: A\n    apns: {topic: t, key_file: k, key_id: ABCDEFGHIJ, team_id: TEAM123456, cert_file: c}\n", "either key_file"},
		{"short key id", "apps:\n  - id: a\n    name: A\n    apns: {topic: t, key_file: k, key_id: ABC, team_id: TEAM123456}\n", "10 characters"},
		{"no topic", "apps:\n  - id: a\n    name: A\n    apns: {cert_file: c}\n", "apns.topic"},
		{"duplicate", "apps:\n  - {id: a, name: A, fcm: {credentials_file: f}}\n  - {id: a, name: B, fcm: {credentials_file: f}}\n", "defined twice"},
		{"bad duration", "apps:\n  - id: a\n    name: A\n    fcm: {credentials_file: f}\n    policy: {ios: {window: soon}}\n", "want a duration"},
		{"negative", "apps:\n  - id: a\n    name: A\n    fcm: {credentials_file: f}\n    policy: {android: {limit: -1}}\n", "policy.android"},
		{"feed twice", "apps:\n  - id: a\n    name: A\n    fcm: {credentials_file: f}\n    feeds: [x, x]\n", "listed twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := apps.Parse(strings.NewReader(c.yaml), "apps.yaml")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestSingleIsTheDefaultApp(t *testing.T) {
	a := apps.Single(&apps.APNs{Topic: "com.example", CertFile: "c.p12"}, nil)
	if a.ID != apps.Default || a.Validate() != nil || !a.Offers("anything") {
		t.Fatalf("Single = %+v, Validate = %v", a, a.Validate())
	}
}

func TestSetKeepsAppsByIDInOrder(t *testing.T) {
	b := apps.App{ID: "b", Name: "B", FCM: &apps.FCM{CredentialsFile: "f"}}
	a := apps.App{ID: "a", Name: "A", FCM: &apps.FCM{CredentialsFile: "f"}}
	s := apps.MustSet(b, a)
	if got := s.String(); got != "a,b" || s.Len() != 2 || s.All()[0].ID != "a" {
		t.Fatalf("set = %s (%d)", got, s.Len())
	}
	if got, ok := s.Get("b"); !ok || got.Name != "B" {
		t.Fatalf("Get(b) = %+v, %v", got, ok)
	}
	if _, ok := s.Get("c"); ok {
		t.Fatal("Get(c) found an app that is not there")
	}
	if _, err := apps.NewSet(a, a); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("duplicate: err = %v", err)
	}
	if _, err := apps.NewSet(apps.App{ID: "x"}); err == nil {
		t.Fatal("an invalid app made a set")
	}
}
