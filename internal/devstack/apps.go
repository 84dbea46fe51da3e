package devstack

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/service"
)

// DevApp is one app of the devstack: its id and name in the apps file, the
// emulator identity its pushes go out with, the feeds it offers and its
// share of the simulated phones.
type DevApp struct {
	ID, Name string
	// Topic is the APNs bundle id; ProjectID the Firebase project; KeyID
	// the APNs auth key's id. Each app has its own emulator with these.
	Topic, ProjectID, KeyID string
	// Feeds are the news room feeds the app offers; nil: all.
	Feeds []string
	// Share is the app's fraction of the fleet.
	Share float64
}

// DevApps are the devstack's two apps: a news app with every feed of the
// news room, and a sports app with a subset, each with its own emulator
// credentials (distinct APNs topic and key, distinct FCM project).
var DevApps = []DevApp{
	{ID: "news", Name: "Daily News", Topic: "dev.nudge.news", ProjectID: "nudge-news-emu", KeyID: "NEWSKEY001", Share: 0.7},
	{ID: "sports", Name: "Sports", Topic: "dev.nudge.sports", ProjectID: "nudge-sports-emu", KeyID: "SPORTKEY01",
		Feeds: []string{"headlines", "popular"}, Share: 0.3},
}

// appEmulator is one app's running emulator and the credentials it wrote.
type appEmulator struct {
	app   DevApp
	emu   *pushemu.Emulator
	creds pushemu.Credentials
}

// startEmulators starts one emulator per app, the first on the control
// address of the settings (NUDGE_DEVSTACK_PUSHEMU_ADDR), the others on
// free ports, and writes each app's credentials into its own directory.
func (s *Stack) startEmulators(ctx context.Context) error {
	for i, app := range DevApps {
		addr := "127.0.0.1:0"
		if i == 0 {
			addr = s.cfg.EmulatorAddr
		}
		emu, err := pushemu.New(service.Archetype{}, pushemu.Config{ControlAddr: addr, Seed: s.cfg.Seed + uint64(i),
			ProjectID: app.ProjectID, Topic: app.Topic, KeyID: app.KeyID})
		if err != nil {
			return fmt.Errorf("devstack: build the %s app's push emulators: %w", app.ID, err)
		}
		if err := emu.Start(ctx); err != nil {
			return inUse(fmt.Errorf("devstack: start the %s app's push emulators (NUDGE_DEVSTACK_PUSHEMU_ADDR): %w", app.ID, err),
				"push emulators' control API", addr, "NUDGE_DEVSTACK_PUSHEMU_ADDR (-pushemu-addr)")
		}
		s.emus = append(s.emus, &appEmulator{app: app, emu: emu})
		dir := filepath.Join(s.dir, app.ID)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("devstack: create %s: %w", dir, err)
		}
		if s.emus[i].creds, err = emu.WriteCredentials(dir); err != nil {
			return fmt.Errorf("devstack: write the %s app's emulator credentials: %w", app.ID, err)
		}
	}
	return nil
}

// writeCABundle writes the CAs of every app's emulator into one file, for
// NUDGE_PUSH_CA_FILE.
func (s *Stack) writeCABundle() (string, error) {
	var bundle bytes.Buffer
	for _, e := range s.emus {
		b, err := os.ReadFile(e.creds.CAFile)
		if err != nil {
			return "", fmt.Errorf("devstack: read emulator CA: %w", err)
		}
		bundle.Write(b)
	}
	path := filepath.Join(s.dir, "push-ca.pem")
	if err := os.WriteFile(path, bundle.Bytes(), 0o600); err != nil {
		return "", fmt.Errorf("devstack: write CA bundle: %w", err)
	}
	return path, nil
}

// writeAppsFile writes the apps file (NUDGE_APPS_FILE, the apps.Parse
// format): each app with its emulator's APNs key and hosts and FCM
// service account and endpoint. It parses what it wrote, so a file the
// api would refuse fails here first.
func (s *Stack) writeAppsFile() (string, error) {
	var f apps.File
	for _, e := range s.emus {
		c := e.creds
		f.Apps = append(f.Apps, apps.App{
			ID: e.app.ID, Name: e.app.Name, Feeds: e.app.Feeds,
			APNs: &apps.APNs{Topic: c.APNsTopic, KeyFile: c.APNsKeyFile, KeyID: c.APNsKeyID, TeamID: c.APNsTeamID,
				Host: c.APNsHost, SandboxHost: c.APNsSandboxHost},
			FCM: &apps.FCM{CredentialsFile: c.FCMCredentialsFile, ProjectID: c.FCMProjectID, Endpoint: c.FCMEndpoint},
		})
	}
	b, err := yaml.Marshal(f)
	if err != nil {
		return "", fmt.Errorf("devstack: encode apps file: %w", err)
	}
	path := filepath.Join(s.dir, "apps.yaml")
	if _, err := apps.Parse(bytes.NewReader(b), path); err != nil {
		return "", fmt.Errorf("devstack: the apps file it wrote does not parse: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", fmt.Errorf("devstack: write apps file: %w", err)
	}
	return path, nil
}

// servedApps are the devstack's apps that the api serves (GET /v1/apps),
// as the fleet's apps. An api that serves none of them (one that reads no
// apps file: every device is the default app's) gives nil, and the fleet
// registers without an app.
func (s *Stack) servedApps(ctx context.Context, editorKey string) ([]FleetApp, error) {
	var out struct {
		Apps []struct {
			ID string `json:"id"`
		} `json:"apps"`
	}
	if _, err := newClient(s.apiURL, 1).do(ctx, http.MethodGet, "/v1/apps", editorKey, nil, &out); err != nil {
		return nil, fmt.Errorf("devstack: list the api's apps: %w", err)
	}
	var list []FleetApp
	for _, app := range DevApps {
		if slices.ContainsFunc(out.Apps, func(a struct {
			ID string `json:"id"`
		}) bool {
			return a.ID == app.ID
		}) {
			list = append(list, FleetApp{ID: app.ID, Feeds: app.Feeds, Share: app.Share})
		}
	}
	return list, nil
}

// mergedSource streams the deliveries of several emulators as one.
type mergedSource []DeliverySource

// Subscribe implements DeliverySource: a forwarder per source into one
// channel, closed once every source's channel is; cancel unsubscribes
// from all.
func (m mergedSource) Subscribe(buf int) (<-chan pushemu.Delivery, func()) {
	out := make(chan pushemu.Delivery, buf)
	done := make(chan struct{})
	var wg sync.WaitGroup
	cancels := make([]func(), 0, len(m))
	for _, src := range m {
		ch, cancel := src.Subscribe(buf)
		cancels = append(cancels, cancel)
		wg.Go(func() {
			for d := range ch {
				select {
				case out <- d:
				case <-done:
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(out) }()
	var once sync.Once
	return out, func() {
		once.Do(func() {
			close(done)
			for _, c := range cancels {
				c()
			}
		})
	}
}
