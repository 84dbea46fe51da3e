package pushemu

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Several apps on one emulator: besides the credentials of its Config, the
// emulator accepts more APNs keys and topics and more FCM service accounts
// and projects, so one emulator serves the apps of a multi-app sender,
// each with its own credentials. An APNs key can be revoked, as a rotated
// key is at Apple: JWTs it signed are then rejected with
// InvalidProviderToken.

// APNsKey is an APNs auth key the emulator accepts.
type APNsKey struct {
	KeyID       string
	TeamID      string
	Fingerprint string // recorded in Delivery.Key for pushes it signed
	PEM         []byte // the .p8 file's contents
	pub         *ecdsa.PublicKey
}

func newAPNsKey(keyID, teamID string, key *ecdsa.PrivateKey, pemBytes []byte) APNsKey {
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	sum := sha256.Sum256(der)
	return APNsKey{KeyID: keyID, TeamID: teamID, Fingerprint: hex.EncodeToString(sum[:8]), PEM: pemBytes, pub: &key.PublicKey}
}

// NewAPNsKey generates an APNs auth key for keyID and teamID and accepts
// JWTs it signs, beside every key accepted so far (also one of the same
// key id).
func (e *Emulator) NewAPNsKey(keyID, teamID string) (APNsKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return APNsKey{}, fmt.Errorf("generate apns key: %w", err)
	}
	p, err := pkcs8PEM(key)
	if err != nil {
		return APNsKey{}, err
	}
	k := newAPNsKey(keyID, teamID, key, p)
	e.auth.mu.Lock()
	e.auth.apnsKeys = append(e.auth.apnsKeys, k)
	e.auth.mu.Unlock()
	return k, nil
}

// RevokeAPNsKey stops accepting the key with fingerprint: JWTs it signed,
// also ones verified before, are answered 403 InvalidProviderToken.
func (e *Emulator) RevokeAPNsKey(fingerprint string) {
	e.auth.mu.Lock()
	defer e.auth.mu.Unlock()
	e.auth.apnsKeys = slices.DeleteFunc(e.auth.apnsKeys, func(k APNsKey) bool { return k.Fingerprint == fingerprint })
	for raw, v := range e.auth.verified {
		if v.key == fingerprint {
			delete(e.auth.verified, raw)
		}
	}
}

func (e *Emulator) defaultKeyFingerprint() string {
	e.auth.mu.Lock()
	defer e.auth.mu.Unlock()
	return e.auth.apnsKeys[0].Fingerprint
}

// AddTopic accepts topic (and its ".voip" variant) as apns-topic.
func (e *Emulator) AddTopic(topic string) {
	e.auth.mu.Lock()
	e.auth.topics[topic] = true
	e.auth.mu.Unlock()
}

func (e *Emulator) topicAllowed(topic string) bool {
	e.auth.mu.Lock()
	defer e.auth.mu.Unlock()
	return e.auth.topics[topic]
}

// AddProject serves the Firebase project besides Config.ProjectID.
func (e *Emulator) AddProject(project string) {
	e.auth.mu.Lock()
	e.auth.projects[project] = true
	e.auth.mu.Unlock()
}

func (e *Emulator) projectAllowed(project string) bool {
	e.auth.mu.Lock()
	defer e.auth.mu.Unlock()
	return e.auth.projects[project]
}

// serviceAccountJSON renders a service-account file whose token_uri is
// the emulator's.
func (e *Emulator) serviceAccountJSON(project, keyID string, keyPEM []byte) ([]byte, error) {
	sa, err := json.MarshalIndent(map[string]string{
		"type":                        "service_account",
		"project_id":                  project,
		"private_key_id":              keyID,
		"private_key":                 string(keyPEM),
		"client_email":                "nudge-sender@" + project + ".iam.gserviceaccount.com",
		"client_id":                   "100000000000000000001",
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   e.TokenURI(),
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
		"universe_domain":             "googleapis.com",
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode service account: %w", err)
	}
	return sa, nil
}

// WriteAppCredentials writes credentials of their own for app into dir: a
// new APNs key (a new key id, the emulator's team), the topic
// "<Config.Topic>.<app>", a new service account of project
// "<Config.ProjectID>-<app>", and the CA. The emulator accepts them all
// from now on. The emulator must be started.
func (e *Emulator) WriteAppCredentials(dir, app string) (Credentials, error) {
	if e.ControlURL() == "" {
		return Credentials{}, ErrNotStarted
	}
	key, err := e.NewAPNsKey(strings.ToUpper(randomHex(5)), e.cfg.TeamID)
	if err != nil {
		return Credentials{}, err
	}
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return Credentials{}, fmt.Errorf("generate service account key: %w", err)
	}
	saPEM, err := pkcs8PEM(sa)
	if err != nil {
		return Credentials{}, err
	}
	project, topic := e.cfg.ProjectID+"-"+app, e.cfg.Topic+"."+app
	saJSON, err := e.serviceAccountJSON(project, randomHex(20), saPEM)
	if err != nil {
		return Credentials{}, err
	}
	e.auth.mu.Lock()
	e.auth.saKeys = append(e.auth.saKeys, &sa.PublicKey)
	e.auth.mu.Unlock()
	e.AddTopic(topic)
	e.AddProject(project)
	c := Credentials{
		FCMCredentialsFile: filepath.Join(dir, app+"-fcm-service-account.json"),
		FCMEndpoint:        e.FCMEndpoint(),
		FCMProjectID:       project,
		APNsKeyFile:        filepath.Join(dir, app+"-AuthKey_"+key.KeyID+".p8"),
		APNsKeyFingerprint: key.Fingerprint,
		APNsKeyID:          key.KeyID,
		APNsTeamID:         key.TeamID,
		APNsCertFile:       filepath.Join(dir, app+"-apns-client.pem"),
		APNsTopic:          topic,
		APNsHost:           e.APNsHost(),
		APNsSandboxHost:    e.APNsSandboxHost(),
		CAFile:             filepath.Join(dir, "pushemu-ca.pem"),
	}
	for path, b := range map[string][]byte{c.FCMCredentialsFile: saJSON, c.APNsKeyFile: key.PEM, c.APNsCertFile: e.clientCert, c.CAFile: e.ca.certPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return Credentials{}, fmt.Errorf("write %s: %w", path, err)
		}
	}
	return c, nil
}
