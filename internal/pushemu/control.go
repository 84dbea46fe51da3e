package pushemu

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// controlHandler serves the plain HTTP listener: the OAuth2 token endpoint
// and the inspection API.
func (e *Emulator) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", e.serveToken)
	mux.Handle("/admin/", e.AdminHandler())
	mux.HandleFunc("GET /ca.pem", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(e.ca.certPEM)
	})
	return mux
}

// AdminHandler is the inspection API, served under /admin/ on the control
// listener:
//
//	GET    /admin/stats                       counters (Stats)
//	GET    /admin/deliveries?token=T          recorded deliveries to T
//	GET    /admin/wait?count=N&timeout=10s    block until N pushes were accepted
//	GET    /admin/wait?token=T&n=N&timeout=   block until T got N pushes
//	GET    /admin/events                      server-sent events, one per delivery
//	POST   /admin/faults                      add a Fault (JSON body), returns {"id":N}
//	DELETE /admin/faults                      remove all faults
//	DELETE /admin/faults/{id}                 remove one fault
//	POST   /admin/tokens                      {"provider","token","env","unregistered"}
//	POST   /admin/goaway                      GOAWAY every APNs connection
func (e *Emulator) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.Stats())
	})
	mux.HandleFunc("GET /admin/deliveries", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.Deliveries(r.URL.Query().Get("token")))
	})
	mux.HandleFunc("GET /admin/wait", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		timeout, err := time.ParseDuration(cmpStr(q.Get("timeout"), "10s"))
		if err != nil {
			http.Error(w, "timeout: "+err.Error(), http.StatusBadRequest)
			return
		}
		ctx, cancel := contextWithTimeout(r, timeout)
		defer cancel()
		if tok := q.Get("token"); tok != "" {
			n, _ := strconv.Atoi(cmpStr(q.Get("n"), "1"))
			ds, err := e.WaitToken(ctx, tok, n)
			if err != nil {
				http.Error(w, err.Error(), http.StatusGatewayTimeout)
				return
			}
			writeJSON(w, http.StatusOK, ds)
			return
		}
		n, _ := strconv.Atoi(cmpStr(q.Get("count"), "1"))
		if err := e.WaitCount(ctx, n); err != nil {
			http.Error(w, err.Error(), http.StatusGatewayTimeout)
			return
		}
		writeJSON(w, http.StatusOK, e.Stats())
	})
	mux.HandleFunc("GET /admin/events", func(w http.ResponseWriter, r *http.Request) {
		fl, ok := w.(http.Flusher)
		if !ok {
			http.Error(w, "streaming unsupported", http.StatusInternalServerError)
			return
		}
		ch, cancel := e.Subscribe(1024)
		defer cancel()
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		fl.Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case d, ok := <-ch:
				if !ok {
					return
				}
				b, _ := json.Marshal(d)
				fmt.Fprintf(w, "data: %s\n\n", b)
				fl.Flush()
			}
		}
	})
	mux.HandleFunc("POST /admin/faults", func(w http.ResponseWriter, r *http.Request) {
		var f Fault
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
			http.Error(w, "fault: "+err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"id": e.AddFault(f)})
	})
	mux.HandleFunc("DELETE /admin/faults", func(w http.ResponseWriter, r *http.Request) {
		e.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /admin/faults/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil {
			http.Error(w, "id: "+err.Error(), http.StatusBadRequest)
			return
		}
		e.RemoveFault(id)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /admin/tokens", func(w http.ResponseWriter, r *http.Request) {
		var t struct {
			Provider     Provider `json:"provider"`
			Token        string   `json:"token"`
			Env          string   `json:"env"`
			Unregistered bool     `json:"unregistered"`
		}
		if err := json.NewDecoder(r.Body).Decode(&t); err != nil || (t.Provider != FCM && t.Provider != APNs) || t.Token == "" {
			http.Error(w, `want {"provider":"fcm"|"apns","token":"...","env":"","unregistered":false}`, http.StatusBadRequest)
			return
		}
		if t.Unregistered {
			e.Unregister(t.Provider, t.Token, e.now())
		} else {
			e.AddToken(t.Provider, t.Token, t.Env)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /admin/goaway", func(w http.ResponseWriter, r *http.Request) {
		e.GoAway()
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// Credentials are ready-made sender settings for the emulator, written by
// WriteCredentials. Each field maps to one NUDGE_* variable (see Env).
type Credentials struct {
	FCMCredentialsFile string // service-account JSON; token_uri is the fake
	FCMEndpoint        string // https://host:port/v1
	FCMProjectID       string
	APNsKeyFile        string // .p8 auth key
	APNsKeyFingerprint string // the key's, as in Delivery.Key
	APNsKeyID          string
	APNsTeamID         string
	APNsCertFile       string // PEM client certificate + key, for certificate auth
	APNsTopic          string
	APNsHost           string // production listener
	APNsSandboxHost    string // sandbox listener
	CAFile             string // PEM CA that signs every listener
}

// Env renders the credentials as NUDGE_* environment assignments.
func (c Credentials) Env() []string {
	return []string{
		"NUDGE_FCM_CREDENTIALS_FILE=" + c.FCMCredentialsFile,
		"NUDGE_FCM_ENDPOINT=" + c.FCMEndpoint,
		"NUDGE_FCM_PROJECT_ID=" + c.FCMProjectID,
		"NUDGE_APNS_KEY_FILE=" + c.APNsKeyFile,
		"NUDGE_APNS_KEY_ID=" + c.APNsKeyID,
		"NUDGE_APNS_TEAM_ID=" + c.APNsTeamID,
		"NUDGE_APNS_TOPIC=" + c.APNsTopic,
		"NUDGE_APNS_HOST=" + c.APNsHost,
		"NUDGE_APNS_SANDBOX_HOST=" + c.APNsSandboxHost,
		"NUDGE_PUSH_CA_FILE=" + c.CAFile,
	}
}

// WriteCredentials writes the service-account JSON, the .p8 key, the APNs
// client certificate and the CA into dir and returns their paths with the
// endpoints. The emulator must be started.
func (e *Emulator) WriteCredentials(dir string) (Credentials, error) {
	if e.ControlURL() == "" {
		return Credentials{}, ErrNotStarted
	}
	sa, err := e.serviceAccountJSON(e.cfg.ProjectID, e.keys.saKeyID, e.keys.saKeyPEM)
	if err != nil {
		return Credentials{}, err
	}
	c := Credentials{
		FCMCredentialsFile: filepath.Join(dir, "fcm-service-account.json"),
		FCMEndpoint:        e.FCMEndpoint(),
		FCMProjectID:       e.cfg.ProjectID,
		APNsKeyFile:        filepath.Join(dir, "AuthKey_"+e.cfg.KeyID+".p8"),
		APNsKeyFingerprint: e.defaultKeyFingerprint(),
		APNsKeyID:          e.cfg.KeyID,
		APNsTeamID:         e.cfg.TeamID,
		APNsCertFile:       filepath.Join(dir, "apns-client.pem"),
		APNsTopic:          e.cfg.Topic,
		APNsHost:           e.APNsHost(),
		APNsSandboxHost:    e.APNsSandboxHost(),
		CAFile:             filepath.Join(dir, "pushemu-ca.pem"),
	}
	files := map[string][]byte{
		c.FCMCredentialsFile: sa,
		c.APNsKeyFile:        e.keys.apnsKeyPEM,
		c.APNsCertFile:       e.clientCert,
		c.CAFile:             e.ca.certPEM,
	}
	for path, b := range files {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return Credentials{}, fmt.Errorf("write %s: %w", path, err)
		}
	}
	return c, nil
}
