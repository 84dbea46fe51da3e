package pushemu

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v4"
	"github.com/nudge-dev/nudge/internal/startstop"
)

const (
	apnsMaxPayload   = 4096
	apnsMaxCollapse  = 64
	jwtMaxAge        = 60 * time.Minute
	jwtMinUpdateStep = 20 * time.Minute
)

var (
	uuidPattern    = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	apnsTokenChars = regexp.MustCompile(`^[0-9a-fA-F]{64,200}$`)
	apnsPushTypes  = map[string]bool{
		"alert": true, "background": true, "location": true, "voip": true, "complication": true,
		"fileprovider": true, "mdm": true, "liveactivity": true, "pushtotalk": true, "widgets": true,
	}
)

// apnsStatus maps an APNs reason to its HTTP status, after Apple's table.
var apnsStatus = map[string]int{
	"BadCollapseId": 400, "BadDeviceToken": 400, "BadExpirationDate": 400, "BadMessageId": 400,
	"BadPriority": 400, "BadTopic": 400, "DeviceTokenNotForTopic": 400, "DuplicateHeaders": 400,
	"IdleTimeout": 400, "InvalidPushType": 400, "MissingDeviceToken": 400, "MissingTopic": 400,
	"PayloadEmpty": 400, "TopicDisallowed": 400,
	"BadCertificate": 403, "BadCertificateEnvironment": 403, "ExpiredProviderToken": 403,
	"Forbidden": 403, "InvalidProviderToken": 403, "MissingProviderToken": 403,
	"UnrelatedKeyIdInToken": 403, "BadEnvironmentKeyIdInToken": 403,
	"BadPath": 404, "MethodNotAllowed": 405, "ExpiredToken": 410, "Unregistered": 410,
	"PayloadTooLarge": 413, "TooManyProviderTokenUpdates": 429, "TooManyRequests": 429,
	"InternalServerError": 500, "ServiceUnavailable": 503, "Shutdown": 503,
}

// apnsServer serves one APNs environment.
type apnsServer struct {
	e   *Emulator
	env string
}

type apnsError struct {
	Reason    string `json:"reason"`
	Timestamp int64  `json:"timestamp,omitempty"`
}

func (s *apnsServer) fail(w http.ResponseWriter, status int, reason string, ts time.Time, retryAfter time.Duration) {
	s.e.rec.reject()
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((retryAfter+time.Second-1)/time.Second)))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	body := apnsError{Reason: reason}
	if !ts.IsZero() {
		body.Timestamp = ts.UnixMilli()
	}
	json.NewEncoder(w).Encode(body)
}

func (s *apnsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e := s.e
	e.inFlight.Add(1)
	defer e.inFlight.Add(-1)
	now := e.now()

	e.auth.mu.Lock()
	ci := e.auth.conn(r.RemoteAddr)
	if ci.goAway < e.auth.goAway {
		ci.goAway = e.auth.goAway
		// net/http's HTTP/2 server answers "Connection: close" with GOAWAY.
		w.Header().Set("Connection", "close")
	}
	e.auth.mu.Unlock()

	apnsID := r.Header.Get("apns-id")
	if apnsID == "" {
		apnsID = newUUID()
	}
	w.Header().Set("apns-id", apnsID)

	if r.Method != http.MethodPost {
		s.fail(w, 405, "MethodNotAllowed", time.Time{}, 0)
		return
	}
	token, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if !ok {
		s.fail(w, 404, "BadPath", time.Time{}, 0)
		return
	}
	if token == "" {
		s.fail(w, 400, "MissingDeviceToken", time.Time{}, 0)
		return
	}

	jwtStr, key, status, reason := s.authenticate(r, now)
	if reason != "" {
		s.fail(w, status, reason, time.Time{}, 0)
		return
	}

	d, reason := s.validate(r, token, apnsID)
	if reason != "" {
		s.fail(w, apnsStatus[reason], reason, time.Time{}, 0)
		return
	}
	d.JWT, d.Key = jwtStr, key

	startstop.Sleep(r.Context(), e.cfg.Latency)
	if f, ok := e.faults.match(APNs, s.env, token); ok {
		startstop.Sleep(r.Context(), f.Latency)
		if f.GoAway {
			w.Header().Set("Connection", "close")
		}
		if f.Reason != "" {
			st := cmp0(f.Status, apnsStatus[f.Reason], 400)
			var ts time.Time
			if st == 410 {
				ts = now
			}
			s.fail(w, st, f.Reason, ts, f.RetryAfter)
			e.rec.faulted(Rejection{Provider: APNs, Environment: s.env, Token: token, At: now, Status: st, Reason: f.Reason, RetryAfter: f.RetryAfter})
			return
		}
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(f.RetryAfter/time.Second)))
		}
	}

	ti, known := e.tokens.get(APNs, token)
	switch {
	case known && ti.unregistered:
		s.fail(w, 410, "Unregistered", ti.unregisteredAt, 0)
		return
	case known && ti.env != "" && ti.env != s.env:
		s.fail(w, 400, "BadDeviceToken", time.Time{}, 0)
		return
	case !known && e.cfg.StrictTokens:
		s.fail(w, 400, "BadDeviceToken", time.Time{}, 0)
		return
	}

	d.At = now
	e.rec.add(d)
	if s.env == Sandbox {
		w.Header().Set("apns-unique-id", newUUID())
	}
	w.WriteHeader(http.StatusOK)
}

func cmp0(vs ...int) int {
	for _, v := range vs {
		if v != 0 {
			return v
		}
	}
	return 0
}

// authenticate checks the TLS client certificate or the provider JWT. It
// returns the JWT used and the fingerprint of the key that signed it, or a
// status and reason to reject with.
func (s *apnsServer) authenticate(r *http.Request, now time.Time) (string, string, int, string) {
	e := s.e
	authz := r.Header.Get("authorization")
	if authz == "" {
		if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
			return "", "", 0, ""
		}
		return "", "", 403, "MissingProviderToken"
	}
	raw, ok := strings.CutPrefix(authz, "bearer ")
	if !ok {
		raw, ok = strings.CutPrefix(authz, "Bearer ")
	}
	if !ok || raw == "" {
		return "", "", 403, "InvalidProviderToken"
	}
	v, reason := e.verifyProviderJWT(raw)
	if reason != "" {
		return "", "", 403, reason
	}
	if now.Sub(time.Unix(v.iat, 0)) > jwtMaxAge {
		return "", "", 403, "ExpiredProviderToken"
	}
	e.auth.mu.Lock()
	ci := e.auth.conn(r.RemoteAddr)
	if ci.jwt != raw {
		if ci.jwt != "" && now.Sub(ci.jwtSince) < jwtMinUpdateStep {
			e.auth.mu.Unlock()
			return "", "", 429, "TooManyProviderTokenUpdates"
		}
		ci.jwt, ci.jwtSince = raw, now
	}
	e.auth.mu.Unlock()
	e.rec.sawJWT(raw)
	return raw, v.key, 0, ""
}

// verifiedJWT is a provider token that verified: its iat and the
// fingerprint of the key that signed it.
type verifiedJWT struct {
	iat int64
	key string
}

// verifyProviderJWT checks an APNs provider token's signature against the
// accepted keys of its key id and team, caching good tokens. It returns
// the token's iat and signing key.
func (e *Emulator) verifyProviderJWT(raw string) (verifiedJWT, string) {
	e.auth.mu.Lock()
	v, ok := e.auth.verified[raw]
	candidates := slices.Clone(e.auth.apnsKeys)
	e.auth.mu.Unlock()
	if ok {
		return v, ""
	}
	for _, k := range candidates {
		var claims jwt.MapClaims
		tok, err := jwt.ParseWithClaims(raw, &claims, func(t *jwt.Token) (any, error) {
			if kid, _ := t.Header["kid"].(string); kid != k.KeyID {
				return nil, jwt.ErrTokenUnverifiable
			}
			return k.pub, nil
		}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithoutClaimsValidation())
		if err != nil || !tok.Valid {
			continue
		}
		if iss, _ := claims["iss"].(string); iss != k.TeamID {
			continue
		}
		f, ok := claims["iat"].(float64)
		if !ok {
			return verifiedJWT{}, "InvalidProviderToken"
		}
		v = verifiedJWT{iat: int64(f), key: k.Fingerprint}
		e.auth.mu.Lock()
		e.auth.verified[raw] = v
		e.auth.mu.Unlock()
		return v, ""
	}
	return verifiedJWT{}, "InvalidProviderToken"
}

// validate checks headers and payload like APNs and builds the delivery.
func (s *apnsServer) validate(r *http.Request, token, apnsID string) (Delivery, string) {
	h := r.Header
	for _, name := range []string{"apns-topic", "apns-push-type", "apns-priority", "apns-collapse-id", "apns-expiration", "apns-id"} {
		if len(h.Values(name)) > 1 {
			return Delivery{}, "DuplicateHeaders"
		}
	}
	if !apnsTokenChars.MatchString(token) || len(token)%2 != 0 {
		return Delivery{}, "BadDeviceToken"
	}
	topic := h.Get("apns-topic")
	certAuth := h.Get("authorization") == ""
	switch {
	case topic == "" && !certAuth:
		return Delivery{}, "MissingTopic"
	case topic == "":
		topic = s.e.cfg.Topic
	case !s.e.topicAllowed(strings.TrimSuffix(topic, ".voip")):
		return Delivery{}, "TopicDisallowed"
	}
	if id := h.Get("apns-id"); id != "" && !uuidPattern.MatchString(id) {
		return Delivery{}, "BadMessageId"
	}
	pushType := h.Get("apns-push-type")
	if pushType == "" {
		pushType = "alert"
	}
	if !apnsPushTypes[pushType] {
		return Delivery{}, "InvalidPushType"
	}
	prio := h.Get("apns-priority")
	if prio == "" {
		prio = "10"
	}
	if prio != "1" && prio != "5" && prio != "10" {
		return Delivery{}, "BadPriority"
	}
	exp := h.Get("apns-expiration")
	if exp != "" {
		if _, err := strconv.ParseInt(exp, 10, 64); err != nil {
			return Delivery{}, "BadExpirationDate"
		}
	}
	collapse := h.Get("apns-collapse-id")
	if len(collapse) > apnsMaxCollapse {
		return Delivery{}, "BadCollapseId"
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil || len(body) == 0 {
		return Delivery{}, "PayloadEmpty"
	}
	if len(body) > apnsMaxPayload {
		return Delivery{}, "PayloadTooLarge"
	}
	var payload map[string]json.RawMessage
	if err := json.Unmarshal(body, &payload); err != nil {
		return Delivery{}, "PayloadEmpty"
	}
	var aps map[string]any
	if raw, ok := payload["aps"]; !ok || json.Unmarshal(raw, &aps) != nil {
		return Delivery{}, "PayloadEmpty"
	}
	if reason := checkBackground(pushType, prio, aps); reason != "" {
		return Delivery{}, reason
	}
	data := make(map[string]string, len(payload))
	for k, v := range payload {
		var sv string
		if k != "aps" && json.Unmarshal(v, &sv) == nil {
			data[k] = sv
		}
	}
	return Delivery{
		Provider:    APNs,
		Environment: s.env,
		Token:       token,
		ID:          apnsID,
		PushType:    pushType,
		Priority:    prio,
		CollapseID:  collapse,
		Expiration:  exp,
		Topic:       topic,
		Data:        data,
		Aps:         aps,
		Alert:       aps["alert"] != nil,
		Body:        body,
	}, ""
}

// checkBackground enforces Apple's rules for background pushes: priority
// 5, content-available 1 and nothing user-visible in aps.
func checkBackground(pushType, prio string, aps map[string]any) string {
	if pushType != "background" {
		return ""
	}
	if prio != "5" {
		return "BadPriority"
	}
	if ca, _ := aps["content-available"].(float64); ca != 1 {
		return "InvalidPushType"
	}
	for _, k := range []string{"alert", "sound", "badge"} {
		if _, ok := aps[k]; ok {
			return "InvalidPushType"
		}
	}
	return ""
}
